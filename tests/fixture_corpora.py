"""Miniature copies of the corpora's distributed layouts, for preparation tests.

Each builder writes files exactly as the real release names and encodes them
(folder nesting, file names, table headers, tabs, encodings, audio formats)
and returns what the manifests should hold, so tests can check row by row.
"""

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from speechbrain_mowe.dataio import save_audio

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(relative_path: str):
    """Imports a recipe script (e.g. ``LibriSpeech/librispeech_prepare.py``)."""
    path = RECIPES / relative_path
    name = path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def tone(seconds: float, sample_rate: int, freq: float = 440.0, channels: int = 1) -> torch.Tensor:
    """A quiet sine (``[s]``, or ``[channels, s]`` with one frequency per channel)."""
    t = torch.arange(round(seconds * sample_rate)) / sample_rate
    waves = [0.3 * torch.sin(2 * torch.pi * freq * (c + 1) * t) for c in range(channels)]
    return waves[0] if channels == 1 else torch.stack(waves)


LIBRISPEECH = {
    "train-clean-100": {
        "103-1240-0000": (1.0, "CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED"),
        "103-1240-0001": (1.5, "THAT HAD ITS SOURCE AWAY BACK IN THE WOODS"),
        "19-198-0000": (0.5, "NORTHANGER ABBEY"),
    },
    "dev-clean": {"2277-149896-0000": (1.25, "HE WAS IN A FEVERED STATE OF MIND")},
    "test-clean": {"1089-134686-0000": (2.0, "HE HOPED THERE WOULD BE STEW FOR DINNER")},
}


def make_librispeech(root: Path, corpus=LIBRISPEECH) -> Path:
    """``LibriSpeech/<split>/<spk>/<chapter>/<id>.flac`` + ``<spk>-<chapter>.trans.txt``."""
    root = Path(root) / "LibriSpeech"
    for split, utterances in corpus.items():
        chapters = {}
        for utt_id, (seconds, text) in utterances.items():
            spk, chapter, _ = utt_id.split("-")
            folder = root / split / spk / chapter
            folder.mkdir(parents=True, exist_ok=True)
            save_audio(folder / f"{utt_id}.flac", tone(seconds, 16000), 16000)
            chapters.setdefault(folder / f"{spk}-{chapter}.trans.txt", []).append(
                f"{utt_id} {text}"
            )
        for path, lines in chapters.items():
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


CV_HEADER = [
    "client_id", "path", "sentence", "up_votes", "down_votes",
    "age", "gender", "accent", "locale", "segment",
]  # fmt: skip


