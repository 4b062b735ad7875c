"""The encoder probe: a planted signal is found where it is and only there,
features do not depend on the batch, bad input is refused in one line, and the
command writes its table and JSON."""

import json
import subprocess
import sys

import pytest
import torch

from speechbrain_mowe.dataio import manifest_row, save_audio, write_manifest
from speechbrain_mowe.lobes import (
    LanguageModel,
    MoWEEncoder,
    SequenceCNNProjector,
    TinyConvEncoder,
    save_encoder,
)
from speechbrain_mowe.lobes.encoders import AudioEncoder
from speechbrain_mowe.model import MoWEAudioLLM
from speechbrain_mowe.probe import WhatTheLLMReads, encode, main, probe_encoders, read_clips
from speechbrain_mowe.tiny import make_tiny_llm

SIZES = {"train": 40, "valid": 20, "test": 20}


class Silent(AudioEncoder):
    """Frames that hold nothing: the same zeros for every clip."""

    output_dim = 4
    frame_rate = 50.0

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(1))

    def encode(self, wavs, num_samples):
        frames = num_samples // 320
        return self.scale * torch.zeros(wavs.shape[0], int(frames.max()), 4), frames


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Tones of random pitch and length; ``loudness`` is planted in the audio
    (loud or quiet), ``coin`` is a label the audio knows nothing of."""
    folder = tmp_path_factory.mktemp("probe")
    gen = torch.Generator().manual_seed(0)
    for split, size in SIZES.items():
        rows = {"loudness": [], "coin": []}
        for index in range(size):
            loud = index % 2 == 0
            seconds = 0.3 + 0.4 * torch.rand(1, generator=gen).item()
            t = torch.arange(int(seconds * 16000)) / 16000
            pitch = 200 + 600 * torch.rand(1, generator=gen).item()
            wav = (0.5 if loud else 0.02) * torch.sin(2 * torch.pi * pitch * t)
            path = folder / f"{split}_{index}.wav"
            save_audio(path, wav, 16000)
            coin = "heads" if torch.rand(1, generator=gen).item() < 0.5 else "tails"
            for task, label in (("loudness", "loud" if loud else "quiet"), ("coin", coin)):
                rows[task].append(
                    manifest_row(
                        f"{task}_{split}_{index}", path, folder, seconds, "er", "Which?", label
                    )
                )
        for task, task_rows in rows.items():
            write_manifest(folder / f"{task}_{split}.csv", task_rows)
    return folder


def _tasks(corpus):
    return {
        task: {split: read_clips(corpus / f"{task}_{split}.csv", corpus) for split in SIZES}
        for task in ("loudness", "coin")
    }


def test_a_planted_signal_is_found_and_nothing_else(corpus):
    torch.manual_seed(0)
    encoders = {"conv": TinyConvEncoder(), "silent": Silent()}
    results = probe_encoders(encoders, _tasks(corpus), base="silent", steps=50)
    loudness, coin = results["tasks"]["loudness"], results["tasks"]["coin"]
    assert loudness["chance"] == 50.0 and loudness["examples"] == SIZES
    assert loudness["probes"]["conv"]["test"] >= 95.0  # in the audio: found
    assert loudness["probes"]["silent+conv"]["test"] >= 95.0  # what conv adds to the base
    assert loudness["probes"]["silent"]["test"] == 50.0  # no signal: the majority guess
    assert all(p["test"] <= 70.0 for p in coin["probes"].values())  # in no encoder


def test_a_batch_gives_each_clip_the_features_it_gets_alone(corpus):
    clips = read_clips(corpus / "loudness_valid.csv", corpus)
    torch.manual_seed(0)
    encoder = TinyConvEncoder()
    batched, alone = encode(encoder, clips, batch_size=8), encode(encoder, clips, batch_size=1)
    assert batched.shape == (20, 2 * encoder.output_dim)
    assert torch.allclose(batched, alone, atol=1e-5)


def test_what_a_model_s_llm_reads_is_probed_per_task_and_never_cached(corpus, tmp_path):
    torch.manual_seed(0)
    llm = LanguageModel(make_tiny_llm(tmp_path / "llm"))
    model = MoWEAudioLLM(
        MoWEEncoder(TinyConvEncoder(), []),
        SequenceCNNProjector(64, llm.embedding_dim, 4),
        llm,
        tasks=["loudness", "coin"],
    ).eval()
    asked = []

    def reads(task):
        asked.append(task)
        return WhatTheLLMReads(model, task)

    cache = tmp_path / "cache"
    results = probe_encoders(
        {}, _tasks(corpus), cache_folder=cache, steps=50, task_encoders={"model": reads}
    )
    assert asked == ["loudness", "coin"] and results["encoders"] == ["model"]
    assert results["tasks"]["loudness"]["probes"]["model"]["test"] >= 95.0
    assert results["tasks"]["coin"]["probes"]["model"]["test"] <= 70.0
    assert not cache.exists()  # a model's features depend on the task: never cached
    clips = read_clips(corpus / "loudness_valid.csv", corpus)
    batched, alone = (encode(reads("loudness"), clips, batch_size=b) for b in (8, 1))
    assert batched.shape == (20, 2 * llm.embedding_dim)
    assert torch.allclose(batched, alone, atol=1e-5)


def test_the_feature_cache_gives_the_same_features(corpus, tmp_path):
    clips = read_clips(corpus / "coin_test.csv", corpus)
    encoder = TinyConvEncoder()
    direct = encode(encoder, clips, batch_size=4)
    for _ in range(2):  # fills the cache, then reads it
        assert torch.allclose(encode(encoder, clips, 4, cache_folder=tmp_path), direct, atol=1e-6)
    assert len(list(tmp_path.rglob("*.pt"))) + len(list(tmp_path.rglob("*.npy"))) >= 1


def test_the_command_writes_the_table_and_the_json(corpus, tmp_path, capsys):
    torch.manual_seed(0)
    save_encoder(tmp_path / "conv.ckpt", TinyConvEncoder(n_mels=24), "tiny_conv", n_mels=24)
    argv = [
        "--encoder",
        'base=tiny_conv:{"n_mels": 32}',
        "--encoder",
        f"conv={tmp_path / 'conv.ckpt'}",
        "--base",
        "base",
        "--folder",
        str(corpus),
        "--tasks",
        "loudness",
        "coin",
        "--steps",
        "30",
        "--output",
        str(tmp_path / "probe.json"),
    ]
    results = main(argv)
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "| task | chance | majority | base | conv | base+conv |"
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == ["| loudness", "| coin"]
    assert json.loads((tmp_path / "probe.json").read_text()) == results
    assert (tmp_path / "probe.md").read_text() == table


def test_a_missing_label_column_is_refused_in_one_line(corpus):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "speechbrain_mowe.probe",
            "--encoder",
            "conv=tiny_conv",
            "--folder",
            str(corpus),
            "--tasks",
            "coin",
            "--label_column",
            "emotion",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert f"{corpus / 'coin_train.csv'}: no 'emotion' column" in line
