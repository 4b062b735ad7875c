import pytest
import torch

from speechbrain_mowe.dataio.feature_cache import FeatureCache, encoder_fingerprint
from speechbrain_mowe.lobes import TinyConvEncoder, WhisperEncoder


def _frozen(module):
    return module.requires_grad_(False).eval()


def test_cached_features_equal_the_encoders_and_are_reused(tmp_path, wavs):
    encoder = _frozen(TinyConvEncoder(output_dim=8))
    cache = FeatureCache(tmp_path, encoder)
    batch, lens = wavs
    expected = encoder(batch, lens)
    first = cache.encode(["a", "b", "c"], batch, lens)
    # Reordered and regrouped: read back per example.
    again = cache.encode(["c", "a"], batch[[2, 0], :16000], lens[[2, 0]])
    assert cache.misses == 3 and cache.hits == 2
    for got, want in zip(first, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    frames = int(round(float(lens[2]) * expected[0].shape[1]))
    torch.testing.assert_close(again[0][0, :frames], expected[0][2, :frames])


def test_changed_audio_or_encoder_is_encoded_again(tmp_path, wavs):
    batch, lens = wavs
    encoder = _frozen(TinyConvEncoder(output_dim=8))
    cache = FeatureCache(tmp_path, encoder)
    cache.encode(["a"], batch[:1], lens[:1])
    cache.encode(["a"], batch[:1] * 0.5, lens[:1])  # the clip changed on disk
    assert cache.misses == 2
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    other = FeatureCache(tmp_path, encoder)
    assert other.folder != cache.folder
    other.encode(["a"], batch[:1] * 0.5, lens[:1])
    assert other.misses == 1


def test_whisper_input_mode_changes_the_fingerprint(whisper_dir):
    variable = _frozen(WhisperEncoder(whisper_dir, mode="variable"))
    pad30 = _frozen(WhisperEncoder(whisper_dir, mode="pad30"))
    assert encoder_fingerprint(variable) != encoder_fingerprint(pad30)
    assert encoder_fingerprint(variable) == encoder_fingerprint(
        _frozen(WhisperEncoder(whisper_dir, mode="variable"))
    )


def test_a_trainable_encoder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="frozen encoder"):
        FeatureCache(tmp_path, TinyConvEncoder())


def test_entries_kept_in_memory_are_read_without_files(tmp_path):
    gen = torch.Generator().manual_seed(1)
    batch, lens = torch.randn(2, 8000, generator=gen) * 0.1, torch.tensor([1.0, 0.6])
    cache = FeatureCache(tmp_path, _frozen(TinyConvEncoder(output_dim=8)), keep_in_memory=True)
    first, _ = cache.encode(["a", "b"], batch, lens)
    for path in tmp_path.rglob("*.pt"):
        path.unlink()  # later reads must come from memory
    again, _ = cache.encode(["a", "b"], batch, lens)
    assert torch.equal(again, first) and (cache.misses, cache.hits) == (2, 2)
    cache.encode(["a"], batch[:1] * 0.5, lens[:1])  # other samples: computed again
    assert cache.misses == 3
