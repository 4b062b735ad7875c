"""Preparation bookkeeping: interrupted runs, duplicate ids, command line."""

import pytest
from fixture_corpora import read_report, read_rows, tone

from speechbrain_mowe.dataio import Preparation, audio_info, manifest_row, save_audio
from speechbrain_mowe.dataio.preparation import PreparedWithOtherOptions, run_from_command_line


def rows(folder, *ids):
    return [manifest_row(i, folder / f"{i}.wav", folder, 1.0, "asr", "T.", i.upper()) for i in ids]


def test_an_interrupted_preparation_is_never_taken_for_a_finished_one(tmp_path):
    manifests = {"train": "train.csv", "test": "test.csv"}
    first = Preparation("toy", tmp_path, {"lowercase": False}, manifests)
    assert not first.is_done()
    first.write("train", rows(tmp_path, "a"))
    # a run dies after its first manifest: nothing is finished ...
    assert not Preparation("toy", tmp_path, {"lowercase": True}, manifests).is_done()
    second = Preparation("toy", tmp_path, {"lowercase": True}, manifests)
    second.write("train", rows(tmp_path, "c"))
    second.write("test", rows(tmp_path, "d"))
    second.finish()
    assert Preparation("toy", tmp_path, {"lowercase": True}, manifests).is_done()


def test_a_finished_preparation_is_never_written_over_with_other_options(tmp_path):
    manifests = {"train": "train.csv"}
    first = Preparation("toy", tmp_path, {"lowercase": False, "splits": ["a"]}, manifests)
    first.write("train", rows(tmp_path, "a"))
    first.finish()
    before = (tmp_path / "train.csv").read_bytes()
    other = Preparation("toy", tmp_path, {"lowercase": True, "splits": ["a"]}, manifests)
    with pytest.raises(
        PreparedWithOtherOptions,
        match=r"toy: .* was prepared with other options "
        r"\(lowercase: false there, true here\)",
    ):
        other.is_done()  # fmt: skip
    assert (tmp_path / "train.csv").read_bytes() == before


def test_repeated_ids_are_reported_not_written(tmp_path):
    prep = Preparation("toy", tmp_path, {}, {"dev": "dev.csv"})
    prep.write("dev", rows(tmp_path, "a", "b", "a"))
    assert prep.finish() == {"dev": 2}
    assert [r["ID"] for r in read_rows(tmp_path / "dev.csv")] == ["a", "b"]
    assert read_report(tmp_path / "toy_prepare_report.tsv") == [
        ("dev", "a", "$data_root/a.wav", "duplicate id")
    ]


def test_unwritten_manifests_are_an_error(tmp_path):
    prep = Preparation("toy", tmp_path, {}, {"dev": "dev.csv", "test": "test.csv"})
    prep.write("dev", [])
    with pytest.raises(RuntimeError, match=r"toy: manifests of \['test'\] were never written"):
        prep.finish()


def test_verify_audio_measures_truncated_mp3_by_decoding(tmp_path):
    path = tmp_path / "cut.mp3"
    save_audio(path, tone(2.0, 48000), 48000, format="MP3")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 4])
    header = audio_info(path)
    decoded = audio_info(path, decode=True)
    assert header.duration == pytest.approx(2.0, abs=0.01)  # the header still claims 2 s
    assert 0.2 < decoded.duration < 0.8
    prep = Preparation("toy", tmp_path, {}, {}, min_duration=1.0, verify_audio=True)
    assert prep.check_audio("train", "cut", path) is None
    assert prep.left_out[0]["reason"].startswith("too short (0.")
    assert prep.options == {"min_duration": 1.0, "verify_audio": True}


def test_command_line_types_follow_the_signature():
    def prepare(data_folder, sessions=None, ratio: float = 0.1, names=("a",), flag: bool = False):
        return data_folder, sessions, ratio, names, flag

    assert run_from_command_line(prepare, ["--data_folder", "d"]) == ("d", None, 0.1, ("a",), False)
    got = run_from_command_line(
        prepare, ["--data_folder", "d", "--ratio", "0.5", "--names", "x", "y", "--flag", "no"]
    )
    assert got == ("d", None, 0.5, ["x", "y"], False)
    with pytest.raises(SystemExit):
        run_from_command_line(prepare, ["--ratio", "0.5"])  # data_folder is required
    with pytest.raises(SystemExit):
        run_from_command_line(prepare, ["--data_folder", "d", "--flag", "maybe"])
