"""Classification (emotions, speaker sex, ...): free-text answers mapped to labels,
weighted and unweighted accuracy."""

import re
from statistics import mean
from typing import Dict, List, Optional, Sequence, Tuple, Union

from speechbrain_mowe.metrics.scorers import Scorer

#: Confusion-matrix column of the answers that name no label, or several.
UNPARSEABLE = "<unparseable>"

_EDGE_SYMBOLS = re.compile(r"^[\W_]+|[\W_]+$")


def _label_pattern(label: str) -> "re.Pattern[str]":
    """The label as whole words, any whitespace between its words."""
    words = r"\s+".join(re.escape(word) for word in label.lower().split())
    return re.compile(rf"(?<!\w){words}(?!\w)")


def _inside_another(span: Tuple[int, int], others: List[Tuple[int, int]]) -> bool:
    return any(o[0] <= span[0] and span[1] <= o[1] and o != span for o in others)


def parse_label(answer: str, labels: Sequence[str]) -> Optional[str]:
    """The label a free-text answer names, or None if it names none or several.

    Matching ignores case. An answer that is a label once the punctuation and
    whitespace around it are stripped is that label; otherwise the answer must
    contain exactly one of the labels as whole words (``unhappy`` does not name
    ``happy``). A label found only inside a longer label found in the answer
    (``sad`` in ``very sad``) does not count. Negations are not understood:
    ``not angry`` names ``angry``.

    Arguments
    ---------
    answer : str
        The model's answer.
    labels : sequence of str
        The label set; labels may have several words.

    Returns
    -------
    str or None
        The label as written in ``labels``, or None when the answer is unparseable.

    Example
    -------
    >>> labels = ["neutral", "happy", "angry", "sad"]
    >>> parse_label(" Angry. ", labels)
    'angry'
    >>> parse_label("I think the speaker sounds angry.", labels)
    'angry'
    >>> parse_label("Happy, or maybe sad.", labels) is None
    True
    >>> parse_label("The speaker is unhappy.", labels) is None
    True
    """
    text = answer.lower()
    bare = " ".join(_EDGE_SYMBOLS.sub("", text).split())
    for label in labels:
        if bare == " ".join(label.lower().split()):
            return label
    spans = {label: [m.span() for m in _label_pattern(label).finditer(text)] for label in labels}
    named = set()
    for label, found in spans.items():
        others = [span for other, its in spans.items() if other != label for span in its]
        if any(not _inside_another(span, others) for span in found):
            named.add(label)
    return named.pop() if len(named) == 1 else None


class LabelScorer(Scorer):
    """Weighted (WA) and unweighted (UA) accuracy of answers parsed with :func:`parse_label`.

    WA is the overall accuracy; UA is the mean recall of the classes that occur
    in the references, so every class weighs the same whatever its frequency.
    Unparseable answers count as errors and are reported with their ids.

    Arguments
    ---------
    labels : sequence of str, optional
        The label set. By default, the sorted set of the references appended.
        References outside a given label set are refused.

    Example
    -------
    >>> scorer = LabelScorer(labels=["happy", "sad"])
    >>> scorer.append(["a", "b", "c"], ["Happy!", "happy", "no idea"], ["happy", "happy", "sad"])
    >>> scores = scorer.summarize()
    >>> round(scores["WA"], 2), scores["UA"], scores["unparseable_ids"]
    (66.67, 50.0, ['c'])
    >>> scores["confusion"]["sad"]
    {'happy': 0, 'sad': 0, '<unparseable>': 1}
    """

    def __init__(self, labels: Optional[Sequence[str]] = None):
        super().__init__()
        if labels is not None and (not labels or len(set(labels)) != len(labels)):
            raise ValueError(f"labels must be distinct and not empty, not {labels!r}")
        self.labels = None if labels is None else list(labels)
        self.hypotheses: List[str] = []
        self.references: List[str] = []

    def _add(self, ids: List[str], hypotheses: List[str], references: List[str]) -> None:
        if self.labels is not None:
            for utt_id, ref in zip(ids, references):
                if ref not in self.labels:
                    raise ValueError(
                        f"Example '{utt_id}': reference {ref!r} is not one of the labels "
                        f"{self.labels}"
                    )
        self.hypotheses.extend(hypotheses)
        self.references.extend(references)

    def _summarize(self) -> Dict[str, Union[float, int, list, dict]]:
        labels = self.labels if self.labels is not None else sorted(set(self.references))
        confusion = {ref: dict.fromkeys([*labels, UNPARSEABLE], 0) for ref in labels}
        unparseable_ids = []
        for utt_id, hyp, ref in zip(self.ids, self.hypotheses, self.references):
            predicted = parse_label(hyp, labels)
            if predicted is None:
                unparseable_ids.append(utt_id)
            confusion[ref][UNPARSEABLE if predicted is None else predicted] += 1
        correct = sum(confusion[label][label] for label in labels)
        recalls = [
            confusion[label][label] / sum(confusion[label].values())
            for label in labels
            if sum(confusion[label].values())
        ]
        return {
            "WA": 100.0 * correct / len(self.ids),
            "UA": 100.0 * mean(recalls),
            "unparseable": len(unparseable_ids),
            "unparseable_ids": unparseable_ids,
            "confusion": confusion,
            "labels": list(labels),
        }

    def summary_lines(self) -> List[str]:
        """The accuracies, the unparseable count and the confusion matrix as a table."""
        scores = self.summarize()
        columns = [*scores["labels"], UNPARSEABLE]
        table = [["reference \\ predicted", *columns]] + [
            [ref, *(str(row[column]) for column in columns)]
            for ref, row in scores["confusion"].items()
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(columns) + 1)]
        header = (
            f"WA: {scores['WA']:.2f}  UA: {scores['UA']:.2f}  "
            f"unparseable: {scores['unparseable']} of {len(self.ids)}"
        )
        return [header] + [
            " ".join([row[0].ljust(widths[0]), *map(str.rjust, row[1:], widths[1:])])
            for row in table
        ]
