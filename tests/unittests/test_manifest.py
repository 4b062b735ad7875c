"""Manifests: rows, files, several manifests mixed into one dataset."""

import csv
import json

import pytest
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_mowe.dataio import (
    ManifestError,
    check_columns,
    check_manifest,
    load_manifest,
    load_manifests,
    manifest_row,
    write_manifest,
)


def test_manifest_round_trip_with_awkward_text(tmp_path):
    rows = [
        manifest_row(
            "clip, with comma",
            tmp_path / "dev" / "Café ambience, évening.wav",
            tmp_path,
            20.123456,
            "aac",
            "Describe the audio.",
            'A "quoted" caption, with commas.',
            references=['A "quoted" caption, with commas.', "Costs $5 {braces} \\ slash", "猫"],
            dataset="clotho",
        ),
        manifest_row("ja1", tmp_path / "a.mp3", tmp_path, 3.0, "ast", "Translate.", "猫が好き。"),
    ]
    path = tmp_path / "m.csv"
    write_manifest(path, rows)
    with open(path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert header == [
        "ID", "duration", "wav", "task", "instruction", "answer", "references", "dataset",
    ]  # fmt: skip
    data = load_manifest(path, "/mnt/data")
    assert list(data) == ["clip, with comma", "ja1"]
    first = data["clip, with comma"]
    assert first["wav"] == "/mnt/data/dev/Café ambience, évening.wav"
    assert first["duration"] == 20.123
    assert first["answer"] == 'A "quoted" caption, with commas.'
    assert first["references"][1:] == ["Costs $5 {braces} \\ slash", "猫"]
    assert data["ja1"]["references"] == [] and data["ja1"]["dataset"] == ""
    assert not path.with_name("m.csv.tmp").exists()


def test_speechbrain_reads_our_manifests_directly(tmp_path):
    rows = [
        manifest_row(f"u{i}", tmp_path / f"u{i}.flac", tmp_path, 1.0 + i, "asr", "T.", f"WORD {i}")
        for i in range(3)
    ]
    write_manifest(tmp_path / "m.csv", rows)
    data = DynamicItemDataset.from_csv(tmp_path / "m.csv", replacements={"data_root": "/x"})
    data.set_output_keys(["id", "wav", "duration", "answer"])
    assert data[2] == {"id": "u2", "wav": "/x/u2.flac", "duration": 3.0, "answer": "WORD 2"}


def test_audio_outside_the_data_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="u1: audio '/elsewhere/u1.wav' is outside"):
        manifest_row("u1", "/elsewhere/u1.wav", tmp_path, 1.0, "asr", "T.", "A")


def test_load_manifests_merges_sources_and_refuses_duplicate_ids(tmp_path):
    write_manifest(
        tmp_path / "asr.csv",
        [manifest_row(f"a{i}", tmp_path / "ls" / f"a{i}.flac", tmp_path / "ls", 1, "asr", "T", "x")
         for i in range(3)],
    )  # fmt: skip
    write_manifest(
        tmp_path / "er.csv",
        [manifest_row("e0", tmp_path / "ie" / "e0.wav", tmp_path / "ie", 2, "er", "E", "sad",
                      speaker="Ses01F")],
    )  # fmt: skip
    dataset, groups = load_manifests(
        {"asr": tmp_path / "asr.csv", "er": tmp_path / "er.csv"},
        {"asr": "/data/LibriSpeech", "er": "/data/IEMOCAP"},
    )
    assert groups == {"asr": [0, 1, 2], "er": [3]}
    dataset.set_output_keys(["id", "wav", "source", "speaker"])
    assert dataset[3] == {
        "id": "e0",
        "wav": "/data/IEMOCAP/e0.wav",
        "source": "er",
        "speaker": "Ses01F",
    }
    assert dataset[0]["speaker"] == "" and dataset[0]["wav"] == "/data/LibriSpeech/a0.flac"
    with pytest.raises(ValueError, match="Example id 'a0' is in both .*asr.csv and .*asr.csv"):
        load_manifests({"x": tmp_path / "asr.csv", "y": tmp_path / "asr.csv"}, {"x": "/", "y": "/"})
    with pytest.raises(KeyError, match=r"No data root given for manifests \['er'\]"):
        load_manifests({"er": tmp_path / "er.csv"}, {})


