"""Speech recognition: WER and CER on raw and on Whisper-normalised text.

The error rates are SpeechBrain's :class:`~speechbrain.utils.metric_stats.ErrorRateStats`,
fed as in SpeechBrain's recipes: words are the whitespace-separated tokens,
and the CER splits those words into characters with the word boundaries kept as
``_`` tokens, so a missing or extra space counts as one character error.

The normalised scores pass both sides through Whisper's English text normaliser
first (case, punctuation, contractions, numbers, British spellings), which is
how English ASR results of audio LLMs are usually reported.
"""

import functools
import json
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from speechbrain.utils.metric_stats import ErrorRateStats
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from speechbrain_mowe.metrics.scorers import Scorer

logger = logging.getLogger(__name__)


def english_normalizer(whisper_source: Optional[Union[str, Path]] = None) -> Callable[[str], str]:
    """Whisper's English text normaliser.

    Arguments
    ---------
    whisper_source : str or Path, optional
        A local Whisper checkpoint directory. Its ``normalizer.json`` (shipped
        with the real checkpoints) holds the British -> American spelling
        mapping; without it, spellings are left as they are and this is logged
        once per source. Normalisers are cached per source.

    Returns
    -------
    callable
        Maps a string to its normalised form.

    Example
    -------
    >>> normalize = english_normalizer()
    >>> normalize("Mr. Smith isn't here, hmm.")
    'mister smith is not here'
    """
    source = None if whisper_source is None else str(whisper_source)
    return _cached_normalizer(source)


@functools.cache
def _cached_normalizer(source: Optional[str]) -> EnglishTextNormalizer:
    path = None if source is None else Path(source) / "normalizer.json"
    if path is not None and path.is_file():
        with open(path, encoding="utf-8") as file:
            return EnglishTextNormalizer(json.load(file))
    logger.info(
        "No normalizer.json in %s: British -> American spelling normalisation is off",
        source if source is not None else "(no Whisper source given)",
    )
    return EnglishTextNormalizer({})


class ASRScorer(Scorer):
    """Word and character error rates, raw and normalised, in percent.

    Arguments
    ---------
    normalizer_source : str or Path, optional
        A Whisper checkpoint folder whose ``normalizer.json`` gives the British
        -> American spelling mapping of the normalised scores (see
        :func:`english_normalizer`); without it spellings are kept.

    Example
    -------
    >>> scorer = ASRScorer()
    >>> scorer.append(["u1"], ["Hello, world!"], ["hello world"])
    >>> scores = scorer.summarize()
    >>> scores["WER"], scores["WER_norm"]
    (100.0, 0.0)
    >>> round(scores["CER"], 2)  # 'H', ',' and '!': 3 edits over 11 characters
    27.27
    """

    def __init__(self, normalizer_source: Optional[Union[str, Path]] = None):
        super().__init__()
        self.normalizer = english_normalizer(normalizer_source)
        self.wer = ErrorRateStats()
        self.cer = ErrorRateStats(split_tokens=True)
        self.wer_norm = ErrorRateStats()
        self.cer_norm = ErrorRateStats(split_tokens=True)

    def _add(self, ids: List[str], hypotheses: List[str], references: List[str]) -> None:
        hyp_words = [text.split() for text in hypotheses]
        ref_words = [text.split() for text in references]
        hyp_norm = [self.normalizer(text).split() for text in hypotheses]
        ref_norm = [self.normalizer(text).split() for text in references]
        self.wer.append(ids, hyp_words, ref_words)
        self.cer.append(ids, hyp_words, ref_words)
        self.wer_norm.append(ids, hyp_norm, ref_norm)
        self.cer_norm.append(ids, hyp_norm, ref_norm)

    def _summarize(self) -> Dict[str, float]:
        return {
            "WER": self.wer.summarize("WER"),
            "CER": self.cer.summarize("WER"),
            "WER_norm": self.wer_norm.summarize("WER"),
            "CER_norm": self.cer_norm.summarize("WER"),
        }

    def summary_lines(self) -> List[str]:
        """One line per error rate."""
        return [f"{name}: {value:.2f}" for name, value in self.summarize().items()]

    def write(self, path_prefix: Union[str, Path]) -> List[Path]:
        """:meth:`Scorer.write`, then SpeechBrain's word alignments, raw
        (``<path_prefix>_wer.txt``) and normalised (``<path_prefix>_wer_norm.txt``)."""
        paths = super().write(path_prefix)
        for stats, suffix in ((self.wer, "wer"), (self.wer_norm, "wer_norm")):
            path = Path(f"{path_prefix}_{suffix}.txt")
            stats.summarize()  # write_stats would reuse a summary older than the last append
            with open(path, "w", encoding="utf-8") as file:
                stats.write_stats(file)
            paths.append(path)
        return paths
