import pytest
import torch

from speechbrain_mowe.lobes import (
    DataDependentRouter,
    MoWEEncoder,
    TinyConvEncoder,
)
from speechbrain_mowe.lobes.sequence import to_absolute


def _pool():
    torch.manual_seed(0)
    return [
        TinyConvEncoder(channels=(16, 24), strides=(2, 2)),
        TinyConvEncoder(n_mels=24, channels=(16, 16, 32), strides=(2, 2, 2)),
        TinyConvEncoder(channels=(8, 20), strides=(3, 1)),
    ]


def _mowe(top_k=1, **kwargs):
    torch.manual_seed(0)
    base = TinyConvEncoder(channels=(16, 32), strides=(2, 1))
    router = DataDependentRouter(32, 3, top_k=top_k)
    return MoWEEncoder(base, _pool(), router, weak_dim=12, **kwargs)


def _tones():
    """Six padded clips of different tones, loudness and length."""
    t = torch.arange(16000) / 16000
    freqs = torch.tensor([150.0, 400.0, 900.0, 2000.0, 3500.0, 6000.0])
    lens = torch.tensor([16000, 7000, 12000, 3000, 16000, 9000])
    amps = torch.tensor([0.9, 0.05, 0.3, 0.6, 0.01, 0.2])
    clips = amps[:, None] * torch.sin(2 * torch.pi * freqs[:, None] * t)
    return clips * (torch.arange(16000) < lens[:, None]), lens / 16000


def _count_calls(module):
    calls = []
    handles = [
        expert.register_forward_hook(lambda m, args, out, i=i: calls.append((i, args[0].shape[0])))
        for i, expert in enumerate(module.weak_pool)
    ]
    return calls, handles


@pytest.mark.parametrize("top_k", [1, 2])
def test_sparse_routing_equals_dense_reference(top_k):
    mowe = _mowe(top_k).eval()
    batch, rel_lens = _tones()
    # bias the router so that every expert is chosen by some example and skipped by another
    with torch.no_grad():
        mowe.router.net.weight.normal_(0, 3.0)
    calls, handles = _count_calls(mowe)
    out = mowe(batch, rel_lens)
    for h in handles:
        h.remove()

    chosen = torch.zeros(6, 3, dtype=torch.bool).scatter(1, out.routing.experts, True)
    assert torch.equal(chosen, out.routing.gates != 0)
    # each expert ran once, on exactly the examples that chose it; unchosen experts never ran
    expected_calls = [(e, int(chosen[:, e].sum())) for e in range(3) if chosen[:, e].any()]
    assert calls == expected_calls
    assert (
        sum(n for _, n in calls) == 6 * top_k < 6 * 3
    )  # sparse: not every expert on every example

    # dense reference: every expert on every example, unselected gates zeroed
    base, base_lens = mowe.base(batch, rel_lens)
    frames = to_absolute(base_lens, base.shape[1])
    dense = sum(
        mowe.expert_features(e, batch, rel_lens, frames, base.shape[1])
        * out.routing.gates[:, e, None, None]
        for e in range(3)
    )
    reference = torch.cat([base, dense], dim=-1)
    assert out.feats.shape == (6, base.shape[1], 32 + 12)
    torch.testing.assert_close(out.feats, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.lens, base_lens)


def test_empty_pool_is_exactly_the_base_encoder(wavs):
    torch.manual_seed(0)
    base = TinyConvEncoder()
    mowe = MoWEEncoder(base, [], None)
    out = mowe(*wavs)
    feats, lens = base(*wavs)
    assert torch.equal(out.feats, feats) and torch.equal(out.lens, lens)
    assert float(out.aux_loss) == 0.0 and out.routing is None
    assert mowe.output_dim == base.output_dim


def test_fixed_pool_without_router_runs_every_expert(wavs):
    torch.manual_seed(0)
    base = TinyConvEncoder(channels=(16, 32), strides=(2, 1))
    for fusion, width in (("sum", 32 + 12), ("concat", 32 + 3 * 12)):
        mowe = MoWEEncoder(base, _pool(), None, weak_dim=12, weak_fusion=fusion, layer_norm=True)
        calls, _ = _count_calls(mowe)
        out = mowe(*wavs)
        assert calls == [(0, 3), (1, 3), (2, 3)]
        assert out.feats.shape[-1] == width == mowe.output_dim
        frames = to_absolute(out.lens, out.feats.shape[1])
        assert torch.all(out.feats[2, frames[2] :] == 0)


