"""IEMOCAP preparation on a 2-session subset, leave-one-session-out."""

import pytest
from fixture_corpora import (
    assert_second_run_does_no_work,
    load_recipe,
    make_iemocap,
    read_report,
    read_rows,
)

from speechbrain_mowe.tasks import TASKS, example_rng

iemocap = load_recipe("IEMOCAP/iemocap_prepare.py")
FOUR = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}


def expected_row(turn, info, split, labels=FOUR):
    session, code, seconds = info
    dialog = turn.rsplit("_", 1)[0]
    rng = example_rng(0, turn) if split == "train" else None
    return {
        "ID": turn,
        "duration": f"{seconds:.3f}",
        "wav": f"$data_root/Session{session}/sentences/wav/{dialog}/{turn}.wav",
        "task": "er",
        "instruction": TASKS["er"].instruction(
            rng, labels=", ".join(dict.fromkeys(labels.values()))
        ),
        "answer": labels[code],
        "references": "",
        "dataset": "iemocap",
        "speaker": turn[:5] + turn.rsplit("_", 1)[1][0],
        "session": str(session),
        "emotion_code": code,
    }


def test_two_session_subset_row_by_row(tmp_path):
    root, turns = make_iemocap(tmp_path, sessions=(1, 2))
    counts = iemocap.prepare_iemocap(root, tmp_path / "out")
    # per session: 2 dialogs x 8 turns, of which fru and xxx are outside the 4 classes
    assert counts == {
        "fold_1/train": 11, "fold_1/valid": 1, "fold_1/test": 12,
        "fold_2/train": 11, "fold_2/valid": 1, "fold_2/test": 12,
    }  # fmt: skip
    for k, other in ((1, 2), (2, 1)):
        fold = tmp_path / "out" / f"fold_{k}"
        in_set = [(t, info) for t, info in turns.items() if info[1] in FOUR]
        assert read_rows(fold / "test.csv") == [
            expected_row(t, info, "test") for t, info in in_set if info[0] == k
        ]
        train, valid = read_rows(fold / "train.csv"), read_rows(fold / "valid.csv")
        assert sorted(r["ID"] for r in train + valid) == sorted(
            t for t, info in in_set if info[0] == other
        )
        for r in train:
            assert r == expected_row(r["ID"], turns[r["ID"]], "train")
        for r in valid:
            assert r == expected_row(r["ID"], turns[r["ID"]], "valid")
    test_rows = read_rows(tmp_path / "out" / "fold_1" / "test.csv")
    assert {r["emotion_code"]: r["answer"] for r in test_rows}["exc"] == "happy"
    assert test_rows[0]["instruction"] == (
        "Which emotion does the speaker express? Answer with one of: neutral, happy, angry, sad."
    )
    assert read_report(tmp_path / "out" / "iemocap_prepare_report.tsv") == []


def test_other_label_sets(tmp_path):
    root, turns = make_iemocap(tmp_path, sessions=(1, 3))
    counts = iemocap.prepare_iemocap(root, tmp_path / "six", test_sessions=[3], label_set="6class")
    assert counts == {"fold_3/train": 13, "fold_3/valid": 1, "fold_3/test": 14}
    answers = {r["emotion_code"]: r["answer"] for r in read_rows(tmp_path / "six/fold_3/test.csv")}
    assert answers == {
        "neu": "neutral", "hap": "happy", "exc": "excited",
        "ang": "angry", "sad": "sad", "fru": "frustrated",
    }  # fmt: skip
    custom = {"ang": "negative", "sad": "negative", "hap": "positive", "exc": "positive"}
    iemocap.prepare_iemocap(root, tmp_path / "val", label_set=custom, valid_ratio=0.0)
    rows = read_rows(tmp_path / "val/fold_1/test.csv")
    assert {r["answer"] for r in rows} == {"negative", "positive"}
    assert rows[0]["instruction"].endswith("one of: negative, positive.")
    assert read_rows(tmp_path / "val/fold_1/valid.csv") == []
    with pytest.raises(KeyError, match="Unknown label set '5class'. Known: 4class, 4class_no_exc"):
        iemocap.prepare_iemocap(root, tmp_path / "x", label_set="5class")


def test_missing_turn_audio_is_reported(tmp_path):
    root, turns = make_iemocap(tmp_path, sessions=(4, 5))
    lost = root / "Session5/sentences/wav/Ses05F_impro01/Ses05F_impro01_F000.wav"
    lost.unlink()
    counts = iemocap.prepare_iemocap(root, tmp_path / "out", test_sessions=[5])
    assert counts["fold_5/test"] == 11
    assert read_report(tmp_path / "out" / "iemocap_prepare_report.tsv") == [
        ("Session5", "Ses05F_impro01_F000", str(lost), "file not found")
    ]


def test_second_preparation_does_no_work(tmp_path, monkeypatch):
    root, _ = make_iemocap(tmp_path, sessions=(1, 2))

    def prepare():
        return iemocap.prepare_iemocap(root, tmp_path / "out")

    first = prepare()
    assert assert_second_run_does_no_work(prepare, tmp_path / "out", monkeypatch) == first


def test_session_problems_are_named(tmp_path):
    root, _ = make_iemocap(tmp_path, sessions=(2,))
    with pytest.raises(ValueError, match=r"needs at least 2 sessions; .* has only \[2\]"):
        iemocap.prepare_iemocap(root, tmp_path / "out")
    root, _ = make_iemocap(tmp_path / "two", sessions=(1, 2))
    with pytest.raises(ValueError, match=r"Test sessions \[5\] are not in .* \(found \[1, 2\]\)"):
        iemocap.prepare_iemocap(root, tmp_path / "out", test_sessions=[5])
    with pytest.raises(FileNotFoundError, match="No Session1..Session5 folders"):
        iemocap.prepare_iemocap(tmp_path / "nowhere", tmp_path / "out")