def test_malformed_references_name_the_row(tmp_path):
    row = manifest_row("r1", tmp_path / "r1.wav", tmp_path, 1, "aac", "D", "x")
    row["references"] = "[not json"
    write_manifest(tmp_path / "bad.csv", [row])
    with pytest.raises(ValueError, match="bad.csv: row 'r1' has malformed references"):
        load_manifest(tmp_path / "bad.csv", tmp_path)
    assert json.loads(manifest_row("r", tmp_path / "r", tmp_path, 1, "a", "b", "c",
                                   references=["é"])["references"]) == ["é"]  # fmt: skip


def _manifest(path, header="ID,duration,wav,task,instruction,answer", rows=()):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


GOOD = "a,1.0,a.wav,asr,Transcribe.,hello"


@pytest.mark.parametrize("row, column, reason", [
    (",1.0,b.wav,asr,Transcribe.,hi", "ID", "empty id"),
    ("b,abc,b.wav,asr,Transcribe.,hi", "duration", "'abc' is not a number of seconds"),
    ("b,0,b.wav,asr,Transcribe.,hi", "duration", "'0' is not a positive duration"),
    ("b,1.0,,asr,Transcribe.,hi", "wav", "empty audio path"),
    ("b,1.0,b.wav,xyz,Transcribe.,hi", "task", "unknown task 'xyz' (the model's tasks: asr, er)"),
    ("b,1.0,b.wav,asr,Transcribe.,  ", "answer", "empty answer"),
])  # fmt: skip
def test_an_unusable_row_is_refused_by_file_line_id_and_column(tmp_path, row, column, reason):
    path = _manifest(tmp_path / "m.csv", rows=[GOOD, row])
    with pytest.raises(ManifestError) as error:
        check_manifest(path, "training", tasks=["asr", "er"])
    utt_id = row.split(",")[0]
    assert str(error.value) == f"{path}, line 3 (id '{utt_id}'), column '{column}': {reason}"


def test_unusable_rows_are_skipped_counted_and_left_out_when_asked(tmp_path, caplog):
    rows = [GOOD, "b,1.0,b.wav,asr,Say.,", "c,1.0,c.wav,xyz,S.,x"]
    path = _manifest(tmp_path / "m.csv", rows=rows)
    with caplog.at_level("WARNING"):
        skipped = check_manifest(path, "evaluation", tasks=["asr"], invalid_rows="skip")
    assert skipped == ["b", "c"]
    assert f"{path}: 2 unusable rows skipped, e.g. {path}, line 3 (id 'b')" in caplog.text
    dataset, groups = load_manifests({"asr": path}, {"asr": tmp_path}, skip=skipped)
    assert list(dataset.data) == ["a"] and groups == {"asr": [0]}


def test_columns_each_use_needs(tmp_path):
    path = _manifest(tmp_path / "m.csv", header="ID,wav,task,instruction", rows=["a,a.wav,asr,T."])
    check_manifest(path, "inference")  # no answer or duration needed to answer
    with pytest.raises(ManifestError, match=r"m.csv: no 'duration', 'answer' column; a manifest "
                                            "for training needs ID, duration, wav, task, "
                                            r"instruction, answer \(it has ID, wav, task, "
                                            r"instruction\)"):  # fmt: skip
        check_manifest(path, "training")
    with pytest.raises(ManifestError, match="no 'task' column"):
        check_columns(_manifest(tmp_path / "n.csv", header="ID,wav"), ["ID", "wav", "task"], "x")
    with pytest.raises(ManifestError, match="is a folder, not a manifest"):
        check_manifest(tmp_path, "training")
    with pytest.raises(FileNotFoundError, match="Manifest .*missing.csv does not exist"):
        check_manifest(tmp_path / "missing.csv", "training")
    with pytest.raises(ValueError, match="invalid_rows is 'ignore'"):
        check_manifest(path, "inference", invalid_rows="ignore")