def make_common_voice(root: Path, language: str, clips) -> Path:
    """``<root>/<language>/validated.tsv`` and mp3 ``clips/``.

    ``clips`` maps clip names to ``(seconds or None, sentence)``; None writes
    no audio file (a clip lost from the download).
    """
    folder = Path(root) / language
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(CV_HEADER)]
    for i, (clip, (seconds, sentence)) in enumerate(clips.items()):
        if seconds is not None:
            save_audio(
                folder / "clips" / clip, tone(seconds, 48000, 200 + 20 * i), 48000, format="MP3"
            )
        client = f"{i:04d}" + "ab" * 30
        lines.append("\t".join([client, clip, sentence, "2", "0", "", "", "", language, ""]))
    (folder / "validated.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_covost_table(folder: Path, source: str, target: str, rows) -> Path:
    """``covost_v2.<src>_<tgt>.tsv`` with columns path, translation, split.

    ``rows`` are ``(path, translation, split)``, written raw: quotes stay
    literal (the release is read with quoting off).
    """
    path = Path(folder) / f"covost_v2.{source}_{target}.tsv"
    lines = ["path\ttranslation\tsplit"] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


EMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def make_iemocap(root: Path, sessions=(1, 2)):
    """``IEMOCAP/Session<k>/{sentences/wav,dialog/EmoEvaluation}`` for ``sessions``.

    Returns the folder and ``{turn: (session, code, seconds)}`` of every turn.
    """
    root = Path(root) / "IEMOCAP_full_release"
    codes = ["neu", "hap", "exc", "ang", "sad", "fru", "xxx", "neu"]
    turns = {}
    for k in sessions:
        for d, dialog in enumerate([f"Ses0{k}F_impro01", f"Ses0{k}M_script01_1"]):
            wav_dir = root / f"Session{k}" / "sentences" / "wav" / dialog
            emo_dir = root / f"Session{k}" / "dialog" / "EmoEvaluation"
            wav_dir.mkdir(parents=True, exist_ok=True)
            (emo_dir / "Categorical").mkdir(parents=True, exist_ok=True)
            blocks = []
            for i, code in enumerate(codes):
                gender = "FM"[i % 2]
                turn = f"{dialog}_{gender}{i:03d}"
                seconds = 0.5 + 0.25 * ((i + d + k) % 4)
                save_audio(wav_dir / f"{turn}.wav", tone(seconds, 16000, 150 + 30 * i), 16000)
                start = 5.0 * i + 1.2345
                blocks.append(
                    f"[{start:.4f} - {start + seconds:.4f}]\t{turn}\t{code}\t"
                    "[2.5000, 3.0000, 3.5000]\n"
                    "C-E1:\tNeutral;\t()\nC-E2:\tNeutral;\t()\n"
                    "A-E3:\tval 3; act 2; dom  2;\t()\n\n"
                )
                turns[turn] = (k, code, seconds)
            (emo_dir / f"{dialog}.txt").write_text(EMO_HEADER + "".join(blocks), encoding="utf-8")
            (emo_dir / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
            (emo_dir / "Categorical" / f"{dialog}_e1_cat.txt").write_text(
                f"{dialog}_F000 :Neutral state; ()\n", encoding="utf-8"
            )
    return root, turns


CLOTHO = {
    "development": {
        "Bird song in the park.wav": (2.0, 1, [
            "Birds chirp while people walk by.",
            "A bird sings, and children shout in the distance.",
            'Several birds are singing "loudly" in a park.',
            "Birds tweet in the morning air.",
            "Small birds call to each other outdoors.",
        ]),
        "Café ambience, évening.wav": (1.5, 2, [
            "People talk and dishes clatter in a café.",
            "A busy restaurant with chatter.",
            "",
            "Cups clink as customers converse.",
            "Murmuring voices fill a coffee shop.",
        ]),
    },
    "validation": {
        "rain on roof 02.wav": (1.0, 1, [
            "Rain falls steadily on a roof.",
            "Heavy rain patters on metal.",
            "Water drops hit a hard surface.",
            "A downpour drums on the roof.",
            "Rain is falling outside.",
        ]),
    },
    "evaluation": {
        "Überlandbus stop.wav": (1.25, 2, [
            "A bus stops and its doors open.",
            "An engine idles as a bus waits.",
            "A large vehicle brakes and hisses.",
            "Doors open with a hiss at a bus stop.",
            "A bus pulls in and stops.",
        ]),
    },
}  # fmt: skip


def make_clotho(root: Path, corpus=CLOTHO) -> Path:
    """Caption CSVs in ISO-8859-1 and 44.1 kHz wavs (mono or stereo) per split."""
    root = Path(root) / "clotho"
    for split, clips in corpus.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i, (name, (seconds, channels, captions)) in enumerate(clips.items()):
            save_audio(root / split / name, tone(seconds, 44100, 300 + 50 * i, channels), 44100)
            rows.append([name, *captions])
        with open(
            root / f"clotho_captions_{split}.csv", "w", encoding="iso-8859-1", newline=""
        ) as f:
            writer = csv.writer(f)
            writer.writerow(["file_name"] + [f"caption_{k}" for k in range(1, 6)])
            writer.writerows(rows)
    return root


def corrupt(path: Path, kind: str) -> Path:
    """Damages an audio file: ``garbage`` bytes, ``zero`` bytes or ``no_samples``."""
    path = Path(path)
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "no_samples":
        save_audio(path, torch.zeros(0), 16000)
    else:
        raise ValueError(kind)
    return path


def read_rows(path: Path):
    """A manifest's rows as written (``$data_root`` unexpanded), as dicts."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_report(path: Path):
    """A preparation report's rows as ``(split, id, path, reason)`` tuples."""
    with open(path, encoding="utf-8", newline="") as f:
        return [tuple(row.values()) for row in csv.DictReader(f, delimiter="\t")]


def assert_second_run_does_no_work(prepare, save_folder: Path, monkeypatch):
    """Calls ``prepare()`` again and checks it reads no audio and writes nothing."""
    from speechbrain_mowe.dataio import preparation

    files = sorted(p for p in Path(save_folder).rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}

    def no_audio(*args, **kwargs):
        raise AssertionError("the second preparation read audio")

    monkeypatch.setattr(preparation, "audio_info", no_audio)
    counts = prepare()
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    assert after == before
    assert sorted(p for p in Path(save_folder).rglob("*") if p.is_file()) == files
    return counts
