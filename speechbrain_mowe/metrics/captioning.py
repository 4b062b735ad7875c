"""Audio captioning: BLEU-1..4, ROUGE-L and CIDEr-D as defined by coco-caption.

The metrics follow the definitions of the coco-caption evaluation used by the
captioning challenges (DCASE, Clotho), written here in plain Python. Two
differences remain. Captions are tokenized by :func:`caption_tokens` (lower
case, punctuation dropped) instead of the Java PTB tokenizer, which also splits
clitics (``dog's`` -> ``dog 's``). And BLEU is not smoothed; see :func:`bleu_n`.

METEOR, SPICE and SPIDEr (the mean of SPICE and CIDEr-D) run coco-caption's
Java 8-13 programs, which this package does not ship; they are not computed.
"""

import math
import re
from collections import Counter
from typing import Dict, List, Sequence, Union

from speechbrain_mowe.metrics.scorers import Scorer

#: Why :class:`CaptionScorer` reports no METEOR, SPICE or SPIDEr.
NOT_COMPUTED = (
    "METEOR, SPICE and SPIDEr were not computed: they need coco-caption's Java 8-13 "
    "programs (METEOR and SPICE jars), which this package does not ship."
)

_PUNCTUATION = re.compile(r"[^\w\s]|_")


def caption_tokens(text: str) -> List[str]:
    """Lower-cased words of ``text``, punctuation replaced by spaces.

    Arguments
    ---------
    text : str
        A caption.

    Returns
    -------
    list of str
        Its words.

    Example
    -------
    >>> caption_tokens("A dog barks; birds sing in the distance.")
    ['a', 'dog', 'barks', 'birds', 'sing', 'in', 'the', 'distance']
    """
    return _PUNCTUATION.sub(" ", text.lower()).split()


def _ngrams(words: Sequence[str], n: int) -> Counter:
    """Counts of the ``n``-grams of ``words``."""
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu_n(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4
) -> List[float]:
    """Corpus BLEU-1 to BLEU-``max_n`` as coco-caption computes them.

    For each order, the n-gram counts of every hypothesis are clipped by their
    largest count in any of the example's references, and summed over the
    corpus. The brevity penalty ``exp(1 - r / c)`` (when ``c < r``) compares the
    total hypothesis length ``c`` with the sum ``r`` of the reference lengths
    closest to each hypothesis length (the shorter one on ties). BLEU-n is the
    geometric mean of the precisions of orders 1 to n times the penalty.

    There is no smoothing: a zero precision makes BLEU-n zero. coco-caption
    instead adds 1e-15 to the matched and 1e-9 to the total counts (and
    lengths), so its scores differ from these by about 1e-9 relative when no
    precision is zero. When one is, coco-caption reports a small positive
    number instead of zero: about 1e-4 for BLEU-4 when no 4-gram matches, and
    (1e-6) ** (1 / 4), about 0.03, when no hypothesis has four words at all.

    Arguments
    ---------
    hypotheses : sequence of str
        One caption per example.
    references : sequence of sequence of str
        The reference captions of each example.
    max_n : int
        Highest n-gram order.

    Returns
    -------
    list of float
        BLEU-1 to BLEU-``max_n``, in [0, 1].

    Example
    -------
    >>> bleu_n(["a dog barks"], [["a dog barks", "a dog barks twice"]], max_n=3)
    [1.0, 1.0, 1.0]
    >>> bleu_n(["a dog"], [["a dog barks"]], max_n=2)  # penalty exp(1 - 3 / 2)
    [0.6065306597126334, 0.6065306597126334]
    """
    matched = [0] * max_n
    total = [0] * max_n
    hyp_length = ref_length = 0
    for hyp, refs in zip(hypotheses, references):
        words = caption_tokens(hyp)
        ref_words = [caption_tokens(ref) for ref in refs]
        hyp_length += len(words)
        ref_length += min((abs(len(ref) - len(words)), len(ref)) for ref in ref_words)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(words, n)
            most = Counter()
            for ref in ref_words:
                most |= _ngrams(ref, n)
            matched[n - 1] += sum(min(count, most[gram]) for gram, count in counts.items())
            total[n - 1] += sum(counts.values())
    if hyp_length == 0:
        return [0.0] * max_n
    penalty = math.exp(1 - ref_length / hyp_length) if hyp_length < ref_length else 1.0
    scores = []
    log_sum = 0.0
    for n in range(max_n):
        if matched[n] == 0:
            scores.extend([0.0] * (max_n - n))
            break
        log_sum += math.log(matched[n] / total[n])
        scores.append(penalty * math.exp(log_sum / (n + 1)))
    return scores


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2
) -> float:
    """Mean ROUGE-L F-score as coco-caption computes it.

    Per example, the LCS precision (over the hypothesis length) and recall (over
    the reference length) are maximised separately over the references, then
    combined as ``(1 + beta^2) P R / (R + beta^2 P)`` (0 if either is 0).

    Arguments
    ---------
    hypotheses : sequence of str
        One caption per example.
    references : sequence of sequence of str
        The reference captions of each example.
    beta : float
        Weight of recall against precision.

    Returns
    -------
    float
        The mean over the examples, in [0, 1].

    Example
    -------
    >>> rouge_l(["a dog barks"], [["a dog barks", "a cat"]])
    1.0
    >>> round(rouge_l(["a dog"], [["a big dog barks"]]), 6)  # P = 1, R = 1/2: 1.22 / 1.94
    0.628866
    """
    scores = []
    for hyp, refs in zip(hypotheses, references):
        words = caption_tokens(hyp)
        precision = recall = 0.0
        for ref in refs:
            ref_words = caption_tokens(ref)
            common = _lcs_length(words, ref_words)
            if common:
                precision = max(precision, common / len(words))
                recall = max(recall, common / len(ref_words))
        if precision and recall:
            f_score = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
        else:
            f_score = 0.0
        scores.append(f_score)
    return sum(scores) / len(scores)


