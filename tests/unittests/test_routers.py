import pytest
import torch

from speechbrain_mowe.lobes.routers import (
    DataDependentRouter,
    DataIndependentRouter,
    HybridRouter,
    load_balancing_loss,
)


def test_aux_loss_is_minimal_for_uniform_and_larger_for_collapsed():
    experts = 4
    uniform_probs = torch.full((8, experts), 1 / experts)
    uniform_choice = torch.arange(8).remainder(experts).unsqueeze(1)
    uniform = load_balancing_loss(uniform_probs, uniform_choice)
    assert float(uniform) == pytest.approx(1.0)
    collapsed_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(8, 1)
    collapsed = load_balancing_loss(collapsed_probs, torch.zeros(8, 1, dtype=torch.long))
    assert float(collapsed) == pytest.approx(4 * 0.97)
    # over random routings the uniform one is never beaten
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        probs = torch.randn(8, experts, generator=gen).softmax(-1)
        assert float(load_balancing_loss(probs, probs.argmax(-1, keepdim=True))) >= 1.0 - 1e-6


def test_top_k_gates_are_renormalised_and_sparse():
    router = DataDependentRouter(6, 5, top_k=2).eval()
    routing = router(torch.randn(7, 6))
    assert routing.experts.shape == (7, 2)
    assert torch.equal((routing.gates > 0).sum(-1), torch.full((7,), 2))
    torch.testing.assert_close(routing.gates.sum(-1), torch.ones(7))
    # the kept gates keep the probabilities' ratio
    kept = routing.probs.gather(1, routing.experts)
    torch.testing.assert_close(
        routing.gates.gather(1, routing.experts), kept / kept.sum(-1, keepdim=True)
    )
    assert torch.equal(routing.experts[:, 0], routing.probs.argmax(-1))


def test_unrenormalised_top1_gate_is_the_probability():
    router = DataDependentRouter(6, 3, top_k=1, renormalize=False).eval()
    routing = router(torch.randn(4, 6))
    torch.testing.assert_close(routing.gates.max(-1).values, routing.probs.max(-1).values)


def test_noise_only_during_training():
    torch.manual_seed(0)
    router = DataDependentRouter(4, 8, noise_std=5.0)
    summary = torch.randn(64, 4)
    router.eval()
    assert torch.equal(router(summary).experts, router(summary).experts)
    router.train()
    assert not torch.equal(router(summary).experts, router(summary).experts)


def test_data_independent_router_is_task_conditioned():
    router = DataIndependentRouter(3, num_tasks=2).eval()
    with torch.no_grad():
        router.task_logits.copy_(torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]))
    routing = router(task_ids=torch.tensor([0, 1, 1, 0]))
    assert routing.experts.flatten().tolist() == [0, 2, 2, 0]
    with pytest.raises(ValueError, match="pass task_ids"):
        router(batch=3)
    single = DataIndependentRouter(3)
    assert single(batch=5).gates.shape == (5, 3)


def test_hybrid_router_sums_both_logits():
    router = HybridRouter(4, 3, num_tasks=2).eval()
    summary, tasks = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    expected = router.independent.logits(None, tasks, 5) + router.dependent.logits(summary, None, 5)
    torch.testing.assert_close(router(summary, tasks).probs, expected.softmax(-1))
    with pytest.raises(ValueError, match="needs the pooled base features"):
        router(None, tasks)
