"""Clotho preparation: ISO-8859-1 tables, file names with spaces and accents, 44.1 kHz audio."""

import json
import unicodedata

import pytest
from fixture_corpora import (
    CLOTHO,
    assert_second_run_does_no_work,
    load_recipe,
    make_clotho,
    read_report,
    read_rows,
)

from speechbrain_mowe.dataio import load_audio, load_manifest
from speechbrain_mowe.tasks import TASKS, example_rng

clotho = load_recipe("Clotho/clotho_prepare.py")


def expected_rows(split):
    rows = []
    for name, (seconds, _, captions) in CLOTHO[split].items():
        stem = name[:-4]
        base = {
            "duration": f"{seconds:.3f}",
            "wav": f"$data_root/{split}/{name}",
            "task": "aac",
            "dataset": "clotho",
            "file_name": name,
        }
        kept = [(k, c) for k, c in enumerate(captions, 1) if c]
        if split == "development":
            for k, caption in kept:
                utt_id = f"{stem}_{k}"
                instruction = TASKS["aac"].instruction(example_rng(0, utt_id))
                rows.append(
                    {"ID": utt_id, **base, "answer": caption, "references": "",
                     "instruction": instruction}
                )  # fmt: skip
        else:
            refs = json.dumps([c for _, c in kept], ensure_ascii=False)
            rows.append(
                {"ID": stem, **base, "answer": kept[0][1], "references": refs,
                 "instruction": TASKS["aac"].eval_instruction}
            )  # fmt: skip
    return [{key: row[key] for key in read_order} for row in rows]


read_order = ["ID", "duration", "wav", "task", "instruction", "answer", "references",
              "dataset", "file_name"]  # fmt: skip


def test_manifests_row_by_row(tmp_path):
    root = make_clotho(tmp_path)
    assert b"caf\xe9" in (root / "clotho_captions_development.csv").read_bytes()  # ISO-8859-1
    counts = clotho.prepare_clotho(root, tmp_path / "out")
    assert counts == {"development": 9, "validation": 1, "evaluation": 1}
    for split in ("development", "validation", "evaluation"):
        assert read_rows(tmp_path / "out" / f"{split}.csv") == expected_rows(split)
    assert read_report(tmp_path / "out" / "clotho_prepare_report.tsv") == [
        ("development", "Café ambience, évening_3",
         str(root / "development" / "Café ambience, évening.wav"), "empty caption_3 (line 3)"),
    ]  # fmt: skip
    evaluation = load_manifest(tmp_path / "out" / "evaluation.csv", root)["Überlandbus stop"]
    assert len(evaluation["references"]) == 5
    wav = load_audio(evaluation["wav"])  # stereo 44.1 kHz, read as mono 16 kHz
    assert wav.shape == (20000,)


def test_names_decomposed_on_disk_still_match(tmp_path):
    root = make_clotho(tmp_path)
    name = "Café ambience, évening.wav"
    nfd = unicodedata.normalize("NFD", name)
    (root / "development" / name).rename(root / "development" / nfd)
    clotho.prepare_clotho(root, tmp_path / "out", splits=["development"])
    rows = read_rows(tmp_path / "out" / "development.csv")
    assert [r["wav"] for r in rows if r["ID"].startswith("Caf")] == [
        f"$data_root/development/{nfd}"
    ] * 4
    assert len(rows) == 9


def test_missing_clip_is_reported_and_utf8_tables_also_read(tmp_path):
    root = make_clotho(tmp_path)
    (root / "validation" / "rain on roof 02.wav").unlink()
    table = root / "clotho_captions_evaluation.csv"
    table.write_text(table.read_bytes().decode("iso-8859-1"), encoding="utf-8")
    counts = clotho.prepare_clotho(root, tmp_path / "out", splits=["validation", "evaluation"])
    assert counts == {"validation": 0, "evaluation": 1}
    assert read_rows(tmp_path / "out" / "evaluation.csv")[0]["ID"] == "Überlandbus stop"
    assert read_report(tmp_path / "out" / "clotho_prepare_report.tsv") == [
        ("validation", "rain on roof 02", str(root / "validation" / "rain on roof 02.wav"),
         "file not found"),
    ]  # fmt: skip


def test_second_preparation_does_no_work(tmp_path, monkeypatch):
    root = make_clotho(tmp_path)

    def prepare():
        return clotho.prepare_clotho(root, tmp_path / "out")

    first = prepare()
    assert assert_second_run_does_no_work(prepare, tmp_path / "out", monkeypatch) == first


def test_bad_tables_are_named(tmp_path):
    root = make_clotho(tmp_path)
    (root / "clotho_captions_validation.csv").write_text("file,caption\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"clotho_captions_validation.csv' lacks columns"):
        clotho.prepare_clotho(root, tmp_path / "out", splits=["validation"])
    with pytest.raises(ValueError, match=r"Unknown Clotho splits \['test'\]"):
        clotho.prepare_clotho(root, tmp_path / "out", splits=["test"])
    (root / "clotho_captions_evaluation.csv").unlink()
    with pytest.raises(FileNotFoundError, match="caption table not found"):
        clotho.prepare_clotho(root, tmp_path / "out", splits=["evaluation"])


def test_a_clip_listed_twice_is_reported_once_written_once(tmp_path):
    root = make_clotho(tmp_path)
    table = root / "clotho_captions_evaluation.csv"
    lines = table.read_bytes().splitlines(keepends=True)
    table.write_bytes(b"".join(lines + lines[1:]))
    assert clotho.prepare_clotho(root, tmp_path / "out", splits=["evaluation"]) == {"evaluation": 1}
    assert [r[1:] for r in read_report(tmp_path / "out" / "clotho_prepare_report.tsv")] == [
        ("Überlandbus stop", "$data_root/evaluation/Überlandbus stop.wav", "duplicate id")
    ]
    with pytest.raises(ValueError, match=r"Unknown Clotho splits \['dev'\]"):
        clotho.prepare_clotho(root, tmp_path / "out", caption_splits=["dev"])
