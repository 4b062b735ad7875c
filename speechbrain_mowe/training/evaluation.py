"""Evaluation: the record of every evaluated example, scored per (dataset, task).

An :class:`Evaluation` collects, batch by batch, each example's hypothesis,
references, teacher-forced loss and chosen experts; :meth:`Evaluation.finish`
gathers them from every DDP rank (once per example id), scores each
(dataset, task, option values) group with its task's scorer
(:meth:`speechbrain_mowe.tasks.Task.make_scorer`) and returns an
:class:`EvaluationResult`: the numbers, structured, for code (``compare.py``,
tables) and for ``metrics.json``. :meth:`Evaluation.write` also leaves a
readable ``results.txt``, every hypothesis and the scorers' own files.
"""

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from speechbrain_mowe.benchmark_formats import benchmark_format
from speechbrain_mowe.dataio import SkippedClips
from speechbrain_mowe.model import answer_loss
from speechbrain_mowe.tasks import get_task
from speechbrain_mowe.training.distributed import gather_objects
from speechbrain_mowe.training.tally import expert_shares, format_shares


@dataclass
class ScoreGroup:
    """The scores of one (dataset, task, option values) group of examples.

    Arguments
    ---------
    dataset : str
        The source (manifest) the examples came from.
    task : str
        Their task.
    options : dict
        Values of the task's option columns (e.g. ``{"target_language": "de"}``).
    examples : int
        How many examples were scored.
    metrics : dict
        The scorer's numbers (``{"WER": 12.5, ...}``).
    details : dict
        The rest of the scorer's summary (signatures, confusion matrices, ...).
    """

    dataset: str
    task: str
    options: Dict[str, str]
    examples: int
    metrics: Dict[str, float]
    details: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``dataset/task[/option values]``, for logs and file names."""
        return "/".join([self.dataset, self.task, *self.options.values()])


@dataclass
class EvaluationResult:
    """The outcome of one evaluation stage.

    Arguments
    ---------
    name : str
        The test set (``valid`` for validation).
    loss : float
        Answer cross-entropy per answer token over the whole set.
    groups : list of ScoreGroup
        The scores (empty when the stage did not decode).
    routing : dict
        ``{task: {expert: share %}}``: the weak encoders the examples chose.

    Example
    -------
    >>> result = EvaluationResult("test", 1.5, [ScoreGroup("ls", "asr", {}, 3, {"WER": 20.0})],
    ...                           {"asr": {"0:a": 100.0}})
    >>> result.metric("ls", "asr", "WER")
    20.0
    >>> result.log_stats()
    {'loss': 1.5, 'ls/asr/WER': 20.0, 'routing/asr': '0:a 100%'}
    >>> EvaluationResult.from_dict(result.to_dict()) == result
    True
    """

    name: str
    loss: float
    groups: List[ScoreGroup]
    routing: Dict[str, Dict[str, float]]

    def metric(self, dataset: str, task: str, name: str, **options: str) -> float:
        """The value of metric ``name`` for (``dataset``, ``task``), in the group
        whose options match ``options``."""
        found = [
            group
            for group in self.groups
            if (group.dataset, group.task) == (dataset, task)
            and all(group.options.get(key) == value for key, value in options.items())
        ]
        if len(found) != 1:
            known = ", ".join(group.key for group in self.groups) or "none"
            raise KeyError(
                f"{self.name}: {len(found)} groups match {dataset}/{task} {options or ''} "
                f"(scored groups: {known})"
            )
        return found[0].metrics[name]

    def log_stats(self) -> Dict[str, Any]:
        """Flat ``{name: value}`` for SpeechBrain's train logger."""
        stats: Dict[str, Any] = {"loss": round(self.loss, 6)}
        for group in self.groups:
            for metric, value in group.metrics.items():
                stats[f"{group.key}/{metric}"] = round(value, 4)
        for task, shares in self.routing.items():
            stats[f"routing/{task}"] = format_shares(shares)
        return stats

    def to_dict(self) -> Dict[str, Any]:
        """As written to ``metrics.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationResult":
        """Reads what :meth:`to_dict` wrote."""
        groups = [ScoreGroup(**group) for group in data["groups"]]
        return cls(data["name"], data["loss"], groups, dict(data["routing"]))


def read_result(folder) -> EvaluationResult:
    """The result written to ``<folder>/metrics.json`` by :meth:`Evaluation.write`."""
    with open(Path(folder) / "metrics.json", encoding="utf-8") as f:
        return EvaluationResult.from_dict(json.load(f))


class NothingToEvaluate(ValueError):
    """An evaluation set none of whose examples could be used."""


class Evaluation:
    """The records of one evaluation stage, then their scores.

    Arguments
    ---------
    experts : sequence of str
        Names of the model's weak encoders, for the routing shares.
    decoding : bool
        Whether hypotheses are generated (else only the loss is reported).
    """

    def __init__(self, experts: Sequence[str], decoding: bool = True):
        self.experts = list(experts)
        self.decoding = decoding
        self.records: List[Dict[str, Any]] = []
        self.result: Optional[EvaluationResult] = None
        self.scorers: List[Tuple[ScoreGroup, Any]] = []
        self.skipped = SkippedClips()

    def add(self, batch, output, hypotheses: Optional[Sequence[str]] = None) -> None:
        """Records one batch.

        Arguments
        ---------
        batch : PaddedBatch
            With ``id``, ``source``, ``task``, ``answer``, ``references`` and
            the option columns of its tasks.
        output : speechbrain_mowe.model.ModelOutput
            The model's teacher-forced output on the batch.
        hypotheses : sequence of str, optional
            The generated answers (None when not decoding).
        """
        sums, counts = output.answer_sums.tolist(), output.answer_tokens.tolist()
        routing = output.audio.encoded.routing
        experts = routing.experts.tolist() if routing is not None else [[]] * len(batch.id)
        for i, utt_id in enumerate(batch.id):
            task = get_task(batch.task[i])
            self.records.append(
                {
                    "id": utt_id,
                    "source": batch.source[i],
                    "task": task.name,
                    "options": {key: getattr(batch, key)[i] for key in task.option_columns},
                    "hypothesis": None if hypotheses is None else hypotheses[i],
                    "answer": batch.answer[i],
                    "references": list(batch.references[i]),
                    "wav": batch.wav[i],
                    "instruction": batch.instruction[i],
                    "loss_sum": sums[i],
                    "tokens": counts[i],
                    "experts": experts[i],
                }
            )

    def finish(
        self, name: str, scorer_options: Optional[Mapping[str, Mapping]] = None
    ) -> EvaluationResult:
        """Gathers every rank's records (once per id, in id order) and scores them.

        Arguments
        ---------
        name : str
            The test set.
        scorer_options : mapping, optional
            ``{task: {option: value}}`` given to the tasks' scorers (e.g. the
            label set of ``er``).
        """
        unique = {}
        for part in gather_objects(self.records):
            for record in part:
                unique.setdefault(record["id"], record)
        self.records = [unique[key] for key in sorted(unique)]
        parts = gather_objects(self.skipped.state_dict())
        self.skipped.reset()
        for part in parts:
            self.skipped.merge(part)
        if not self.records:
            raise NothingToEvaluate(
                f"The {name} set has no example that could be evaluated: "
                + (
                    f"{self.skipped.summary()}, e.g. {'; '.join(self.skipped.examples)}"
                    if self.skipped.count
                    else "it is empty"
                )
            )
        loss = self.loss("token")
        self.scorers = self._score(scorer_options or {}) if self.decoding else []
        groups = [group for group, _ in self.scorers]
        self.result = EvaluationResult(name, loss, groups, self._routing())
        return self.result

    def loss(self, normalisation: str = "token", tasks: Optional[Sequence[str]] = None) -> float:
        """The answer loss of the records, averaged as training averages a
        batch's (:func:`speechbrain_mowe.model.answer_loss`), over the examples
        of ``tasks`` (default: every example; NaN when none is of them).

        A checkpoint chosen on the ``token`` mean of a multi-task set is chosen
        mostly by its long answers (transcripts, captions); the ``task`` mean
        weighs each task alike, and ``tasks`` leaves out those a stage of
        training does not train.

        Example
        -------
        >>> evaluation = Evaluation([], decoding=False)
        >>> evaluation.records = [
        ...     {"task": "asr", "loss_sum": 8.0, "tokens": 8},
        ...     {"task": "er", "loss_sum": 1.0, "tokens": 1},
        ...     {"task": "er", "loss_sum": 3.0, "tokens": 1}]
        >>> [round(evaluation.loss(n, t), 4) for n, t in (("token", None), ("task", None),
        ...                                               ("task", ["er"]))]
        [1.2, 1.5, 2.0]
        """
        records = [r for r in self.records if tasks is None or r["task"] in tasks]
        if not records:
            return float("nan")
        names = sorted({r["task"] for r in records})
        loss = answer_loss(
            torch.tensor([r["loss_sum"] for r in records], dtype=torch.float64),
            torch.tensor([r["tokens"] for r in records]),
            torch.tensor([names.index(r["task"]) for r in records]),
            normalisation,
        )
        return float(loss)

    def _score(self, scorer_options: Mapping[str, Mapping]) -> List[Tuple[ScoreGroup, Any]]:
        grouped = defaultdict(list)
        for record in self.records:
            options = tuple(record["options"].items())
            grouped[record["source"], record["task"], options].append(record)
        scored = []
        for (source, name, options), records in sorted(grouped.items()):
            task = get_task(name)
            scorer = task.make_scorer(**{**scorer_options.get(name, {}), **dict(options)})
            scorer.append(
                [r["id"] for r in records],
                [r["hypothesis"] for r in records],
                [task.reference(r["answer"], r["references"]) for r in records],
            )
            summary = scorer.summarize()
            numbers = {
                key: float(value)
                for key, value in summary.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)
            }
            details = {key: value for key, value in summary.items() if key not in numbers}
            group = ScoreGroup(source, name, dict(options), len(records), numbers, details)
            scored.append((group, scorer))
        return scored

    def _routing(self) -> Dict[str, Dict[str, float]]:
        counts = defaultdict(lambda: [0] * len(self.experts))
        for record in self.records:
            for expert in record["experts"]:
                counts[record["task"]][expert] += 1
        return {task: expert_shares(self.experts, chosen) for task, chosen in counts.items()}

    def write(self, folder, benchmark_formats: Sequence[str] = ()) -> Path:
        """Writes ``metrics.json``, ``results.txt`` (readable, with the routing),
        ``hypotheses.jsonl``, each scorer's files and the predictions in each of
        ``benchmark_formats`` (``predictions_<format>.json[l]``, see
        :mod:`speechbrain_mowe.benchmark_formats`) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        result = self.result
        with open(folder / "metrics.json", "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2, ensure_ascii=False)
        lines = [f"Test set: {result.name}", f"loss: {result.loss:.6f}"]
        for group, scorer in self.scorers:
            lines.append(f"\n[{group.key}] ({group.examples} examples)")
            lines.extend(scorer.summary_lines())
            scorer.write(str(folder / group.key.replace("/", "_")))
        if result.routing:
            lines.append("\n[weak encoders chosen per task]")
            lines.extend(f"{task}: {format_shares(s)}" for task, s in result.routing.items())
        (folder / "results.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        keep = ("id", "source", "task", "hypothesis", "references")
        with open(folder / "hypotheses.jsonl", "w", encoding="utf-8") as f:
            for record in self.records:
                row = {key: record[key] for key in keep}
                row["references"] = row["references"] or [record["answer"]]
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        for name in benchmark_formats:
            fmt = benchmark_format(name)
            items = [fmt.from_row(record["id"], record) for record in self.records]
            hypotheses = [record["hypothesis"] for record in self.records]
            fmt.write(folder / f"predictions_{name}{fmt.suffix}", items, hypotheses)
        return folder
