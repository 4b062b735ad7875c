"""Synthetic corpus: layout, audio, splits, translations, prosody, captions, determinism."""

import json
import logging
import random
import re
import runpy
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixture_corpora import RECIPES, assert_second_run_does_no_work, load_recipe, read_rows

from speechbrain_mowe.dataio import COLUMNS
from speechbrain_mowe.dataio.preparation import PreparedWithOtherOptions
from speechbrain_mowe.tasks import TASKS, example_rng

sys.path.append(str(RECIPES / "Synthetic"))  # the script imports its sibling modules
synthetic = load_recipe("Synthetic/synthetic_prepare.py")
grammar, scenes = sys.modules["synthetic_grammar"], sys.modules["synthetic_scenes"]

SIZES = {"train": 24, "valid": 4, "test": 8}
SEED = 7
SPEECH_COLUMNS = ["dataset", "speaker", "sex", "transcript"]
PROSODY_COLUMNS = ["rate", "pitch", "pitch_range", "volume"]
EXTRA_COLUMNS = {
    "asr": SPEECH_COLUMNS + PROSODY_COLUMNS,
    "ast": SPEECH_COLUMNS + ["source_language", "target_language"] + PROSODY_COLUMNS,
    "er": SPEECH_COLUMNS + PROSODY_COLUMNS,
    "speaker_sex": SPEECH_COLUMNS + PROSODY_COLUMNS,
    "aac": ["dataset", "events"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every task, small sizes: ``(folder, counts, {(task, split): rows})``."""
    folder = tmp_path_factory.mktemp("synthetic")
    counts = synthetic.prepare_synthetic(
        folder,
        train_size=SIZES["train"],
        valid_size=SIZES["valid"],
        test_size=SIZES["test"],
        tasks=["speaker_sex", "aac", "er", "ast", "asr"],
        seed=SEED,
    )
    rows = {
        (task, split): read_rows(folder / f"{task}_{split}.csv")
        for task in synthetic.TASK_NAMES
        for split in synthetic.SPLITS
    }
    return folder, counts, rows


def wav_of(folder, row):
    return Path(row["wav"].replace("$data_root", str(folder)))


def test_manifests_columns_counts_and_audio(corpus):
    folder, counts, rows = corpus
    assert counts == {
        f"{task}_{split}": SIZES[split]
        for task in synthetic.TASK_NAMES
        for split in synthetic.SPLITS
    }
    ids = [row["ID"] for table in rows.values() for row in table]
    assert len(ids) == len(set(ids))
    for (task, split), table in rows.items():
        assert list(table[0]) == list(COLUMNS) + EXTRA_COLUMNS[task]
        fields = {"ast": {"source_language": "en", "target_language": "de"},
                  "er": {"labels": "neutral, happy, angry, sad"}}.get(task, {})  # fmt: skip
        for row in table:
            assert row["wav"] == f"$data_root/wavs/{split}/{task}/{row['ID']}.wav"
            assert row["task"] == task and row["dataset"] == "synthetic"
            rng = example_rng(SEED, row["ID"]) if split == "train" else None
            assert row["instruction"] == TASKS[task].instruction(rng, **fields)
            info = sf.info(wav_of(folder, row))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert row["duration"] == f"{info.frames / 16000:.3f}"
            assert 0.5 < info.duration < 8
    eval_instructions = {row["instruction"] for row in rows["asr", "test"]}
    assert eval_instructions == {"Transcribe the speech."}
    assert len({row["instruction"] for row in rows["asr", "train"]}) > 1
    assert {row["speaker"].split("+")[0] for row in rows["asr", "train"]} > {"en-us"}


def test_splits_share_no_sentence_and_training_covers_every_word(corpus):
    _, _, rows = corpus
    speech = ("asr", "ast", "er", "speaker_sex")

    def sentences(split, tasks=speech, column="transcript"):
        return {row[column] for task in tasks for row in rows[task, split]}

    def words(texts):
        return {word for text in texts for word in text.split()}

    train = sentences("train")
    for split in ("valid", "test"):
        assert not sentences(split) & train
        assert words(sentences(split)) <= words(train)
        german = sentences(split, ["ast"], "answer")
        assert not german & sentences("train", ["ast"], "answer")
        assert words(german) <= words(sentences("train", ["ast"], "answer"))
    assert not sentences("valid") & sentences("test")
    for split in synthetic.SPLITS:
        for text in sentences(split):
            assert synthetic.sentence_split(text, SEED) == split


def test_too_small_a_training_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"train_size=1 is too small .* never in training: "):
        synthetic.prepare_synthetic(tmp_path, train_size=1, valid_size=5, test_size=5)
    with pytest.raises(ValueError, match=r"Unknown tasks \['kws'\]"):
        synthetic.prepare_synthetic(tmp_path, tasks=["asr", "kws"])
    with pytest.raises(ValueError, match=r"must not be negative, got \{'valid': -1\}"):
        synthetic.prepare_synthetic(tmp_path, valid_size=-1)
    assert not list(tmp_path.iterdir())


def test_translations_follow_gender_and_case(corpus):
    translate = grammar.translate
    assert translate("the small dog sees a red ball") == "der kleine Hund sieht einen roten Ball"
    assert translate("a woman carries my old cup in the kitchen today") == (
        "eine Frau trägt heute meine alte Tasse in der Küche"
    )
    assert translate("this child finds a white book again") == (
        "dieses Kind findet wieder ein weißes Buch"
    )
    assert (
        translate("my big horse needs the black car")
        == "mein großes Pferd braucht das schwarze Auto"
    )
    assert translate("a young girl watches this green boat at the lake") == (
        "ein junges Mädchen beobachtet dieses grüne Boot am See"
    )
    assert translate("the man hears an old bird on the street now") == (
        "der Mann hört jetzt einen alten Vogel auf der Straße"
    )
    assert translate("this cat likes my apple in the park often") == (
        "diese Katze mag oft meinen Apfel im Park"
    )
    with pytest.raises(ValueError, match="Not a sentence of the grammar"):
        translate("a old dog sees the ball")
    _, _, rows = corpus
    for split in synthetic.SPLITS:
        for row in rows["ast", split]:
            assert row["answer"] == translate(row["transcript"])
            assert (row["source_language"], row["target_language"]) == ("en", "de")
        for row in rows["asr", split]:
            assert row["answer"] == row["transcript"] == row["transcript"].lower()


def test_emotions_are_balanced_and_made_of_prosody(corpus):
    folder, _, rows = corpus
    table = rows["er", "train"]
    assert Counter(row["answer"] for row in table) == dict.fromkeys(synthetic.EMOTION_LABELS, 6)
    loudness, pace = {}, {}
    for row in table:
        samples, _ = sf.read(wav_of(folder, row))
        assert np.abs(samples).max() < 0.99
        loudness.setdefault(row["answer"], []).append(np.sqrt(np.mean(samples**2)))
        seconds_per_word = float(row["duration"]) / len(row["transcript"].split())
        pace.setdefault(row["answer"], []).append(seconds_per_word)
        for name in ("rate", "pitch", "pitch_range", "volume"):
            low, high = synthetic.EMOTION_PROSODY[row["answer"]][name]
            assert low <= int(row[name]) <= high
    mean = {label: np.mean(values) for label, values in loudness.items()}
    assert mean["angry"] > 2 * mean["sad"]
    assert mean["angry"] > mean["neutral"] > mean["sad"]
    assert np.mean(pace["sad"]) > 1.3 * np.mean(pace["happy"])
    assert {row["answer"] for row in rows["er", "test"]} == set(synthetic.EMOTION_LABELS)


def count_bursts(wav, frame=32):
    """Number of separate runs of frames louder than a third of the loudest."""
    envelope = np.abs(wav.numpy()[: len(wav) // frame * frame]).reshape(-1, frame).max(axis=1)
    loud = envelope > envelope.max() / 3
    return int(loud[0]) + int(np.sum(loud[1:] & ~loud[:-1]))


def test_captions_name_the_events_in_order_and_count_the_clicks(corpus):
    Event = scenes.Event
    scene = [Event("tone", "low"), Event("clicks", 2)]
    assert scenes.caption(scene) == "a low tone followed by two clicks"
    references = scenes.captions(scene, random.Random(0))
    assert len(set(references)) == 5 and references[0] == "a low tone followed by two clicks"
    for text in references:
        assert ("two" in text or "pair" in text) and text.index("low") < text.index("click")
    assert scenes.caption([Event("noise"), Event("chirp", "rising"), Event("clicks", 3)]) == (
        "a burst of noise followed by a rising chirp and then three clicks"
    )
    for count in (1, 2, 3):
        wav = scenes.render_scene([Event("clicks", count)], random.Random(count))
        assert count_bursts(wav) == count
    _, _, rows = corpus
    for split in synthetic.SPLITS:
        for row in rows["aac", split]:
            references = json.loads(row["references"])
            assert len(set(references)) == 5 and row["answer"] in references
            events = [
                Event(*(int(p) if p.isdigit() else p for p in word.split(":")))
                for word in row["events"].split()
            ]
            assert 1 <= len(events) <= 3 and references[0] == scenes.caption(events)


def test_speaker_sex_follows_the_voice_variant(corpus):
    _, _, rows = corpus
    for split in synthetic.SPLITS:
        table = rows["speaker_sex", split]
        half = SIZES[split] // 2
        assert Counter(row["answer"] for row in table) == dict.fromkeys(synthetic.SEX_LABELS, half)
        for row in table:
            variant = row["speaker"].split("+")[1]
            assert row["answer"] == row["sex"] == ("woman" if variant[0] == "f" else "man")
    scorer = TASKS["speaker_sex"].make_scorer()  # the task the script registers
    scorer.append(["a", "b"], ["a woman", "Man."], ["woman", "woman"])
    assert scorer.summarize()["WA"] == 50.0


def test_corpus_texts_hold_every_word_of_the_manifests(corpus):
    _, _, rows = corpus

    def words(text):
        return set(re.findall(r"\w+", text))

    vocabulary = set().union(*map(words, synthetic.corpus_texts(synthetic.TASK_NAMES)))
    for table in rows.values():
        for row in table:
            assert words(f"{row['instruction']} {row['answer']}") <= vocabulary
    texts = synthetic.corpus_texts(["asr", "er"])
    assert TASKS["asr"].eval_instruction in texts and "neutral happy angry sad" in texts
    assert not any("man or a woman" in text or "Hund" in text for text in texts)


def test_same_arguments_same_bytes_other_seed_other_corpus(tmp_path):
    def prepare(folder, seed=3):
        sizes = {"train_size": 6, "valid_size": 1, "test_size": 2}
        return synthetic.prepare_synthetic(folder, tasks=["asr", "er", "aac"], seed=seed, **sizes)

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    prepare(tmp_path / "a")
    prepare(tmp_path / "b")
    first = files(tmp_path / "a")
    assert first == files(tmp_path / "b")
    assert len([p for p in first if p.suffix == ".wav"]) == 27
    assert not list((tmp_path / "a").glob("speaker_sex_*.csv"))
    prepare(tmp_path / "c", seed=4)
    other = files(tmp_path / "c")
    assert other.keys() == first.keys()
    assert [p for p in first if other[p] == first[p]] == [Path("synthetic_prepare_report.tsv")]


def test_second_preparation_does_no_work_other_options_are_refused(tmp_path, monkeypatch):
    def prepare(**options):
        sizes = {"train_size": 6, "valid_size": 1, "test_size": 2, **options}
        return synthetic.prepare_synthetic(tmp_path, tasks=["asr", "aac"], **sizes)

    first = prepare()
    assert assert_second_run_does_no_work(prepare, tmp_path, monkeypatch) == first
    assert prepare(skip_prep=True) is None
    with pytest.raises(PreparedWithOtherOptions, match="sizes: "):
        prepare(test_size=1)
    assert len(list((tmp_path / "wavs" / "test" / "asr").iterdir())) == 2


def test_command_line(tmp_path, monkeypatch, caplog):
    script = RECIPES / "Synthetic" / "synthetic_prepare.py"
    argv = [str(script), "--save_folder", str(tmp_path), "--train_size", "3",
            "--valid_size", "1", "--test_size", "1", "--tasks", "aac"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with caplog.at_level(logging.INFO):
        runpy.run_path(str(script), run_name="__main__")
    assert "Synthetic corpus: 5 clips" in caplog.text
    assert len(read_rows(tmp_path / "aac_train.csv")) == 3