def test_gradients_reach_router_experts_projections_not_frozen(wavs):
    mowe = _mowe(top_k=2, freeze_base=True)
    frozen_weak = _mowe(top_k=2, freeze_weak=True)
    for module in (mowe, frozen_weak):
        out = module(*wavs)
        (out.feats.pow(2).mean() + 0.1 * out.aux_loss).backward()
        assert all(p.grad is None for p in module.base.parameters())
        assert all(p.grad is not None for p in module.router.parameters())
        used = torch.zeros(3, dtype=torch.bool).index_fill(0, out.routing.experts.flatten(), True)
        for e, (expert, proj) in enumerate(zip(module.weak_pool, module.projections)):
            assert all(p.grad is not None for p in proj.parameters()) == bool(used[e])
            reached = all(p.grad is not None for p in expert.parameters())
            assert reached == (bool(used[e]) and module is mowe)
    assert not mowe.base.training and mowe.weak_pool.training
    assert not frozen_weak.weak_pool.training


def test_checkpoint_holds_trainable_parameters_only(tmp_path, wavs):
    mowe = _mowe().eval()
    path = tmp_path / "mowe.ckpt"
    mowe._save_trainable(path)
    saved = torch.load(path)
    trainable = {n for n, p in mowe.named_parameters() if p.requires_grad}
    assert set(saved) == trainable
    assert not any(name.startswith("base.") for name in saved)
    fresh = _mowe().eval()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0) if p.requires_grad else None
    fresh._load_trainable(path)
    torch.testing.assert_close(fresh(*wavs).feats, mowe(*wavs).feats)
    del saved["router.net.bias"]
    torch.save(saved, path)
    with pytest.raises(KeyError, match="lacks 1 trainable entries.*router.net.bias"):
        fresh._load_trainable(path)


def test_router_size_must_match_pool():
    with pytest.raises(ValueError, match="router has 2 experts but the pool holds 3"):
        MoWEEncoder(TinyConvEncoder(), _pool(), DataDependentRouter(64, 2))


def test_cached_expert_features_stand_in_for_frozen_experts(wavs):
    mowe = _mowe(top_k=2, freeze_weak=True).eval()
    with torch.no_grad():
        mowe.router.net.weight.normal_(0, 3.0)
        expected = mowe(*wavs)
        computed = [expert(*wavs) for expert in mowe.weak_pool]  # as a feature cache holds them
        calls, handles = _count_calls(mowe)
        given = mowe(*wavs, weak_outputs=[computed[0], None, computed[2]])
    for h in handles:
        h.remove()
    assert [index for index, _ in calls] == [1] * bool(expected.routing.experts.eq(1).any())
    torch.testing.assert_close(given.feats, expected.feats, atol=1e-6, rtol=0)
    trained = _mowe(top_k=2)  # weak encoders that train cannot be read from a cache
    with pytest.raises(ValueError, match="weak_outputs can only stand in for frozen"):
        trained(*wavs, weak_outputs=computed)


def test_bf16_autocast_gives_the_fp32_features_to_rounding():
    """A base whose features stay fp32 under autocast (as Whisper's do on a GPU)
    while the experts' projections give bf16: they are summed in fp32."""

    class Fp32Base(TinyConvEncoder):
        def forward(self, wavs, wav_lens):
            feats, lens = super().forward(wavs, wav_lens)
            return feats.float(), lens

    torch.manual_seed(0)
    base = Fp32Base(channels=(16, 32), strides=(2, 1))
    mowe = MoWEEncoder(base, _pool(), DataDependentRouter(32, 3, top_k=2), weak_dim=12).eval()
    batch, rel_lens = _tones()
    with torch.no_grad():
        exact = mowe(batch, rel_lens).feats
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = mowe(batch, rel_lens).feats
    assert rounded.dtype == exact.dtype == torch.float32
    assert torch.allclose(rounded, exact, atol=0.05 * exact.abs().max().item())
