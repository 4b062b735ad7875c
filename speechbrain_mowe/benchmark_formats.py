"""Predictions in the formats that public audio-LLM benchmark harnesses read.

Each format reads the harness's own item file into :class:`BenchmarkItem` s
(the audio file, the instruction to ask, and the record the harness expects
back) and writes the answers the way the harness's scorer reads them:

- ``audiobench`` (AudioBench, ``src/dataset_src/*.py``): a JSON list; each
  item's record without its audio plus ``model_prediction``. Its scorers read
  ``text`` and ``answer`` (e.g. Clotho-AQA) or ``instruction`` and
  ``reference`` (e.g. IEMOCAP emotion); both pairs are written. The items
  file is a JSON list of ``{"audio": <path>, "text" or "instruction",
  "answer" or "reference", "task_type"}`` (the harness keeps its items in
  Hugging Face datasets: export their audio to files and list them so).
- ``airbench`` (AIR-Bench, ``Inference_Chat.py`` / ``Inference_Foundation.py``):
  reads ``Chat_meta.json`` or ``Foundation_meta.json`` (audio under
  ``<data_root>/<task_name>_<dataset_name>/<path>``); writes JSON lines of
  ``path, question, answer_gt, task_name, dataset_name, uniq_id, response``,
  with ``meta_info`` (chat) or ``choice_a``-``choice_d`` (foundation, asked
  with the harness's multiple-choice prompt).
- ``mmau`` (MMAU, ``evaluation.py``): reads ``mmau-test-mini.json`` (audio at
  ``<data_root>/<audio_id>``; the question asked with its choices); writes
  the same list, each item with ``model_prediction``.

Our own test manifests become items too (:func:`BenchmarkFormat.from_row`),
so a trainer's test predictions are written in these formats alongside its
``hypotheses.jsonl``.
"""

import abc
import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Sequence

#: AIR-Bench foundation's instruction before the question and its choices.
AIRBENCH_CHOICE_PROMPT = (
    "Choose the most suitable answer from options A, B, C, and D to respond the question in "
    "next line, you may only choose A or B or C or D."
)


class BenchmarkItem(NamedTuple):
    """One item: its id, audio file, the instruction asked, and its record."""

    id: str
    wav: str
    instruction: str
    record: Dict


def _read_json_list(path) -> List[Dict]:
    with open(path, encoding="utf-8") as f:
        try:
            items = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not JSON: {err}") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{path} is not a JSON list of items")
    return items


def _field(item: Mapping, keys: Sequence[str], path, index: int):
    for key in keys:
        if key in item:
            return item[key]
    raise ValueError(f"{path}, item {index}: no {' or '.join(repr(k) for k in keys)} field")


class BenchmarkFormat(abc.ABC):
    """Reads a harness's items and writes its predictions (see the module docstring)."""

    name = ""
    #: Key of the answer in a written record.
    prediction_key = ""
    #: The written file's extension.
    suffix = ".json"

    @abc.abstractmethod
    def read(self, path, data_root) -> List[BenchmarkItem]:
        """The items of the harness's file ``path``, audio under ``data_root``."""

    @abc.abstractmethod
    def from_row(self, utt_id: str, row: Mapping) -> BenchmarkItem:
        """An item of our manifest row (``wav, task, instruction, answer, source``)."""

    def dump(self, records: List[Dict]) -> str:
        """The file's text for these records (with their predictions)."""
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"

    def write(self, path, items: Sequence[BenchmarkItem], predictions: Sequence[str]) -> Path:
        """Writes the records of ``items`` with ``predictions`` (one per item), whole."""
        if len(items) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(items)} items")
        records = [{**item.record, self.prediction_key: p} for item, p in zip(items, predictions)]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(self.dump(records), encoding="utf-8")
        os.replace(temporary, path)  # a kill leaves the previous file or the new one
        return path


