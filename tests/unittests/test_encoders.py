import logging

import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperModel

from speechbrain_mowe.lobes import (
    ENCODERS,
    AudioEncoder,
    BEATsEncoder,
    HuBERTEncoder,
    MoWEEncoder,
    TinyConvEncoder,
    Wav2Vec2Encoder,
    WavLMEncoder,
    WhisperEncoder,
    build_encoder,
    spec_augment,
)
from speechbrain_mowe.registry import Registry
from speechbrain_mowe.tiny import make_tiny_beats


def _alone_vs_batched(encoder, wavs, rel_lens, atol):
    """Each example encoded alone equals its rows in the padded batch."""
    feats, lens = encoder(wavs, rel_lens)
    frames = torch.round(lens * feats.shape[1]).long()
    for i in range(wavs.shape[0]):
        n = int(torch.round(rel_lens[i] * wavs.shape[1]))
        alone, alone_lens = encoder(wavs[i : i + 1, :n])
        assert alone.shape[1] == frames[i], "lengths must be exact"
        assert float(alone_lens) == 1.0
        torch.testing.assert_close(feats[i, : frames[i]], alone[0], atol=atol, rtol=0)
        assert torch.all(feats[i, frames[i] :] == 0)
    return feats, frames


def test_tiny_conv_shapes_lengths_and_backward(wavs):
    encoder = TinyConvEncoder()
    assert 10_000 < sum(p.numel() for p in encoder.parameters()) < 100_000
    feats, frames = _alone_vs_batched(encoder, *wavs, atol=1e-5)
    assert feats.shape == (3, 25, encoder.output_dim)
    # 100 mel frames per second, two stride-2 layers: ceil(ceil(n / 2) / 2)
    assert frames.tolist() == [25, 16, 8]
    assert encoder.frame_rate == 25.0
    feats.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())


def test_whisper_variable_mode_is_padding_invariant(whisper_dir, wavs):
    encoder = WhisperEncoder(whisper_dir, mode="variable").eval()
    feats, frames = _alone_vs_batched(encoder, *wavs, atol=1e-5)
    # one frame per 20 ms: num_samples // 160 mel frames, then stride 2
    assert frames.tolist() == [50, 31, 16]
    assert feats.shape == (3, 50, 64)
    assert encoder.frame_rate == 50.0 and encoder.max_seconds == 30.0
    encoder.train()
    encoder(*wavs)[0].sum().backward()
    assert all(p.grad is not None for p in encoder.encoder.layers.parameters())


