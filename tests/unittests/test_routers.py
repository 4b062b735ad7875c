import pytest
import torch
from torch import nn

from speechbrain_mowe.lobes import (
    LanguageModel,
    MoWEEncoder,
    SequenceCNNProjector,
    TinyConvEncoder,
    WhisperEncoder,
)
from speechbrain_mowe.lobes.routers import (
    DataDependentRouter,
    DataIndependentRouter,
    HybridRouter,
    InstructionRouter,
    build_router,
    load_balancing_loss,
)
from speechbrain_mowe.model import Decoding, MoWEAudioLLM


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


def test_instruction_router_needs_its_embedding_and_adds_the_audio_term():
    router = InstructionRouter(16, 3, audio_dim=8).eval()
    with pytest.raises(ValueError, match="needs the instruction's embedding"):
        router(torch.randn(2, 8))
    summary, instruction = torch.randn(2, 8), torch.randn(2, 16)
    expected = router.instruction.logits(router.norm(instruction), None, 2)
    expected = expected + router.dependent.logits(summary, None, 2)
    torch.testing.assert_close(router.logits(summary, None, 2, instruction), expected)
    assert build_router("instruction", 8, 3, instruction_dim=16).dependent is None
    with pytest.raises(ValueError, match="needs instruction_dim"):
        build_router("instruction_dependent", 8, 3)


TRAINED = {"transcribe the audio .": 0, "describe the sound .": 1, "translate the speech .": 2}
PARAPHRASES = {
    "please transcribe the audio .": 0,
    "transcribe this audio .": 0,
    "describe the sound , please .": 1,
    "describe this sound .": 1,
    "now translate the speech .": 2,
    "translate this speech .": 2,
}


def _instruction_router(llm):
    """A router trained (on its own) to send each training instruction to one expert."""
    torch.manual_seed(0)
    router = InstructionRouter(llm.embedding_dim, 3)
    embeddings = llm.prompt_embedding(*llm.tokenize_prompts(list(TRAINED))).detach()
    target = torch.tensor(list(TRAINED.values()))
    optimizer = torch.optim.Adam(router.parameters(), lr=0.01)
    for _ in range(200):
        loss = nn.functional.cross_entropy(router.logits(None, None, 3, embeddings), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return router.eval()


def test_paraphrases_of_a_training_instruction_route_like_it(llama_dir):
    llm = LanguageModel(llama_dir, lora_rank=0)
    router = _instruction_router(llm)

    def experts(instructions):
        embeddings = llm.prompt_embedding(*llm.tokenize_prompts(instructions))
        return router(instruction=embeddings).experts[:, 0].tolist()

    assert experts(list(TRAINED)) == list(TRAINED.values())
    assert experts(list(PARAPHRASES)) == list(PARAPHRASES.values())


def test_a_model_with_an_instruction_router_needs_no_task_and_is_batch_invariant(
    llama_dir, whisper_dir
):
    torch.manual_seed(0)
    llm = LanguageModel(llama_dir, lora_rank=4)
    base = WhisperEncoder(whisper_dir, mode="variable")
    pool = [TinyConvEncoder(), TinyConvEncoder(channels=(16, 24), strides=(2, 2)),
            TinyConvEncoder(n_mels=24, strides=(2, 2, 2))]  # fmt: skip
    router = _instruction_router(llm)  # trained: the instructions pick different experts
    mowe = MoWEEncoder(base, pool, router, weak_dim=16)
    model = MoWEAudioLLM(mowe, SequenceCNNProjector(mowe.output_dim, llm.embedding_dim, 4), llm,
                         tasks=["asr", "aac"]).eval()  # fmt: skip
    instructions = list(TRAINED) + list(PARAPHRASES)[:3]
    gen = torch.Generator().manual_seed(1)
    wavs = 0.1 * torch.randn(len(instructions), 16000, generator=gen)
    lens = torch.linspace(1.0, 0.4, len(instructions))
    prefix, suffix = llm.tokenize_prompts(instructions)
    routing = model.encode_audio(wavs, lens, prompt=(prefix, suffix)).encoded.routing
    assert routing.experts[:, 0].tolist() == [0, 1, 2, 0, 0, 1]
    decoding = Decoding(max_new_tokens=4)
    batched = model.answer(wavs, lens, instructions, decoding=decoding)  # no task ids
    for i, instruction in enumerate(instructions):
        one = model.answer(wavs[i : i + 1, : int(lens[i] * 16000)], None, [instruction],
                           decoding=decoding)  # fmt: skip
        assert one == [batched[i]]
        alone = model.encode_audio(
            wavs[i : i + 1], lens[i : i + 1], prompt=llm.tokenize_prompts([instruction])
        ).encoded.routing
        torch.testing.assert_close(alone.gates[0], routing.gates[i])
    with pytest.raises(ValueError, match="reads the instruction: pass prompt="):
        model.encode_audio(wavs, lens)
