import pytest
import torch

from speechbrain_mowe.lobes import FrameStackProjector, SequenceCNNProjector, WindowQFormerProjector

PROJECTORS = {
    "stack": (lambda: FrameStackProjector(12, 16, stack=5), lambda n: -(-n // 5)),
    "cnn8": (lambda: SequenceCNNProjector(12, 16, downsample=8), lambda n: -(-n // 8)),
    "cnn6": (lambda: SequenceCNNProjector(12, 16, downsample=6), lambda n: -(-n // 6)),
    "qformer": (
        lambda: WindowQFormerProjector(
            12, 16, window=17, num_queries=2, hidden_dim=32, num_heads=4
        ),
        lambda n: -(-n // 17) * 2,
    ),
    "stack_norm": (
        lambda: FrameStackProjector(12, 16, stack=5, output_norm=0.5),
        lambda n: -(-n // 5),
    ),
    "cnn8_norm": (
        lambda: SequenceCNNProjector(12, 16, downsample=8, output_norm=0.5),
        lambda n: -(-n // 8),
    ),
    "qformer_norm": (
        lambda: WindowQFormerProjector(
            12, 16, window=17, num_queries=2, hidden_dim=32, num_heads=4, output_norm=0.5
        ),
        lambda n: -(-n // 17) * 2,
    ),
}


@pytest.mark.parametrize("name", sorted(PROJECTORS))
def test_projector_lengths_batch_invariance_and_backward(name):
    build, expected_len = PROJECTORS[name]
    torch.manual_seed(0)
    proj = build().eval()
    frames = torch.tensor([50, 33, 9, 1])
    feats = torch.randn(4, 50, 12) * (torch.arange(50) < frames[:, None]).unsqueeze(-1)
    out, lens = proj(feats, frames / 50)
    out_frames = torch.round(lens * out.shape[1]).long()
    assert out_frames.tolist() == [expected_len(int(n)) for n in frames]
    assert out.shape == (4, expected_len(50), 16)
    for i, n in enumerate(frames.tolist()):
        alone, _ = proj(feats[i : i + 1, :n], torch.ones(1))
        torch.testing.assert_close(out[i, : out_frames[i]], alone[0], atol=1e-5, rtol=0)
        assert torch.all(out[i, out_frames[i] :] == 0)
    proj.train()
    out, _ = proj(feats, frames / 50)
    out.sum().backward()
    assert all(p.grad is not None for p in proj.parameters())


def test_sequence_cnn_uses_one_conv_per_prime_stride():
    proj = SequenceCNNProjector(4, 8, downsample=12)
    assert [c.stride[0] for c in proj.convs.layers] == [2, 2, 3]
    with pytest.raises(ValueError, match="downsample must be >= 1"):
        SequenceCNNProjector(4, 8, downsample=0)


@pytest.mark.parametrize("name", ["stack_norm", "cnn8_norm", "qformer_norm"])
def test_output_norm_sets_every_embedding_to_its_learned_scale(name):
    build, _ = PROJECTORS[name]
    torch.manual_seed(0)
    proj = build()
    frames = torch.tensor([50, 20])
    feats = 300.0 * torch.randn(2, 50, 12)
    with torch.no_grad():
        out, lens = proj(feats, frames / 50)
        valid = torch.round(lens * out.shape[1]).long()
        rms = out.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms[0], torch.full_like(rms[0], 0.5), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            rms[1, : valid[1]], torch.full((int(valid[1]),), 0.5), atol=1e-4, rtol=0
        )
        proj.output_norm.weight.fill_(2.0)  # the gain is a parameter: it trains
        again, _ = proj(feats, frames / 50)
    torch.testing.assert_close(again, 4 * out)
    assert "output_norm.weight" in proj.state_dict()


def test_without_output_norm_the_state_dict_is_unchanged():
    """Checkpoints of projectors without the normalisation still load."""
    proj = SequenceCNNProjector(12, 16, downsample=8)
    assert proj.output_norm is None
    assert sorted(proj.state_dict()) == [
        "convs.layers.0.bias",
        "convs.layers.0.weight",
        "convs.layers.1.bias",
        "convs.layers.1.weight",
        "convs.layers.2.bias",
        "convs.layers.2.weight",
        "out.bias",
        "out.weight",
    ]
    with pytest.raises(ValueError, match="output_norm must be > 0 or None, got 0"):
        SequenceCNNProjector(12, 16, output_norm=0)
