"""CoVoST 2 preparation: an En->Ja direction row by row, every direction, mp3 clips."""

import tarfile

import pytest
from fixture_corpora import (
    assert_second_run_does_no_work,
    load_recipe,
    make_common_voice,
    read_report,
    read_rows,
    write_covost_table,
)

from speechbrain_mowe.dataio import load_audio, load_manifest
from speechbrain_mowe.tasks import TASKS, example_rng

covost2 = load_recipe("CoVoST2/covost2_prepare.py")

CLIPS = {
    "common_voice_en_101.mp3": (1.0, "Hello there."),
    "common_voice_en_102.mp3": (2.0, "How are you today?"),
    "common_voice_en_103.mp3": (1.5, 'He said "yes".'),
    "common_voice_en_104.mp3": (31.0, "Yes."),  # longer than a Whisper window: kept
    "common_voice_en_106.mp3": (None, "This clip was lost."),
    "common_voice_en_107.mp3": (1.0, "Nothing to translate."),
    "common_voice_en_108.mp3": (1.0, "Not in CoVoST."),
}
TABLE = [
    ("common_voice_en_101.mp3", "こんにちは。", "train"),
    ("common_voice_en_102.mp3", '"今日は" お元気ですか？', "train_covost"),
    ("common_voice_en_103.mp3", '彼は\\"はい\\"と言った。', "dev"),
    ("common_voice_en_104.mp3", "はい。", "test"),
    ("common_voice_en_105.mp3", "存在しない。", "train"),
    ("common_voice_en_106.mp3", "失われた。", "dev"),
    ("common_voice_en_107.mp3", "", "test"),
    ("common_voice_en_101.mp3", "こんにちは！", "train"),
    ("common_voice_en_109.mp3", "謎。", "extra"),
]


def make_en_ja(tmp_path):
    folder = make_common_voice(tmp_path / "cv", "en", CLIPS)
    write_covost_table(folder, "en", "ja", TABLE)
    with open(folder / "covost_v2.en_ja.tsv", "a", encoding="utf-8") as f:
        f.write("common_voice_en_110.mp3\tonly two fields\n")
    return folder


def row(clip, seconds, translation, transcript, split, index):
    utt_id = f"en_ja-{clip[:-4]}"
    rng = example_rng(0, utt_id) if split == "train" else None
    return {
        "ID": utt_id,
        "duration": f"{seconds:.3f}",
        "wav": f"$data_root/clips/{clip}",
        "task": "ast",
        "instruction": TASKS["ast"].instruction(rng, source_language="en", target_language="ja"),
        "answer": translation,
        "references": "",
        "dataset": "covost2",
        "source_language": "en",
        "target_language": "ja",
        "transcript": transcript,
        "speaker": f"{index:04d}" + "ab" * 30,
    }


def test_en_ja_manifests_row_by_row(tmp_path):
    folder = make_en_ja(tmp_path)
    counts = covost2.prepare_covost2(folder, tmp_path / "out", "en", "ja")
    assert counts == {"train": 2, "dev": 1, "test": 1}
    out = tmp_path / "out"
    assert read_rows(out / "en_ja_train.csv") == [
        row("common_voice_en_101.mp3", 1.0, "こんにちは。", "Hello there.", "train", 0),
        row("common_voice_en_102.mp3", 2.0, '"今日は" お元気ですか？', "How are you today?",
            "train", 1),
    ]  # fmt: skip
    assert read_rows(out / "en_ja_dev.csv") == [
        row("common_voice_en_103.mp3", 1.5, '彼は"はい"と言った。', 'He said "yes".', "dev", 2)
    ]
    assert read_rows(out / "en_ja_test.csv") == [
        row("common_voice_en_104.mp3", 31.0, "はい。", "Yes.", "test", 3)
    ]
    assert read_rows(out / "en_ja_dev.csv")[0]["instruction"] == (
        "Translate the English speech into Japanese."
    )
    report = read_report(out / "covost2_en_ja_prepare_report.tsv")
    assert [(split, utt, reason) for split, utt, _, reason in report] == [
        ("train", "en_ja-common_voice_en_105", "clip not in Common Voice validated.tsv"),
        ("dev", "en_ja-common_voice_en_106", "file not found"),
        ("test", "en_ja-common_voice_en_107", "empty translation (line 8)"),
        ("train", "en_ja-common_voice_en_101", "clip listed again (line 9)"),
        ("extra", "common_voice_en_109.mp3", "unknown split 'extra' (line 10)"),
        ("-", "common_voice_en_110.mp3",
         "malformed line (covost_v2.en_ja.tsv line 11: 2 fields, expected 3)"),
    ]  # fmt: skip
    # the mp3 clips decode with the installed libraries, at 16 kHz
    data = load_manifest(out / "en_ja_test.csv", folder)
    assert load_audio(data["en_ja-common_voice_en_104"]["wav"]).shape[0] == pytest.approx(
        31 * 16000, abs=2
    )


