"""CrepeEncoder computes torchcrepe's CREPE from its released weights."""

import math
import sys
import types

import pytest
import torch

from speechbrain_mowe.lobes import CrepeEncoder
from speechbrain_mowe.weights import crepe_weights


@pytest.fixture(scope="module")
def torchcrepe():
    """The original package, imported with stand-ins for librosa and resampy,
    which it imports at the top but never calls on 16 kHz input here."""
    stubs = {name: types.ModuleType(name) for name in ("librosa", "resampy")}
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        import torchcrepe

        yield torchcrepe
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _voice(seconds=1.3, f0=220.0):
    """A harmonic tone with vibrato and a little noise."""
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * 16000)) / 16000
    phase = 2 * math.pi * (f0 * t + 3 * torch.sin(2 * math.pi * 5 * t) / (2 * math.pi * 5))
    wave = sum(torch.sin(k * phase) / k for k in range(1, 6))
    return 0.3 * wave + 0.01 * torch.randn(len(t), generator=gen)


@pytest.mark.parametrize("hop_length", [160, 320])
def test_saliences_and_embeddings_equal_the_originals(torchcrepe, hop_length):
    audio = _voice()
    frames = next(torchcrepe.preprocess(audio[None], 16000, hop_length))
    theirs = torchcrepe.infer(frames, "tiny")
    captured = []
    torchcrepe.infer.model.classifier.register_forward_hook(
        lambda module, inputs, output: captured.append(inputs[0])
    )
    torchcrepe.infer(frames, "tiny")

    for output, expected in (("salience", theirs), ("embedding", captured[0])):
        encoder = CrepeEncoder(output=output, hop_length=hop_length).eval()
        with torch.no_grad():
            feats, lens = encoder(audio[None])
        assert feats.shape == (1, 1 + len(audio) // hop_length, encoder.output_dim)
        assert lens.tolist() == [1.0]
        torch.testing.assert_close(feats[0], expected, rtol=1e-4, atol=1e-4)


def test_the_pitch_of_a_220_hz_voice_is_found():
    encoder = CrepeEncoder(output="salience", hop_length=160).eval()
    with torch.no_grad():
        salience, _ = encoder(_voice()[None])
    cents = 20 * salience[0].argmax(-1).float() + 1997.3794084376191  # torchcrepe's bin 0
    hertz = 10 * 2 ** (cents / 1200)
    assert abs(float(hertz[10:-10].median()) - 220.0) < 220.0 * 0.03


def test_a_batch_gives_each_example_its_own_frames():
    encoder = CrepeEncoder(frames_per_pass=7).eval()
    long, short = _voice(1.0, 180.0), _voice(0.55, 260.0)
    batch = torch.zeros(2, len(long))
    batch[0], batch[1, : len(short)] = long, short
    with torch.no_grad():
        feats, lens = encoder(batch, torch.tensor([1.0, len(short) / len(long)]))
        alone, _ = encoder(short[None])
    frames = 1 + len(short) // 320
    assert feats.shape == (2, 1 + len(long) // 320, 256)
    torch.testing.assert_close(feats[1, :frames], alone[0], rtol=1e-5, atol=1e-5)
    assert not feats[1, frames:].any()
    assert lens[1] == pytest.approx(frames / feats.shape[1])


def test_other_weights_are_refused_by_name(tmp_path):
    state = torch.load(crepe_weights("tiny"), weights_only=True)
    path = tmp_path / "crepe.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("conv6")}, path)
    with pytest.raises(ValueError, match=r"crepe.pth holds no CREPE network \(missing conv6"):
        CrepeEncoder(weights=str(path))
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=r"crepe.pth holds conv1.weight of shape \(128, 1, 512, 1\), not that of CREPE full",
    ):
        CrepeEncoder(capacity="full", weights=str(path))
    with pytest.raises(ValueError, match="capacity must be one of tiny, full, got 'medium'"):
        CrepeEncoder(capacity="medium")
