"""Task metrics against values worked out by hand."""

import json
import logging
import math
from importlib.util import find_spec

import pytest
import sacrebleu

from speechbrain_mowe.metrics import (
    NOT_COMPUTED,
    ASRScorer,
    CaptionScorer,
    LabelScorer,
    TranslationScorer,
    bleu_n,
    bleu_tokenizer,
    caption_tokens,
    cider_d,
    english_normalizer,
    parse_label,
    rouge_l,
)
from speechbrain_mowe.metrics import asr as asr_module
from speechbrain_mowe.metrics import translation as translation_module

# ---------------------------------------------------------------- ASR


def test_wer_counts_one_substitution_and_one_deletion():
    scorer = ASRScorer()
    scorer.append(["u1"], ["the cat sit on mat"], ["the cat sat on the mat"])
    scores = scorer.summarize()
    # sat -> sit (1 substitution), second "the" missing (1 deletion): 2 / 6 words
    assert scores["WER"] == pytest.approx(100 * 2 / 6)
    # characters with "_" for spaces: "the_cat_sat_on_the_mat" has 22; "a" -> "i" and the
    # deleted "the_" make 1 + 4 = 5 edits
    assert scores["CER"] == pytest.approx(100 * 5 / 22)


def test_cer_counts_spaces():
    scorer = ASRScorer()
    scorer.append(["u1", "u2"], ["the bat", "thecat"], ["the cat", "the cat"])
    # "the_cat" is 7 characters: c -> b is 1 substitution; the missing space is 1 deletion
    assert scorer.summarize()["CER"] == pytest.approx(100 * (1 + 1) / (7 + 7))


def test_normalised_scores_ignore_case_punctuation_and_abbreviations():
    scorer = ASRScorer()
    scorer.append(["u1"], ["mister smith is here"], ["Mr. Smith is here."])
    scores = scorer.summarize()
    # raw: Mr. / mister, Smith / smith, here. / here are 3 substitutions over 4 words
    assert scores["WER"] == pytest.approx(75.0)
    assert scores["CER"] > 0
    # both sides normalise to "mister smith is here"
    assert scores["WER_norm"] == scores["CER_norm"] == 0.0


def test_text_empty_after_normalisation_is_scored():
    scorer = ASRScorer()
    scorer.append(["u1", "u2"], ["hmm", "a b"], ["Um.", "a c"])
    scores = scorer.summarize()
    # normalised, u1 is empty on both sides (0 words) and u2 has 1 error over 2 words
    assert scores["WER_norm"] == pytest.approx(50.0)
    assert scores["CER_norm"] == pytest.approx(100 * 1 / 3)


def test_alignments_are_written(tmp_path):
    scorer = ASRScorer()
    scorer.append(["u1"], ["the cat sit on mat"], ["The cat sat on the mat."])
    paths = scorer.write(tmp_path / "test")
    assert [p.name for p in paths] == ["test_scores.txt", "test_wer.txt", "test_wer_norm.txt"]
    # raw: The / the, sat / sit, mat. / mat substituted, "the" deleted: 4 / 6
    assert "%WER 66.67 [ 4 / 6" in (tmp_path / "test_wer.txt").read_text()
    # normalised: sat / sit substituted, "the" deleted: 2 / 6
    assert "%WER 33.33 [ 2 / 6" in (tmp_path / "test_wer_norm.txt").read_text()
    assert "WER_norm: 33.33" in (tmp_path / "test_scores.txt").read_text()


def test_spelling_mapping_comes_from_normalizer_json(tmp_path, caplog):
    asr_module._cached_normalizer.cache_clear()
    (tmp_path / "normalizer.json").write_text(json.dumps({"colour": "color"}))
    assert english_normalizer(tmp_path)("The colour.") == "the color"
    assert english_normalizer(str(tmp_path)) is english_normalizer(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.INFO, logger=asr_module.__name__):
        assert english_normalizer(empty)("The colour.") == "the colour"
        english_normalizer(empty)
    assert sum("spelling normalisation is off" in r.message for r in caplog.records) == 1


# ---------------------------------------------------------------- translation


