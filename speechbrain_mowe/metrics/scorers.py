"""The interface shared by the task metrics.

Every scorer collects ``append(ids, hypotheses, references)`` batches and
reports with :meth:`Scorer.summarize` (numbers, and details such as a
confusion matrix) and :meth:`Scorer.summary_lines` (human-readable results).
Each task names its scorer (:class:`speechbrain_mowe.tasks.Task`); a task
added by a user may bring its own subclass.
"""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union


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