class AudioBenchFormat(BenchmarkFormat):
    """AudioBench's ``format_model_predictions``: the item without its audio."""

    name = "audiobench"
    prediction_key = "model_prediction"

    @staticmethod
    def _record(question: str, reference: str, task_type: str) -> Dict:
        return {"text": question, "instruction": question, "answer": reference,
                "reference": reference, "task_type": task_type}  # fmt: skip

    def read(self, path, data_root):
        items = []
        for index, item in enumerate(_read_json_list(path)):
            question = _field(item, ("text", "instruction"), path, index)
            reference = _field(item, ("answer", "reference"), path, index)
            wav = str(Path(data_root) / _field(item, ("audio",), path, index))
            record = self._record(question, reference, item.get("task_type", ""))
            items.append(BenchmarkItem(str(item.get("id", index)), wav, question, record))
        return items

    def from_row(self, utt_id, row):
        record = self._record(row["instruction"], row["answer"], row["task"].upper())
        return BenchmarkItem(utt_id, row["wav"], row["instruction"], record)


class AIRBenchFormat(BenchmarkFormat):
    """AIR-Bench's result lines, chat or foundation (by the items' fields)."""

    name = "airbench"
    prediction_key = "response"
    suffix = ".jsonl"
    KEYS = ("path", "question", "answer_gt", "task_name", "dataset_name", "uniq_id")
    CHOICES = ("choice_a", "choice_b", "choice_c", "choice_d")

    def read(self, path, data_root):
        items = []
        for index, item in enumerate(_read_json_list(path)):
            record = {key: _field(item, (key,), path, index) for key in self.KEYS}
            folder = f"{record['task_name']}_{record['dataset_name']}"
            wav = Path(data_root) / folder / record["path"]
            if record["task_name"] == "Audio_Grounding":  # its audio is FLAC (as the harness reads)
                wav = wav.with_suffix(".flac")
            question = record["question"]
            if "choice_a" in item:  # foundation: multiple choice
                record.update((key, item.get(key)) for key in self.CHOICES)
                options = "\n".join(
                    f"{letter}. {record[key]}" for letter, key in zip("ABCD", self.CHOICES)
                )
                question = f"{AIRBENCH_CHOICE_PROMPT}\n{record['question']}\n{options}"
            else:
                record["meta_info"] = item.get("meta_info")
            items.append(BenchmarkItem(str(record["uniq_id"]), str(wav), question, record))
        return items

    def from_row(self, utt_id, row):
        record = {"path": row["wav"], "question": row["instruction"], "answer_gt": row["answer"],
                  "task_name": row["task"], "dataset_name": row.get("source", ""),
                  "uniq_id": utt_id}  # fmt: skip
        return BenchmarkItem(utt_id, row["wav"], row["instruction"], record)

    def dump(self, records):
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


class MMAUFormat(BenchmarkFormat):
    """MMAU's benchmark file, each item with its ``model_prediction``."""

    name = "mmau"
    prediction_key = "model_prediction"

    def read(self, path, data_root):
        items = []
        for index, item in enumerate(_read_json_list(path)):
            question = _field(item, ("question",), path, index)
            choices = item.get("choices") or []
            if choices:
                question += " Choose one of: " + "; ".join(str(c) for c in choices) + "."
            wav = Path(data_root) / _field(item, ("audio_id",), path, index)
            items.append(BenchmarkItem(str(item.get("id", index)), str(wav), question, dict(item)))
        return items

    def from_row(self, utt_id, row):
        record = {"id": utt_id, "audio_id": row["wav"], "question": row["instruction"],
                  "choices": [], "answer": row["answer"], "dataset": row.get("source", ""),
                  "task": row["task"]}  # fmt: skip
        return BenchmarkItem(utt_id, row["wav"], row["instruction"], record)


#: The formats by name.
BENCHMARK_FORMATS: Dict[str, BenchmarkFormat] = {
    fmt.name: fmt for fmt in (AudioBenchFormat(), AIRBenchFormat(), MMAUFormat())
}


def benchmark_format(name: str) -> BenchmarkFormat:
    """The format called ``name``.

    Example
    -------
    >>> benchmark_format("mmau").prediction_key
    'model_prediction'
    >>> benchmark_format("superb")
    Traceback (most recent call last):
     ...
    ValueError: Unknown benchmark format 'superb'; the formats are audiobench, airbench, mmau
    """
    if name not in BENCHMARK_FORMATS:
        raise ValueError(
            f"Unknown benchmark format '{name}'; the formats are {', '.join(BENCHMARK_FORMATS)}"
        )
    return BENCHMARK_FORMATS[name]