def test_bleu_matches_hand_computed_value():
    scorer = TranslationScorer("de")
    scorer.append(
        ["s1", "s2"],
        ["the cat sat on the mat", "a dog barks"],
        ["the cat sat on a mat", "a dog barks loudly"],
    )
    result = scorer.summarize()
    # s1 against "the cat sat on a mat":
    #   1-grams 5/6 ("the" twice, once in the reference), 2-grams 3/5 (the cat, cat sat,
    #   sat on), 3-grams 2/4 (the cat sat, cat sat on), 4-grams 1/3 (the cat sat on)
    # s2 against "a dog barks loudly": 3/3, 2/2, 1/1, 0/0
    # corpus: p1 = 8/9, p2 = 5/7, p3 = 3/5, p4 = 1/3, product 120/945 = 8/63
    # lengths: hypotheses 6 + 3 = 9, references 6 + 4 = 10: BP = exp(1 - 10/9)
    expected = 100 * math.exp(1 - 10 / 9) * (8 / 63) ** (1 / 4)
    assert result["BLEU"] == pytest.approx(expected, abs=1e-6)
    assert result["signature"] == (
        f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    )
    assert result["tokenizer"] == "13a"
    assert scorer.summary_lines()[1] == f"signature: {result['signature']}"


def test_references_may_differ_in_number():
    scorer = TranslationScorer("fr")
    scorer.append(
        ["s1", "s2"],
        ["the cat sat on the mat", "a dog barks"],
        [["the cat sat on a mat", "the cat sat on the mat"], "a dog barks loudly"],
    )
    result = scorer.summarize()
    # s1 matches its second reference exactly: every precision is 1 (9/9, 7/7, 5/5, 3/3);
    # closest reference lengths 6 + 4 = 10 against 9 words: BLEU = 100 exp(1 - 10/9)
    assert result["BLEU"] == pytest.approx(100 * math.exp(1 - 10 / 9), abs=1e-6)
    assert result["signature"].startswith("nrefs:var|")
    with pytest.raises(ValueError, match="'s3'"):
        scorer.append(["s3"], ["x"], [[]])


def test_tokenizer_follows_the_target_language(caplog):
    assert [bleu_tokenizer(code) for code in ("zh", "zh-CN", "zh-TW")] == ["zh"] * 3
    assert bleu_tokenizer("de") == bleu_tokenizer("sv-SE") == "13a"
    scorer = TranslationScorer("zh-CN")
    scorer.append(["s1"], ["我爱你"], ["我爱你"])
    assert "|tok:zh|" in scorer.summarize()["signature"]

    translation_module._ja_mecab_available.cache_clear()
    mecab = find_spec("MeCab") is not None and find_spec("ipadic") is not None
    with caplog.at_level(logging.WARNING, logger=translation_module.__name__):
        assert bleu_tokenizer("ja") == bleu_tokenizer("ja-JP") == ("ja-mecab" if mecab else "char")
    warnings = [r for r in caplog.records if "ja-mecab" in r.message]
    assert len(warnings) == (0 if mecab else 1)


# ---------------------------------------------------------------- emotion

LABELS = ["neutral", "happy", "angry", "sad"]


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("Angry", "angry"),
        ("  happy. ", "happy"),
        ("I think the speaker sounds angry.", "angry"),
        ("Happy or angry, hard to say.", None),
        ("The speaker is unhappy.", None),
        ("No idea.", None),
        ("sad, sad and sad", "sad"),
    ],
)
def test_parse_label(answer, expected):
    assert parse_label(answer, LABELS) == expected


def test_parse_multi_word_labels():
    labels = ["sad", "very sad", "not sure"]
    assert parse_label("Very  SAD!", labels) == "very sad"
    # "sad" occurs only inside "very sad", so the answer names one label
    assert parse_label("The speaker is very sad.", labels) == "very sad"
    assert parse_label("sad, maybe very sad", labels) is None
    assert parse_label("I am not sure", labels) == "not sure"


def test_weighted_and_unweighted_accuracy():
    scorer = LabelScorer(labels=LABELS)
    scorer.append(
        ["n1", "n2", "n3", "n4", "h1", "h2", "a1"],
        [
            "neutral",
            "The speaker sounds neutral.",
            "Neutral",
            "happy",
            "happy",
            "happy or angry",
            "I think the speaker sounds angry.",
        ],
        ["neutral"] * 4 + ["happy"] * 2 + ["angry"],
    )
    scores = scorer.summarize()
    # correct: n1 n2 n3, h1, a1 = 5 of 7
    assert scores["WA"] == pytest.approx(100 * 5 / 7)
    # recalls: neutral 3/4, happy 1/2, angry 1/1 ("sad" has no reference and is left out)
    assert scores["UA"] == pytest.approx(100 * (3 / 4 + 1 / 2 + 1) / 3)
    assert scores["unparseable"] == 1 and scores["unparseable_ids"] == ["h2"]
    zeros = dict.fromkeys([*LABELS, "<unparseable>"], 0)
    assert scores["confusion"] == {
        "neutral": {**zeros, "neutral": 3, "happy": 1},
        "happy": {**zeros, "happy": 1, "<unparseable>": 1},
        "angry": {**zeros, "angry": 1},
        "sad": zeros,
    }
    assert scores["labels"] == LABELS
    lines = scorer.summary_lines()
    assert lines[0] == "WA: 71.43  UA: 75.00  unparseable: 1 of 7"
    assert lines[2].split() == ["neutral", "3", "1", "0", "0", "0"]