def test_whisper_pad30_mode_matches_huggingface(whisper_dir, wavs):
    batch, rel_lens = wavs
    encoder = WhisperEncoder(whisper_dir, mode="pad30").eval()
    feats, lens = encoder(batch, rel_lens)
    # Trimmed to the longest clip's frames (1 s: 50), not Whisper's 1500.
    assert feats.shape == (3, 50, 64)
    with torch.no_grad():
        untrimmed, _ = encoder.encode(batch, (rel_lens * batch.shape[1]).round().long())
    assert untrimmed.shape[1] == 1500
    torch.testing.assert_close(feats[0], untrimmed[0, :50], atol=0, rtol=0)
    extractor = WhisperFeatureExtractor.from_pretrained(whisper_dir)
    reference = WhisperModel.from_pretrained(whisper_dir).encoder.eval()
    n = int(rel_lens[1] * 16000)
    mel = extractor(batch[1, :n].numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = reference(mel.input_features).last_hidden_state
    valid = int(torch.round(lens[1] * feats.shape[1]))
    assert valid == 31
    torch.testing.assert_close(feats[1, :valid], expected[0, :valid], atol=1e-5, rtol=0)


def test_whisper_mode_is_saved_with_the_model(whisper_dir):
    variable = WhisperEncoder(whisper_dir, mode="variable")
    padded = WhisperEncoder(whisper_dir, mode="pad30")
    state = variable.state_dict()
    assert state["_extra_state"] == {"mode": "variable"}
    with pytest.raises(ValueError, match="saved in mode 'variable'"):
        padded.load_state_dict(state)
    WhisperEncoder(whisper_dir, mode="variable").load_state_dict(state)
    with pytest.raises(ValueError, match="mode must be one of"):
        WhisperEncoder(whisper_dir, mode="30s")


def test_long_audio_is_refused_with_its_duration(short_whisper_dir):
    encoder = WhisperEncoder(short_whisper_dir)
    assert encoder.max_seconds == 2.0
    with pytest.raises(ValueError, match=r"at most 2 s at once, got an input of 5\.00 s"):
        encoder(torch.randn(1, 80000))


def test_long_audio_chunks_equal_separate_windows(short_whisper_dir):
    encoder = WhisperEncoder(short_whisper_dir, long_audio="chunk").eval()
    gen = torch.Generator().manual_seed(2)
    wavs = torch.randn(2, 80000, generator=gen) * 0.1  # 5 s and 3.1 s
    rel = torch.tensor([1.0, 49600 / 80000])
    feats, lens = encoder(wavs, rel)
    frames = torch.round(lens * feats.shape[1]).long()
    # windows of 2 s give 100 frames each; 5 s -> 100 + 100 + 50; 3.1 s -> 100 + 55
    assert frames.tolist() == [250, 155]
    pieces = [wavs[1, :32000], wavs[1, 32000:49600]]
    expected = torch.cat([encoder(p[None])[0][0] for p in pieces])
    torch.testing.assert_close(feats[1, :155], expected, atol=1e-5, rtol=0)
    assert torch.all(feats[1, 155:] == 0)


def _save_ssl(tmp_path, config_class, model_class):
    from transformers import Wav2Vec2FeatureExtractor

    config = config_class(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(
        tmp_path
    )
    return str(tmp_path)


@pytest.mark.parametrize(
    "adapter, family",
    [(Wav2Vec2Encoder, "Wav2Vec2"), (WavLMEncoder, "WavLM"), (HuBERTEncoder, "Hubert")],
)
def test_ssl_adapters(tmp_path, wavs, adapter, family):
    import transformers

    path = _save_ssl(
        tmp_path,
        getattr(transformers, f"{family}Config"),
        getattr(transformers, f"{family}Model"),
    )
    encoder = adapter(path, layer_weights=True).eval()
    assert encoder.output_dim == 32 and encoder.frame_rate == 800.0
    feats, frames = _alone_vs_batched(encoder, *wavs, atol=1e-4)
    # conv lengths: floor((n - 10) / 5) + 1, then floor((m - 8) / 4) + 1
    expected = [((n - 10) // 5 + 1 - 8) // 4 + 1 for n in (16000, 9920, 4960)]
    assert frames.tolist() == expected
    feats.sum().backward()
    assert encoder.layer_logits.grad is not None


def test_beats_adapter(tmp_path, wavs):
    ckpt = make_tiny_beats(tmp_path / "beats.pt")

    encoder = BEATsEncoder(ckpt).eval()
    assert encoder.output_dim == 32 and encoder.frame_rate == 50.0
    feats, lens = encoder(*wavs)
    frames = torch.round(lens * feats.shape[1]).long()
    # kaldi fbank frames (25 ms / 10 ms), whole 16-frame patches, 8 frequency patches each
    expected = [((n - 400) // 160 + 1) // 16 * 8 for n in (16000, 9920, 4960)]
    assert frames.tolist() == expected
    assert feats.shape == (3, expected[0], 32)
    assert torch.all(feats[2, expected[2] :] == 0)


def test_registry_builds_by_name_and_lists_valid_names():
    assert {"tiny_conv", "whisper", "wavlm", "hubert", "wav2vec2", "beats"} <= set(ENCODERS.names())
    encoder = build_encoder("tiny_conv", output_dim=24)
    assert isinstance(encoder, TinyConvEncoder) and encoder.output_dim == 24
    valid = "Valid names: beats, crepe, ge2e, hubert"
    with pytest.raises(KeyError, match=f"Unknown encoder 'tiny'. {valid}"):
        build_encoder("tiny")


def test_registry_checks_the_base_class():
    registry = Registry("encoder", AudioEncoder, group="speechbrain_mowe.test_nothing")
    with pytest.raises(TypeError, match="not a subclass of AudioEncoder"):
        registry.register("linear")(torch.nn.Linear)
    registry.register("factory")(lambda: torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match="built a Linear, not a AudioEncoder"):
        registry.build("factory")


def test_entry_point_discovery_loads_good_and_warns_on_broken(tmp_path, monkeypatch, caplog):
    (tmp_path / "mowe_ext.py").write_text(
        "from speechbrain_mowe.lobes import TinyConvEncoder\n"
        "class ExtEncoder(TinyConvEncoder):\n    pass\n"
    )
    dist = tmp_path / "mowe_ext-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mowe-ext\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[speechbrain_mowe.test_ext]\n"
        "ext_conv = mowe_ext:ExtEncoder\n"
        "broken = mowe_missing_module:Nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("encoder", AudioEncoder, group="speechbrain_mowe.test_ext")
    with caplog.at_level(logging.WARNING):
        names = registry.names()
    assert names == ["ext_conv"]
    assert type(registry.build("ext_conv")).__name__ == "ExtEncoder"
    assert "Skipping encoder extension 'broken'" in caplog.text
    assert "mowe_missing_module" in caplog.text


def test_spec_augment_masks_a_frozen_base_in_training_only(whisper_dir, wavs):
    torch.manual_seed(0)
    base = WhisperEncoder(whisper_dir, spec_augment=spec_augment(masks=2, max_time=8))
    mowe = MoWEEncoder(base, [], None, freeze_base=True)
    mowe.eval()
    assert not base.augments_input
    clean = mowe(*wavs).feats
    torch.testing.assert_close(mowe(*wavs).feats, clean)  # evaluation: no masking, batch-free
    mowe.train()
    assert base.augments_input and not base.training  # frozen: no dropout, but augmentation
    assert not torch.allclose(mowe(*wavs).feats, clean)
    mowe.eval()
    torch.testing.assert_close(mowe(*wavs).feats, clean)
    assert not WhisperEncoder(whisper_dir).train().augments_input  # none asked for