def _tf_idf(words: Sequence[str], n: int, df: Counter, log_examples: float) -> List[Dict]:
    """Per order 1..n, n-gram -> term frequency times ``log(N) - log(max(1, df))``."""
    return [
        {
            gram: count * (log_examples - math.log(max(1, df[gram])))
            for gram, count in _ngrams(words, k).items()
        }
        for k in range(1, n + 1)
    ]


def _clipped_cosine(g_hyp: Dict, g_ref: Dict) -> float:
    """Sum of ``min(g_hyp, g_ref) * g_ref`` over the norms (0 for an all-zero vector)."""
    dot = sum(min(g, g_ref.get(gram, 0.0)) * g_ref.get(gram, 0.0) for gram, g in g_hyp.items())
    norms = math.hypot(*g_hyp.values()) * math.hypot(*g_ref.values())
    return dot / norms if norms else 0.0


def cider_d(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    sigma: float = 6.0,
    n: int = 4,
) -> float:
    """Mean CIDEr-D as coco-caption computes it.

    Document frequencies count, for each n-gram, the examples whose references
    contain it. Each caption becomes, per order, a vector of n-gram term
    frequency times ``log(N) - log(max(1, df))`` over the N examples. A
    hypothesis scores against each reference, per order, the sum over its
    n-grams of ``min(g_hyp, g_ref) * g_ref`` divided by the product of the two
    vector norms (when neither is zero), times the length penalty
    ``exp(-(len_hyp - len_ref)^2 / (2 sigma^2))`` in words; the scores are
    averaged over the orders and the references, and multiplied by 10.
    (coco-caption measures the lengths in bigrams, which gives the same
    difference unless one of the captions is empty.)

    Arguments
    ---------
    hypotheses : sequence of str
        One caption per example.
    references : sequence of sequence of str
        The reference captions of each example.
    sigma : float
        Width of the Gaussian length penalty, in words.
    n : int
        Highest n-gram order.

    Returns
    -------
    float
        The mean over the examples (0 to about 10).

    Example
    -------
    >>> hyps = ["a dog barks", "rain falls"]
    >>> refs = [["a dog barks"], ["rain falls"]]
    >>> cider_d(hyps, refs, n=2)  # each caption is its reference: cosines of 1, no penalty
    10.0
    >>> cider_d(hyps[:1], refs[:1])  # one example: every idf is log(1) = 0
    0.0
    """
    ref_words = [[caption_tokens(ref) for ref in refs] for refs in references]
    df = Counter()
    for refs in ref_words:
        df.update({gram for ref in refs for k in range(1, n + 1) for gram in _ngrams(ref, k)})
    log_examples = math.log(len(ref_words))
    scores = []
    for hyp, refs in zip(hypotheses, ref_words):
        words = caption_tokens(hyp)
        hyp_vectors = _tf_idf(words, n, df, log_examples)
        total = 0.0
        for ref in refs:
            ref_vectors = _tf_idf(ref, n, df, log_examples)
            penalty = math.exp(-((len(words) - len(ref)) ** 2) / (2 * sigma**2))
            total += penalty * sum(map(_clipped_cosine, hyp_vectors, ref_vectors))
        scores.append(10.0 * total / (n * len(refs)))
    return sum(scores) / len(scores)


class CaptionScorer(Scorer):
    """BLEU-1..4, ROUGE-L and CIDEr-D of captions against several references each.

    Scores are in [0, 1] (CIDEr-D up to about 10), like coco-caption's. The
    summary's ``not_computed`` says why METEOR, SPICE and SPIDEr are missing.

    Example
    -------
    >>> scorer = CaptionScorer()
    >>> scorer.append(["a"], ["A dog barks."], [["a dog barks", "a dog is barking"]])
    >>> scores = scorer.summarize()
    >>> scores["BLEU_1"], scores["ROUGE_L"]
    (1.0, 1.0)
    """

    def __init__(self):
        super().__init__()
        self.hypotheses: List[str] = []
        self.references: List[List[str]] = []

    def _add(self, ids: List[str], hypotheses: List[str], references: List[Sequence[str]]) -> None:
        for utt_id, refs in zip(ids, references):
            if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
                raise ValueError(
                    f"Example '{utt_id}': references must be a non-empty list of captions, "
                    f"not {refs!r}"
                )
        self.hypotheses.extend(hypotheses)
        self.references.extend(list(refs) for refs in references)

    def _summarize(self) -> Dict[str, Union[float, str]]:
        bleus = bleu_n(self.hypotheses, self.references)
        scores: Dict[str, Union[float, str]] = {
            f"BLEU_{k}": score for k, score in enumerate(bleus, start=1)
        }
        scores["ROUGE_L"] = rouge_l(self.hypotheses, self.references)
        scores["CIDEr_D"] = cider_d(self.hypotheses, self.references)
        scores["not_computed"] = NOT_COMPUTED
        return scores

    def summary_lines(self) -> List[str]:
        """One line per metric, then the note on the metrics not computed."""
        scores = self.summarize()
        note = scores.pop("not_computed")
        return [f"{name}: {value:.4f}" for name, value in scores.items()] + [note]
