"""Metrics of the tasks: WER/CER, BLEU, label accuracies, captioning scores."""

from speechbrain_mowe.metrics.asr import ASRScorer, english_normalizer
from speechbrain_mowe.metrics.captioning import (
    NOT_COMPUTED,
    CaptionScorer,
    bleu_n,
    caption_tokens,
    cider_d,
    rouge_l,
)
from speechbrain_mowe.metrics.classification import UNPARSEABLE, LabelScorer, parse_label
from speechbrain_mowe.metrics.scorers import Scorer
from speechbrain_mowe.metrics.translation import TranslationScorer, bleu_tokenizer

__all__ = [
    "Scorer",
    "ASRScorer",
    "english_normalizer",
    "NOT_COMPUTED",
    "CaptionScorer",
    "bleu_n",
    "caption_tokens",
    "cider_d",
    "rouge_l",
    "UNPARSEABLE",
    "LabelScorer",
    "parse_label",
    "TranslationScorer",
    "bleu_tokenizer",
]
