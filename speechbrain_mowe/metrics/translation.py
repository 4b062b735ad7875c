"""Speech translation: sacrebleu corpus BLEU with the tokenizer the target language needs."""

import functools
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

from sacrebleu.metrics import BLEU
from sacrebleu.metrics.bleu import BLEUScore

from speechbrain_mowe.metrics.scorers import Scorer

logger = logging.getLogger(__name__)


def bleu_tokenizer(target_language: str) -> str:
    """The sacrebleu tokenizer for text in ``target_language``.

    Chinese is scored on characters (``zh``) and Japanese on MeCab words
    (``ja-mecab``), as both are written without spaces: the default ``13a``
    tokenizer would take each unsegmented sentence as a handful of very long
    "words", so BLEU would only count whole-sentence matches. When sacrebleu's
    Japanese extras (``pip install sacrebleu[ja]``) are missing, Japanese is
    scored on characters (``char``) instead, with a warning logged once; such
    scores are not comparable with ``ja-mecab`` ones. Every other language uses
    ``13a``.

    Arguments
    ---------
    target_language : str
        A language code: ``de``, ``zh-CN``, ``ja``, ``sv-SE``...

    Returns
    -------
    str
        The sacrebleu ``tokenize`` name.

    Example
    -------
    >>> bleu_tokenizer("de"), bleu_tokenizer("zh-TW")
    ('13a', 'zh')
    >>> bleu_tokenizer("ja") in ("ja-mecab", "char")
    True
    """
    base = target_language.replace("_", "-").split("-")[0].lower()
    if base == "zh":
        return "zh"
    if base == "ja":
        return "ja-mecab" if _ja_mecab_available() else "char"
    return "13a"


@functools.cache
def _ja_mecab_available() -> bool:
    try:
        BLEU(tokenize="ja-mecab")
    except Exception as error:  # missing MeCab/ipadic, or a dictionary sacrebleu refuses
        logger.warning(
            "sacrebleu's ja-mecab tokenizer is unusable (%s: %s); Japanese BLEU is computed "
            "on characters (tok:char) instead. Install sacrebleu[ja] for the usual ja-mecab.",
            type(error).__name__,
            " ".join(str(error).split()),
        )
        return False
    return True


class TranslationScorer(Scorer):
    """Corpus BLEU (sacrebleu) with its signature.

    A reference is a string, or a non-empty list of strings for several
    references. Examples may have different numbers of references: the missing
    ones are given to sacrebleu as None, which it skips, and the signature then
    reads ``nrefs:var``.

    Arguments
    ---------
    target_language : str
        Picks the tokenizer with :func:`bleu_tokenizer`.

    Example
    -------
    >>> scorer = TranslationScorer("de")
    >>> hypotheses = ["der Hund bellt laut", "die Katze schläft heute"]
    >>> references = ["der Hund bellt laut", ["eine Katze schläft", "die Katze schläft heute"]]
    >>> scorer.append(["a", "b"], hypotheses, references)
    >>> result = scorer.summarize()
    >>> round(result["BLEU"], 6)
    100.0
    >>> result["signature"].startswith("nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    True
    """

    def __init__(self, target_language: str):
        super().__init__()
        self.target_language = target_language
        self.tokenizer = bleu_tokenizer(target_language)
        self.hypotheses: List[str] = []
        self.references: List[List[str]] = []

    def _add(
        self,
        ids: List[str],
        hypotheses: List[str],
        references: List[Union[str, Sequence[str]]],
    ) -> None:
        refs = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
        for utt_id, ref in zip(ids, refs):
            if not ref or not all(isinstance(text, str) for text in ref):
                raise ValueError(
                    f"Example '{utt_id}': references must be a string or a non-empty list of "
                    f"strings, not {ref!r}"
                )
        self.hypotheses.extend(hypotheses)
        self.references.extend(refs)

    def _score(self) -> Tuple[BLEUScore, str]:
        num_refs = max(len(refs) for refs in self.references)
        streams: List[List[Optional[str]]] = [
            [refs[k] if k < len(refs) else None for refs in self.references]
            for k in range(num_refs)
        ]
        bleu = BLEU(tokenize=self.tokenizer)
        return bleu.corpus_score(self.hypotheses, streams), str(bleu.get_signature())

    def _summarize(self) -> Dict[str, Union[float, str]]:
        result, signature = self._score()
        return {"BLEU": float(result.score), "signature": signature, "tokenizer": self.tokenizer}

    def summary_lines(self) -> List[str]:
        """sacrebleu's score line (n-gram precisions, brevity penalty) and the signature."""
        result, signature = self._score()
        return [str(result), f"signature: {signature}"]