def test_label_set_defaults_to_the_references():
    scorer = LabelScorer()
    scorer.append(["a", "b", "c"], ["sad", "angry", "sad"], ["sad", "sad", "neutral"])
    scores = scorer.summarize()
    # labels {neutral, sad}: "angry" is not one of them, so b is unparseable
    assert scores["labels"] == ["neutral", "sad"]
    assert scores["unparseable_ids"] == ["b"]
    assert scores["WA"] == pytest.approx(100 / 3)
    # recalls: neutral 0/1, sad 1/2
    assert scores["UA"] == pytest.approx(25.0)


def test_reference_outside_the_label_set_is_refused():
    scorer = LabelScorer(labels=LABELS)
    with pytest.raises(ValueError, match="'x7'.*'excited'"):
        scorer.append(["x7"], ["happy"], ["excited"])
    assert scorer.ids == []


# ---------------------------------------------------------------- captioning

HYPS = ["A dog barks twice.", "rain falls"]
REFS = [["a dog barks loudly", "The dog barks!"], ["heavy rain falls", "the rain is falling"]]


def test_caption_tokens():
    assert caption_tokens("The dog's bark, then -- silence!") == [
        "the",
        "dog",
        "s",
        "bark",
        "then",
        "silence",
    ]


def test_bleu_n_worked_example():
    # example 1: 4 words; closest reference "a dog barks loudly" (4 words)
    #   1-grams a dog barks match, twice not: 3/4; 2-grams a dog, dog barks: 2/3
    #   3-grams a dog barks: 1/2; 4-gram: 0/1
    # example 2: 2 words; references of 3 and 4 words, closest 3
    #   1-grams 2/2, 2-grams "rain falls" 1/1, no 3- or 4-grams
    # corpus: p1 = 5/6, p2 = 3/4, p3 = 1/2, p4 = 0/1; c = 6, r = 4 + 3 = 7
    # BP = exp(1 - 7/6) = exp(-1/6)
    bp = math.exp(-1 / 6)
    expected = [bp * 5 / 6, bp * (5 / 6 * 3 / 4) ** (1 / 2), bp * (5 / 6 * 3 / 4 / 2) ** (1 / 3), 0]
    assert bleu_n(HYPS, REFS) == pytest.approx(expected, abs=1e-6)


def test_bleu_n_ties_take_the_shorter_reference():
    # 3 words, references of 4 and 2 words: both 1 away, 2 is taken, c > r and BP = 1
    assert bleu_n(["a dog barks"], [["a dog barks loudly", "dog barks"]])[:3] == [1.0] * 3


def test_rouge_l_worked_example():
    # example 1: LCS with "a dog barks loudly" is 3 (P = 3/4, R = 3/4), with "the dog barks"
    #   2 (P = 2/4, R = 2/3): P = max = 3/4, R = max = 3/4, F = 3/4 as P = R
    # example 2: LCS with "heavy rain falls" is 2 (P = 1, R = 2/3), with "the rain is
    #   falling" 1 (P = 1/2, R = 1/4): P = 1, R = 2/3
    #   F = (1 + 1.44) * 1 * 2/3 / (2/3 + 1.44 * 1) = 4.88 / 6.32
    assert rouge_l(HYPS, REFS) == pytest.approx((3 / 4 + 4.88 / 6.32) / 2, abs=1e-6)


