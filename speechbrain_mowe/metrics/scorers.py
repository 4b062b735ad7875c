"""The interface shared by the task metrics, and the registry naming them per task.

Every scorer collects ``append(ids, hypotheses, references)`` batches and
reports with :meth:`Scorer.summarize` (numbers) and :meth:`Scorer.summary_lines`
(human-readable results). A task added by a user gets its metric with
:func:`register_scorer`, or from another package through the
``speechbrain_mowe.scorers`` entry-point group (see :mod:`speechbrain_mowe.registry`).

Example
-------
>>> {"aac", "asr", "ast", "er"} <= set(SCORERS.names())
True
>>> scorer = make_scorer("er", labels=["happy", "sad"])
>>> scorer.append(["a", "b"], ["happy", "I am sad"], ["happy", "happy"])
>>> scorer.summarize()["WA"]
50.0
>>> make_scorer("kws")  # doctest: +ELLIPSIS
Traceback (most recent call last):
 ...
KeyError: "Unknown scorer 'kws'. Valid names: aac, asr, ast, er..."
"""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

from speechbrain_mowe.registry import Registry


class Scorer(ABC):
    """Collects hypotheses and references under unique ids, then scores them.

    Subclasses implement :meth:`_add` (validate and store one batch, raising
    before storing anything if the batch is invalid), :meth:`_summarize` and
    :meth:`summary_lines`.
    """

    def __init__(self):
        self.ids: List[str] = []
        self._seen: Set[str] = set()
        self._summary: Optional[Tuple[int, Dict[str, Any]]] = None

    def append(self, ids: Sequence[str], hypotheses: Sequence, references: Sequence) -> None:
        """Adds a batch; every id must be new.

        Arguments
        ---------
        ids : sequence of str
            One id per example, unique over everything appended.
        hypotheses : sequence
            The system outputs, one per example.
        references : sequence
            The references, one entry per example (its form depends on the task).
        """
        ids = list(ids)
        if not len(ids) == len(hypotheses) == len(references):
            raise ValueError(
                f"{type(self).__name__}: {len(ids)} ids, {len(hypotheses)} hypotheses and "
                f"{len(references)} references; they must be as many"
            )
        batch: Set[str] = set()
        for utt_id in ids:
            if utt_id in self._seen or utt_id in batch:
                raise ValueError(f"{type(self).__name__}: id '{utt_id}' was appended twice")
            batch.add(utt_id)
        self._add(ids, list(hypotheses), list(references))
        self.ids.extend(ids)
        self._seen.update(ids)

    def summarize(self) -> Dict[str, Any]:
        """The scores of everything appended so far (computed once per count of
        examples: logging, the summary lines and the result files share them)."""
        if not self.ids:
            raise ValueError(f"{type(self).__name__}: nothing was appended, nothing to score")
        if self._summary is None or self._summary[0] != len(self.ids):
            self._summary = (len(self.ids), self._summarize())
        return dict(self._summary[1])

    def write(self, path_prefix: Union[str, Path]) -> List[Path]:
        """Writes :meth:`summary_lines` to ``<path_prefix>_scores.txt``.

        Arguments
        ---------
        path_prefix : str or Path
            Output files are named ``<path_prefix>_<what>.txt``.

        Returns
        -------
        list of Path
            The files written.
        """
        path = Path(f"{path_prefix}_scores.txt")
        path.write_text("\n".join(self.summary_lines()) + "\n", encoding="utf-8")
        return [path]

    @abstractmethod
    def _add(self, ids: List[str], hypotheses: List, references: List) -> None:
        """Validates and stores one batch (nothing is stored if it is invalid)."""

    @abstractmethod
    def _summarize(self) -> Dict[str, Any]:
        """The scores; called with at least one example appended."""

    @abstractmethod
    def summary_lines(self) -> List[str]:
        """The results as lines of text for logs and result files."""


#: Task name -> scorer factory.
SCORERS = Registry("scorer", Scorer, group="speechbrain_mowe.scorers")


def register_scorer(task: str, factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
    """Makes ``make_scorer(task, ...)`` build ``factory(...)``; returns ``factory``."""
    return SCORERS.register(task)(factory)


def make_scorer(task: str, **options: Any) -> Scorer:
    """The scorer of ``task`` built with ``options``; KeyError lists the known tasks."""
    return SCORERS.build(task, **options)
