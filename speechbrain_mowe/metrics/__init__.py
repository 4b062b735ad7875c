"""Metrics of the tasks: WER/CER, BLEU, emotion accuracies, captioning scores."""

from speechbrain_mowe.metrics.asr import ASRScorer, english_normalizer
from speechbrain_mowe.metrics.captioning import (
    NOT_COMPUTED,
    CaptionScorer,
    bleu_n,
    caption_tokens,
    cider_d,
    rouge_l,
)
from speechbrain_mowe.metrics.classification import UNPARSEABLE, EmotionScorer, parse_label
from speechbrain_mowe.metrics.scorers import SCORERS, Scorer, make_scorer, register_scorer
from speechbrain_mowe.metrics.translation import TranslationScorer, bleu_tokenizer

__all__ = [
    "SCORERS",
    "Scorer",
    "make_scorer",
    "register_scorer",
    "ASRScorer",
    "english_normalizer",
    "NOT_COMPUTED",
    "CaptionScorer",
    "bleu_n",
    "caption_tokens",
    "cider_d",
    "rouge_l",
    "UNPARSEABLE",
    "EmotionScorer",
    "parse_label",
    "TranslationScorer",
    "bleu_tokenizer",
]
