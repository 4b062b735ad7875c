"""The real Whisper tiny.en, converted from its CTranslate2 copy, transcribes speech:
sentences of the synthetic grammar spoken by eSpeak NG with several voices."""

import random
import sys

import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0] + "/recipes/Synthetic")
from synthetic_grammar import random_sentence  # noqa: E402
from synthetic_speech import Voice, speak  # noqa: E402

from speechbrain_mowe.lobes import WhisperEncoder  # noqa: E402
from speechbrain_mowe.metrics import ASRScorer  # noqa: E402
from speechbrain_mowe.weights import whisper_tiny_en  # noqa: E402

VOICES = [("en-us", "m1"), ("en", "f2"), ("en-gb-x-rp", "m3"), ("en-us", "f4")]


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    return whisper_tiny_en(tmp_path_factory.mktemp("whisper_tiny_en"))


def test_converted_whisper_tiny_en_transcribes_synthesized_speech(whisper):
    model = WhisperForConditionalGeneration.from_pretrained(whisper).eval()
    processor = WhisperProcessor.from_pretrained(whisper)
    rng = random.Random(7)
    references, clips = [], []
    for index in range(12):
        sentence = random_sentence(rng).english
        accent, variant = VOICES[index % len(VOICES)]
        voice = Voice(accent, variant, rate=165, pitch=50, pitch_range=50, volume=70)
        references.append(sentence)
        clips.append(speak(sentence, voice, seed=index).numpy())
    features = processor(clips, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = model.generate(features, max_new_tokens=40)
    hypotheses = processor.batch_decode(tokens, skip_special_tokens=True)
    scorer = ASRScorer()
    scorer.append([str(i) for i in range(12)], hypotheses, references)
    wer = scorer.summarize()["WER_norm"]
    # Measured here: 24.4% normalised WER on these 12 sentences (most errors are
    # homophones such as "bird" -> "word"; a random model is near 100%). The bound
    # leaves room for greedy decoding to flip a few words on other machines.
    assert wer < 40.0, list(zip(references, hypotheses))
    # The same folder gives the package's encoder lobe its 384-wide, 50 Hz features.
    encoder = WhisperEncoder(str(whisper)).eval()
    feats, _ = encoder(torch.from_numpy(clips[0])[None])
    assert (encoder.output_dim, encoder.frame_rate, encoder.max_seconds) == (384, 50.0, 30.0)
    assert feats.shape[1] == len(clips[0]) // 320
