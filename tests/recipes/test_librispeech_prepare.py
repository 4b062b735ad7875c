"""LibriSpeech preparation on a miniature copy of the distributed layout."""

import subprocess
import sys

import pytest
from fixture_corpora import (
    LIBRISPEECH,
    RECIPES,
    assert_second_run_does_no_work,
    corrupt,
    load_recipe,
    make_librispeech,
    read_report,
    read_rows,
    tone,
)

from speechbrain_mowe.dataio import load_manifest, save_audio
from speechbrain_mowe.dataio.preparation import PreparedWithOtherOptions
from speechbrain_mowe.tasks import TASKS, example_rng

librispeech = load_recipe("LibriSpeech/librispeech_prepare.py")
SPLITS = ["train-clean-100", "dev-clean", "test-clean"]


def expected_rows(split):
    rows = []
    for utt_id, (seconds, text) in sorted(LIBRISPEECH[split].items(), key=lambda kv: kv[0]):
        spk, chapter, _ = utt_id.split("-")
        rng = example_rng(0, utt_id) if split.startswith("train") else None
        rows.append(
            {
                "ID": utt_id,
                "duration": f"{seconds:.3f}",
                "wav": f"$data_root/{split}/{spk}/{chapter}/{utt_id}.flac",
                "task": "asr",
                "instruction": TASKS["asr"].instruction(rng),
                "answer": text,
                "references": "",
                "dataset": "librispeech",
                "speaker": spk,
            }
        )
    return rows


def test_manifests_row_by_row(tmp_path):
    root = make_librispeech(tmp_path)
    counts = librispeech.prepare_librispeech(root, tmp_path / "out", splits=SPLITS)
    assert counts == {"train-clean-100": 3, "dev-clean": 1, "test-clean": 1}
    for split in SPLITS:
        assert read_rows(tmp_path / "out" / f"{split}.csv") == expected_rows(split)
    train = [r["instruction"] for r in read_rows(tmp_path / "out" / "train-clean-100.csv")]
    assert len(set(train)) > 1  # paraphrases vary in training ...
    assert read_rows(tmp_path / "out" / "dev-clean.csv")[0]["instruction"] == (
        TASKS["asr"].eval_instruction  # ... and are fixed for evaluation
    )
    loaded = load_manifest(tmp_path / "out" / "dev-clean.csv", root)
    assert loaded["2277-149896-0000"]["wav"] == str(
        root / "dev-clean" / "2277" / "149896" / "2277-149896-0000.flac"
    )
    assert read_report(tmp_path / "out" / "librispeech_prepare_report.tsv") == []


def test_bad_rows_are_reported_and_left_out(tmp_path):
    corpus = {
        "dev-other": {
            "116-288045-0000": (1.0, "AS I APPROACHED THE CITY"),
            "116-288045-0001": (1.0, "SOMETHING ELSE"),
            "116-288045-0002": (1.0, "   "),
            "116-288045-0003": (1.0, "TOO SHORT"),
            "116-288045-0004": (1.0, "LOST FILE"),
        }
    }
    root = make_librispeech(tmp_path, corpus)
    chapter = root / "dev-other" / "116" / "288045"
    corrupt(chapter / "116-288045-0001.flac", "garbage")
    (chapter / "116-288045-0004.flac").unlink()
    save_audio(chapter / "116-288045-0003.flac", tone(0.05, 16000), 16000)
    counts = librispeech.prepare_librispeech(
        root, tmp_path / "out", splits=["dev-other"], min_duration=0.1
    )
    assert counts == {"dev-other": 1}
    assert [r["ID"] for r in read_rows(tmp_path / "out" / "dev-other.csv")] == ["116-288045-0000"]
    report = read_report(tmp_path / "out" / "librispeech_prepare_report.tsv")
    assert [(split, utt, reason.split(" (")[0]) for split, utt, _, reason in report] == [
        ("dev-other", "116-288045-0001", "unreadable audio"),
        ("dev-other", "116-288045-0002", "empty transcript in 116-288045.trans.txt"),
        ("dev-other", "116-288045-0003", "too short"),
        ("dev-other", "116-288045-0004", "file not found"),
    ]
    assert report[0][2] == str(chapter / "116-288045-0001.flac")


def test_second_preparation_does_no_work_and_new_options_write_elsewhere(tmp_path, monkeypatch):
    root = make_librispeech(tmp_path)

    def prepare(out="out", **options):
        return librispeech.prepare_librispeech(root, tmp_path / out, splits=SPLITS, **options)

    first = prepare()
    with monkeypatch.context() as patch:
        assert assert_second_run_does_no_work(prepare, tmp_path / "out", patch) == first
    before = (tmp_path / "out" / "dev-clean.csv").read_bytes()
    with pytest.raises(PreparedWithOtherOptions, match="lowercase: false there, true here"):
        prepare(lowercase=True)
    assert (tmp_path / "out" / "dev-clean.csv").read_bytes() == before
    assert prepare("lower", lowercase=True) == first
    assert read_rows(tmp_path / "lower" / "dev-clean.csv")[0]["answer"] == (
        "he was in a fevered state of mind"
    )
    assert librispeech.prepare_librispeech(root, tmp_path / "other", skip_prep=True) is None
    assert not (tmp_path / "other").exists()


def test_missing_and_unknown_splits_are_named(tmp_path):
    root = make_librispeech(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"splits \['dev-other'\] are not in .*found: "):
        librispeech.prepare_librispeech(root, tmp_path / "out", splits=["dev-other"])
    with pytest.raises(ValueError, match=r"Unknown LibriSpeech splits \['train-960'\]"):
        librispeech.prepare_librispeech(root, tmp_path / "out", splits=["train-960"])


def test_runs_from_the_command_line(tmp_path):
    root = make_librispeech(tmp_path)
    script = RECIPES / "LibriSpeech" / "librispeech_prepare.py"
    result = subprocess.run(
        [sys.executable, str(script), "--data_folder", str(root), "--save_folder",
         str(tmp_path / "cli"), "--splits", "dev-clean", "test-clean", "--lowercase", "true"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "prepared dev-clean: 1 rows, test-clean: 1 rows" in result.stderr
    assert read_rows(tmp_path / "cli" / "test-clean.csv")[0]["answer"] == (
        "he hoped there would be stew for dinner"
    )


def test_byte_order_marks_and_crlf_are_tolerated_and_bad_encodings_named(tmp_path):
    root = make_librispeech(tmp_path)
    trans = root / "dev-clean" / "2277" / "149896" / "2277-149896.trans.txt"
    trans.write_bytes(b"\xef\xbb\xbf" + trans.read_bytes().replace(b"\n", b"\r\n"))
    librispeech.prepare_librispeech(root, tmp_path / "out", splits=["dev-clean"])
    (written,) = read_rows(tmp_path / "out" / "dev-clean.csv")
    assert written == expected_rows("dev-clean")[0]
    trans.write_bytes(b"2277-149896-0000 CAF\xc9\n")  # ISO-8859-1, not UTF-8
    with pytest.raises(ValueError, match="2277-149896.trans.txt' is not UTF-8 text"):
        librispeech.prepare_librispeech(root, tmp_path / "again", splits=["dev-clean"])