def test_the_downloaded_tar_gz_table_reads_the_same(tmp_path):
    folder = make_en_ja(tmp_path)
    covost2.prepare_covost2(folder, tmp_path / "plain", "en", "ja")
    tables = tmp_path / "tables"
    tables.mkdir()
    with tarfile.open(tables / "covost_v2.en_ja.tsv.tar.gz", "w:gz") as archive:
        archive.add(folder / "covost_v2.en_ja.tsv", arcname="covost_v2.en_ja.tsv")
    (folder / "covost_v2.en_ja.tsv").unlink()
    covost2.prepare_covost2(folder, tmp_path / "tar", "en", "ja", covost_folder=tables)
    for split in ("train", "dev", "test"):
        name = f"en_ja_{split}.csv"
        assert read_rows(tmp_path / "tar" / name) == read_rows(tmp_path / "plain" / name)


def test_every_direction_prepares(tmp_path):
    assert len(covost2.DIRECTIONS) == 36
    sources = sorted({src for src, _ in covost2.DIRECTIONS})
    for i, src in enumerate(sources):
        make_common_voice(tmp_path / "cv", src, {f"common_voice_{src}_{i}.mp3": (0.3, "文 text")})
    for src, tgt in covost2.DIRECTIONS:
        folder = tmp_path / "cv" / src
        clip = f"common_voice_{src}_{sources.index(src)}.mp3"
        write_covost_table(folder, src, tgt, [(clip, f"translation into {tgt}: 翻訳", "dev")])
        counts = covost2.prepare_covost2(folder, tmp_path / "out", src, tgt, splits=["dev"])
        assert counts == {"dev": 1}, (src, tgt)
        (written,) = read_rows(tmp_path / "out" / f"{src}_{tgt}_dev.csv")
        assert written["answer"] == f"translation into {tgt}: 翻訳"
        assert (written["source_language"], written["target_language"]) == (src, tgt)
        assert written["transcript"] == "文 text"
    zh = read_rows(tmp_path / "out" / "zh-CN_en_dev.csv")[0]["instruction"]
    assert zh == "Translate the Chinese speech into English."


def test_second_preparation_does_no_work(tmp_path, monkeypatch):
    folder = make_en_ja(tmp_path)

    def prepare():
        return covost2.prepare_covost2(folder, tmp_path / "out", "en", "ja")

    first = prepare()
    assert assert_second_run_does_no_work(prepare, tmp_path / "out", monkeypatch) == first


def test_bad_arguments_are_named(tmp_path):
    folder = make_en_ja(tmp_path)
    with pytest.raises(ValueError, match="CoVoST 2 has no direction en->fr"):
        covost2.prepare_covost2(folder, tmp_path / "out", "en", "fr")
    with pytest.raises(ValueError, match=r"Unknown CoVoST 2 splits \['validation'\]"):
        covost2.prepare_covost2(folder, tmp_path / "out", "en", "ja", splits=["validation"])
    with pytest.raises(FileNotFoundError, match="'covost_v2.en_de.tsv' .* not found"):
        covost2.prepare_covost2(folder, tmp_path / "out", "en", "de")
    (folder / "validated.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="Common Voice table not found: .*validated.tsv"):
        covost2.prepare_covost2(folder, tmp_path / "out", "en", "ja")


def test_a_byte_order_mark_before_the_header_is_tolerated(tmp_path):
    folder = make_en_ja(tmp_path)
    covost2.prepare_covost2(folder, tmp_path / "plain", "en", "ja", splits=["train"])
    for table in (folder / "validated.tsv", folder / "covost_v2.en_ja.tsv"):
        table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    covost2.prepare_covost2(folder, tmp_path / "bom", "en", "ja", splits=["train"])
    plain, bom = (read_rows(tmp_path / d / "en_ja_train.csv") for d in ("plain", "bom"))
    assert bom == plain and len(bom) == 2
