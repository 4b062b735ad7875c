"""Reading each harness's item file and writing its predictions, checked
against the fields its own scripts read (AudioBench, AIR-Bench, MMAU)."""

import json
from pathlib import Path

import pytest
import torch

from speechbrain_mowe.benchmark_formats import AIRBENCH_CHOICE_PROMPT, benchmark_format
from speechbrain_mowe.dataio import save_audio


def _audio(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, 0.1 * torch.ones(1600), 16000)


def _write(path, items):
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_airbench_chat_and_foundation_round_trip(tmp_path):
    chat = [
        {"path": "a.wav", "question": "What is said?", "answer_gt": "hello", "task_name":
         "speech_QA", "dataset_name": "common_voice", "uniq_id": 7, "meta_info": "a man"},
        {"path": "b.wav", "question": "What sound?", "answer_gt": "rain", "task_name":
         "sound_QA", "dataset_name": "clotho", "uniq_id": 8, "meta_info": "rain falls"},
    ]  # fmt: skip
    foundation = [
        {"path": "c.wav", "question": "Which animal?", "choice_a": "dog", "choice_b": "cat",
         "choice_c": "cow", "choice_d": "owl", "answer_gt": "cat", "task_name":
         "Animal_Sound_Detection", "dataset_name": "vggsound", "uniq_id": 9},
        {"path": "d.wav", "question": "Where?", "choice_a": "left", "choice_b": "right",
         "answer_gt": "left", "task_name": "Audio_Grounding", "dataset_name": "AudioGrounding",
         "uniq_id": 10},
    ]  # fmt: skip
    for item in chat + foundation:
        _audio(tmp_path / f"{item['task_name']}_{item['dataset_name']}" / item["path"])
    fmt = benchmark_format("airbench")
    items = fmt.read(_write(tmp_path / "Chat_meta.json", chat), tmp_path)
    items += fmt.read(_write(tmp_path / "Foundation_meta.json", foundation), tmp_path)
    assert items[0].instruction == "What is said?" and items[0].id == "7"
    assert items[2].instruction == (
        f"{AIRBENCH_CHOICE_PROMPT}\nWhich animal?\nA. dog\nB. cat\nC. cow\nD. owl"
    )
    assert items[3].wav.endswith("Audio_Grounding_AudioGrounding/d.flac")
    assert all(Path(item.wav).is_file() for item in items[:3])
    path = fmt.write(tmp_path / "out.jsonl", items, ["hi", "rain", "B.", "A."])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    chat_keys = {"meta_info", "question", "answer_gt", "path", "task_name", "dataset_name",
                 "response", "uniq_id"}  # fmt: skip
    assert set(lines[0]) == chat_keys and lines[0]["response"] == "hi"
    assert lines[1]["meta_info"] == "rain falls" and lines[1]["uniq_id"] == 8
    assert set(lines[2]) == chat_keys - {"meta_info"} | {f"choice_{c}" for c in "abcd"}
    assert lines[2]["choice_d"] == "owl" and lines[3]["choice_c"] is None
    assert lines[2]["question"] == "Which animal?" and lines[3]["response"] == "A."


def test_mmau_keeps_every_field_and_adds_the_prediction(tmp_path):
    items = [
        {"id": "u1", "audio_id": "./test-mini-audios/u1.wav", "question": "Who speaks?",
         "choices": ["Man", "Woman"], "answer": "Man", "dataset": "AudioSet", "task": "sound",
         "split": "test-mini", "category": "Reasoning", "sub-category": "Acoustic Source",
         "difficulty": "medium"},
        {"id": "u2", "audio_id": "./test-mini-audios/u2.wav", "question": "What genre?",
         "choices": ["Jazz", "Rock", "Pop"], "answer": "Rock", "dataset": "MusicCaps",
         "task": "music", "split": "test-mini", "category": "Perception",
         "sub-category": "Genre", "difficulty": "easy"},
    ]  # fmt: skip
    for item in items:
        _audio(tmp_path / item["audio_id"])
    fmt = benchmark_format("mmau")
    read = fmt.read(_write(tmp_path / "mmau-test-mini.json", items), tmp_path)
    assert read[1].instruction == "What genre? Choose one of: Jazz; Rock; Pop."
    assert all(Path(item.wav).is_file() for item in read)
    assert [item.id for item in read] == ["u1", "u2"]
    path = fmt.write(tmp_path / "preds.json", read, ["Man", "Jazz"])
    written = json.loads(path.read_text())
    assert written == [{**items[0], "model_prediction": "Man"},
                       {**items[1], "model_prediction": "Jazz"}]  # fmt: skip


def test_audiobench_reads_both_key_styles_and_drops_the_audio(tmp_path):
    items = [
        {"audio": "clips/0.wav", "text": "What is happening?", "answer": "a dog barks",
         "task_type": "ASQA"},
        {"audio": "clips/1.wav", "instruction": "What emotion?", "reference": "sad",
         "task_type": "ER"},
    ]  # fmt: skip
    fmt = benchmark_format("audiobench")
    read = fmt.read(_write(tmp_path / "items.json", items), tmp_path)
    assert [item.wav for item in read] == [str(tmp_path / f"clips/{i}.wav") for i in (0, 1)]
    written = json.loads(fmt.write(tmp_path / "p.json", read, ["barking", "sad"]).read_text())
    assert written[0] == {"text": "What is happening?", "instruction": "What is happening?",
                          "answer": "a dog barks", "reference": "a dog barks",
                          "task_type": "ASQA", "model_prediction": "barking"}  # fmt: skip
    assert written[1]["text"] == "What emotion?" and written[1]["reference"] == "sad"
    with pytest.raises(ValueError, match="items.json, item 0: no 'text' or 'instruction' field"):
        fmt.read(_write(tmp_path / "items.json", [{"audio": "a.wav", "answer": "x"}]), tmp_path)
    with pytest.raises(ValueError, match="2 predictions for 1 items"):
        fmt.write(tmp_path / "p.json", read[:1], ["a", "b"])


@pytest.mark.parametrize("name", ["audiobench", "airbench", "mmau"])
def test_our_test_rows_become_items_of_every_format(tmp_path, name):
    row = {"wav": "/data/a.wav", "task": "asr", "instruction": "Transcribe.", "answer": "hi",
           "source": "librispeech"}  # fmt: skip
    fmt = benchmark_format(name)
    item = fmt.from_row("utt-1", row)
    assert (item.id, item.wav, item.instruction) == ("utt-1", "/data/a.wav", "Transcribe.")
    path = fmt.write(tmp_path / f"p{fmt.suffix}", [item], ["hello"])
    text = path.read_text()
    record = json.loads(text.splitlines()[0]) if fmt.suffix == ".jsonl" else json.loads(text)[0]
    assert record[fmt.prediction_key] == "hello"
    assert "hi" in record.values()