def test_cider_d_worked_example():
    # N = 2 examples. Reference n-grams by example (df counts examples):
    #   example 1: a dog barks loudly the | a_dog dog_barks barks_loudly the_dog |
    #              a_dog_barks dog_barks_loudly the_dog_barks | a_dog_barks_loudly
    #   example 2: heavy rain falls the is falling | heavy_rain rain_falls the_rain rain_is
    #              is_falling | heavy_rain_falls the_rain_is rain_is_falling |
    #              the_rain_is_falling
    # Only "the" is in both (df = 2, idf = log 2 - log 2 = 0). Every other reference n-gram
    # has df = 1 and the hypothesis-only ones (twice, barks_twice...) df = 0 -> max(1, 0) = 1,
    # so their idf is log 2 - log 1 = log 2 =: L. Each n-gram occurs once per caption, so
    # every vector entry is L (or 0 for "the") and L cancels in the cosines, which become
    # (shared n-grams other than "the") / sqrt(n-grams of hyp * n-grams of ref, less "the").
    #
    # example 1, hyp "a dog barks twice": n-grams per order 4, 3, 2, 1
    #   vs "a dog barks loudly" (4, 3, 2, 1 n-grams): shared 3, 2, 1, 0
    #     cosines 3/sqrt(4*4), 2/sqrt(3*3), 1/sqrt(2*2), 0 = 3/4, 2/3, 1/2, 0
    #     lengths 4 and 4: penalty exp(0) = 1
    #   vs "the dog barks" (orders 1-3 have 2, 2, 1 n-grams other than "the"; "the" has
    #     g = 0 and adds nothing to the norm): shared dog barks (2), dog_barks (1), none
    #     cosines 2/sqrt(4*2), 1/sqrt(3*2), 0, 0 (empty 4-gram vector: no division)
    #     lengths 4 and 3: penalty exp(-1 / (2 * 36)) = exp(-1/72)
    #   score = 10 * (mean over orders, averaged over the 2 references)
    ex1 = 10 * ((3 / 4 + 2 / 3 + 1 / 2) / 4 + (2 / 8**0.5 + 1 / 6**0.5) / 4 * math.exp(-1 / 72)) / 2
    # example 2, hyp "rain falls": n-grams per order 2, 1, 0, 0
    #   vs "heavy rain falls" (3, 2, 1, 0): shared 2, 1 -> 2/sqrt(2*3), 1/sqrt(1*2)
    #     lengths 2 and 3: penalty exp(-1/72)
    #   vs "the rain is falling" (3 unigrams other than "the", 3 bigrams): shared rain only
    #     -> 1/sqrt(2*3), 0; lengths 2 and 4: penalty exp(-4/72)
    ex2 = (
        10
        * ((2 / 6**0.5 + 1 / 2**0.5) / 4 * math.exp(-1 / 72) + (1 / 6**0.5) / 4 * math.exp(-4 / 72))
        / 2
    )
    # ex1 = 3.770797..., ex2 = 2.360969...
    assert cider_d(HYPS, REFS) == pytest.approx((ex1 + ex2) / 2, abs=1e-6)
    assert cider_d(HYPS, REFS) == pytest.approx(3.065883, abs=1e-6)


def test_caption_scorer_summary():
    scorer = CaptionScorer()
    scorer.append(["c1", "c2"], HYPS, REFS)
    scores = scorer.summarize()
    assert [scores[f"BLEU_{k}"] for k in range(1, 5)] == bleu_n(HYPS, REFS)
    assert scores["ROUGE_L"] == rouge_l(HYPS, REFS)
    assert scores["CIDEr_D"] == cider_d(HYPS, REFS)
    assert scores["not_computed"] == NOT_COMPUTED
    assert "METEOR, SPICE and SPIDEr" in NOT_COMPUTED and "Java" in NOT_COMPUTED
    assert scorer.summary_lines()[-1] == NOT_COMPUTED


def test_identical_captions_score_one():
    scorer = CaptionScorer()
    refs = [["a man speaks while birds sing"] * 2, ["water runs into a metal sink"] * 2]
    scorer.append(["c1", "c2"], [refs[0][0], refs[1][0]], refs)
    scores = scorer.summarize()
    assert [scores[f"BLEU_{k}"] for k in range(1, 5)] == [1.0] * 4
    assert scores["ROUGE_L"] == 1.0
    # "a" is in both examples (idf 0) but the cosines of identical vectors are still 1
    assert scores["CIDEr_D"] == pytest.approx(10.0)


def test_empty_caption_scores_zero():
    scorer = CaptionScorer()
    scorer.append(["c1", "c2"], ["", "..."], [["a dog barks"], ["rain"]])
    scores = scorer.summarize()
    assert [scores[k] for k in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr_D")] == [0.0] * 4


# ---------------------------------------------------------------- interface


@pytest.mark.parametrize(
    "scorer,reference",
    [
        (ASRScorer(), "a"),
        (TranslationScorer("de"), "a"),
        (LabelScorer(), "a"),
        (CaptionScorer(), ["a"]),
    ],
)
def test_duplicate_ids_are_refused(scorer, reference):
    scorer.append(["u1"], ["a"], [reference])
    with pytest.raises(ValueError, match="'u1'"):
        scorer.append(["u2", "u1"], ["a", "a"], [reference, reference])
    with pytest.raises(ValueError, match="'u3'"):
        scorer.append(["u3", "u3"], ["a", "a"], [reference, reference])
    assert scorer.ids == ["u1"]
    scorer.append(["u2"], ["a"], [reference])
    assert scorer.ids == ["u1", "u2"]
    with pytest.raises(ValueError, match="as many"):
        scorer.append(["u4"], ["a", "b"], [reference])


def test_nothing_to_score():
    with pytest.raises(ValueError, match="nothing was appended"):
        LabelScorer().summarize()
