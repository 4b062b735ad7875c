"""The GE2E speaker encoder: shapes, batch invariance, and the original's numbers."""

from pathlib import Path

import numpy as np
import pytest
import torch

from speechbrain_mowe.lobes import GE2EEncoder, build_encoder

REFERENCE = Path(__file__).parents[1] / "data" / "ge2e_reference.npz"


@pytest.fixture(scope="module")
def encoder():
    return GE2EEncoder().eval()


def test_frames_shapes_and_registry(encoder):
    wavs = torch.randn(3, 16000) * 0.1
    lens = torch.tensor([16000, 9999, 160])
    feats, rel = encoder(wavs, lens / 16000)
    frames = torch.round(rel * feats.shape[1]).long()
    assert frames.tolist() == [101, 63, 2]  # 1 + samples // 160, as librosa centres frames
    assert feats.shape == (3, 101, 256) and encoder.frame_rate == 100.0
    assert torch.all(feats[1, 63:] == 0) and torch.all(feats[2, 2:] == 0)
    assert isinstance(build_encoder("ge2e"), GE2EEncoder)


def test_an_example_gives_the_same_frames_alone_and_in_a_batch(encoder):
    gen = torch.Generator().manual_seed(5)
    lens = torch.tensor([16000, 11200, 4321])
    wavs = torch.randn(3, 16000, generator=gen) * 0.1 * (torch.arange(16000) < lens[:, None])
    with torch.no_grad():
        batched, rel = encoder(wavs, lens / 16000)
        frames = torch.round(rel * batched.shape[1]).long()
        for i in range(3):
            alone, _ = encoder(wavs[i : i + 1, : lens[i]])
            torch.testing.assert_close(batched[i, : frames[i]], alone[0], atol=1e-5, rtol=0)


def test_front_end_and_lstm_match_the_original(encoder):
    """Against Resemblyzer's own code on a fixed waveform (tests/data/make_ge2e_reference.py)."""
    reference = np.load(REFERENCE)
    wav = torch.from_numpy(reference["pcm"].astype(np.float32) / 32767)[None]
    with torch.no_grad():
        mel, frames = encoder.mel(wav, torch.tensor([wav.shape[1]]))
        feats, _ = encoder(wav)
    expected_mel = torch.from_numpy(reference["mel"])
    assert frames.tolist() == [expected_mel.shape[0]]
    # librosa's melspectrogram, to single precision.
    assert float((mel[0] - expected_mel).abs().max() / expected_mel.abs().max()) < 1e-5
    torch.testing.assert_close(feats[0, ::5], torch.from_numpy(reference["frames"]), atol=1e-4,
                               rtol=0)  # fmt: skip


def test_a_file_that_is_not_a_resemblyzer_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="is not a Resemblyzer checkpoint"):
        GE2EEncoder(path)
    torch.save({"model_state": {"lstm.weight_ih_l0": torch.zeros(4, 40)}}, path)
    with pytest.raises(ValueError, match="holds no 3-layer, 256-wide GE2E LSTM"):
        GE2EEncoder(path)
