import pytest
import torch

from speechbrain_mowe.lobes import (
    DataDependentRouter,
    LanguageModel,
    MoWEEncoder,
    SequenceCNNProjector,
    TinyConvEncoder,
    WhisperEncoder,
)
from speechbrain_mowe.lobes.language_model import IGNORE_INDEX, answer_token_losses

INSTRUCTIONS = [
    "transcribe the audio .",
    "translate the speech into german .",
    "describe the sound .",
    "what emotion does the speaker express ? answer with one word",
    "transcribe .",
    "describe the sound in detail , mentioning every event you hear , in order .",
]


def _mean_loss(out):
    sums, counts = answer_token_losses(out.logits, out.labels)
    return sums.sum() / counts.sum()


def _randomise_lora(llm, seed=0):
    """LoRA B starts at zero (a no-op); give the adapters real weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in llm.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)


@pytest.fixture(params=["llama", "qwen"])
def llm_dir(request, llama_dir, qwen_dir):
    return {"llama": llama_dir, "qwen": qwen_dir}[request.param]


def test_prompt_is_cut_at_the_placeholder(llama_dir):
    llm = LanguageModel(llama_dir)
    prefix, suffix = llm.tokenize_prompt("describe the sound .")
    decode = llm.tokenizer.decode
    assert decode(prefix) == "<s><|user|>"
    assert decode(suffix) == "\ndescribe the sound .<|end|><|assistant|>"
    answer = llm.tokenize_answer("a dog barks")
    assert answer[-1] == llm.tokenizer.eos_token_id
    assert decode(answer[:-1]) == "a dog barks"
    with pytest.raises(ValueError, match="contains the audio placeholder"):
        llm.tokenize_prompt("listen to <audio>")


def test_training_batch_matches_per_example_construction(llm_dir):
    # Every position's logits, to check the layout (answer_logits_only keeps the last).
    llm = LanguageModel(llm_dir, lora_rank=4, lora_dropout=0.0, answer_logits_only=False).eval()
    _randomise_lora(llm)
    prefix, suffix = llm.tokenize_prompts(INSTRUCTIONS[:3])
    answer = llm.tokenize_answers(["one two", "eins zwei drei vier", "a bird"])
    audio_frames = torch.tensor([7, 3, 5])
    audio = torch.randn(3, 7, llm.embedding_dim)
    out = llm(audio, audio_frames / 7, prefix, suffix, answer)
    embed = llm.model.get_input_embeddings()
    losses = []
    for i in range(3):
        p = prefix[0][i, : int(round(float(prefix[1][i]) * prefix[0].shape[1]))]
        s = suffix[0][i, : int(round(float(suffix[1][i]) * suffix[0].shape[1]))]
        a = answer[0][i, : int(round(float(answer[1][i]) * answer[0].shape[1]))]
        inputs = torch.cat([embed(p), audio[i, : audio_frames[i]], embed(s), embed(a)])
        labels = torch.cat([torch.full((len(p) + int(audio_frames[i]) + len(s),), -100), a])
        n = len(inputs)
        torch.testing.assert_close(out.labels[i, :n], labels, rtol=0, atol=0)
        assert torch.all(out.labels[i, n:] == IGNORE_INDEX)
        logits = llm.model(inputs_embeds=inputs[None]).logits[0]
        torch.testing.assert_close(out.logits[i, :n], logits, atol=1e-4, rtol=0)
        losses.append(torch.nn.functional.cross_entropy(logits[:-1], labels[1:], reduction="sum"))
    total_answer_tokens = int((out.labels != IGNORE_INDEX).sum())
    assert total_answer_tokens == int(torch.round(answer[1] * answer[0].shape[1]).sum())
    expected = sum(losses) / total_answer_tokens
    torch.testing.assert_close(_mean_loss(out), expected, atol=1e-5, rtol=0)


def _losses_and_gradients(llm_dir, **options):
    """Logit positions, answer sums, counts, audio and parameter gradients of a
    training step with randomised LoRA."""
    torch.manual_seed(0)
    llm = LanguageModel(llm_dir, lora_rank=4, lora_dropout=0.0, **options).train()
    _randomise_lora(llm)
    prefix, suffix = llm.tokenize_prompts(INSTRUCTIONS[:3])
    answer = llm.tokenize_answers(["one two", "eins zwei drei vier", "a"])
    audio = torch.randn(3, 7, llm.embedding_dim, generator=torch.Generator().manual_seed(1))
    audio.requires_grad_(True)
    out = llm(audio, torch.tensor([7, 3, 5]) / 7, prefix, suffix, answer)
    sums, counts = answer_token_losses(out.logits, out.labels)
    (sums.sum() / counts.sum()).backward()
    grads = {n: p.grad.clone() for n, p in llm.named_parameters() if p.grad is not None}
    longest = int(torch.round(answer[1] * answer[0].shape[1]).max())
    return out.logits.shape[1], longest, sums.detach(), counts, audio.grad, grads


def _assert_same_step(step, reference):
    torch.testing.assert_close(step[2], reference[2], atol=1e-5, rtol=1e-5)
    assert torch.equal(step[3], reference[3])
    torch.testing.assert_close(step[4], reference[4], atol=1e-5, rtol=1e-4)
    assert step[5].keys() == reference[5].keys() and len(step[5]) > 0
    for name in reference[5]:
        torch.testing.assert_close(step[5][name], reference[5][name], atol=1e-5, rtol=1e-4)


def test_answer_logits_only_gives_the_same_losses_and_gradients(llm_dir):
    full = _losses_and_gradients(llm_dir, answer_logits_only=False)
    kept = _losses_and_gradients(llm_dir, answer_logits_only=True)
    assert kept[0] == kept[1] + 1 < full[0]  # the longest answer, and the position before it
    _assert_same_step(kept, full)


@pytest.mark.parametrize("options", [
    {"attn_implementation": "eager"},
    {"attn_implementation": "sdpa"},
    {"gradient_checkpointing": True},
    {"gradient_checkpointing": True, "answer_logits_only": False},
])  # fmt: skip
def test_speed_and_memory_options_give_the_same_losses_and_gradients(llm_dir, options):
    reference = _losses_and_gradients(llm_dir, attn_implementation="eager")
    _assert_same_step(_losses_and_gradients(llm_dir, **options), reference)


@pytest.mark.parametrize("checkpointing, calls", [(False, 1), (True, 2)])
def test_gradient_checkpointing_recomputes_the_decoder_layers(llama_dir, checkpointing, calls):
    llm = LanguageModel(llama_dir, lora_rank=4, gradient_checkpointing=checkpointing).train()
    layer = llm.model.get_base_model().model.layers[0].self_attn
    seen = []
    layer.register_forward_hook(lambda *_: seen.append(1))
    prefix, suffix = llm.tokenize_prompts(INSTRUCTIONS[:2])
    out = llm(torch.randn(2, 4, llm.embedding_dim), torch.ones(2), prefix, suffix,
              llm.tokenize_answers(["one", "two"]))  # fmt: skip
    _mean_loss(out).backward()
    assert len(seen) == calls  # the forward, and its recomputation in the backward


def test_gradients_reach_lora_only(llama_dir):
    llm = LanguageModel(llama_dir, lora_rank=4)
    prefix, suffix = llm.tokenize_prompts(INSTRUCTIONS[:2])
    answer = llm.tokenize_answers(["one", "two"])
    audio = torch.randn(2, 4, llm.embedding_dim, requires_grad=True)
    _mean_loss(llm(audio, torch.ones(2), prefix, suffix, answer)).backward()
    for name, param in llm.named_parameters():
        assert (param.grad is not None) == ("lora_" in name), name
    assert audio.grad is not None and audio.grad.abs().sum() > 0


def _pipeline(whisper_dir, llm_dir):
    torch.manual_seed(0)
    base = WhisperEncoder(whisper_dir, mode="variable")
    pool = [
        TinyConvEncoder(channels=(16, 24), strides=(2, 2)),
        TinyConvEncoder(n_mels=24, strides=(2, 2, 2)),
    ]
    mowe = MoWEEncoder(base, pool, DataDependentRouter(base.output_dim, 2), weak_dim=16)
    llm = LanguageModel(llm_dir, lora_rank=4)
    _randomise_lora(llm)
    projector = SequenceCNNProjector(mowe.output_dim, llm.embedding_dim, downsample=4)
    return mowe.eval(), projector.eval(), llm.eval()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_is_batch_invariant(whisper_dir, llm_dir, num_beams):
    mowe, projector, llm = _pipeline(whisper_dir, llm_dir)
    gen = torch.Generator().manual_seed(3)
    samples = torch.tensor([16000, 4000, 11000, 7200, 2400, 13600])
    wavs = torch.randn(6, 16000, generator=gen) * 0.1 * (torch.arange(16000) < samples[:, None])

    def answer(wavs, wav_lens, instructions):
        out = mowe(wavs, wav_lens)
        audio, audio_lens = projector(out.feats, out.lens)
        prefix, suffix = llm.tokenize_prompts(instructions)
        return llm.generate(
            audio, audio_lens, prefix, suffix, max_new_tokens=10, num_beams=num_beams
        )

    batched = answer(wavs, samples / 16000, INSTRUCTIONS)
    alone = [
        answer(wavs[i : i + 1, : samples[i]], torch.ones(1), INSTRUCTIONS[i : i + 1])[0]
        for i in range(6)
    ]
    assert batched == alone
    assert all(len(tokens) > 0 for tokens in batched)
    assert len(set(map(tuple, batched))) > 1, "different inputs should give different outputs"


def test_generation_stops_at_the_end_token(llama_dir):
    llm = LanguageModel(llama_dir, lora_rank=0).eval()
    with torch.no_grad():  # make the end token the most likely next token everywhere
        head = llm.model.get_output_embeddings()
        head.weight.zero_()
        head.weight[llm.end_token_id] = 1.0
        llm.model.get_input_embeddings().weight.fill_(1.0)
    prefix, suffix = llm.tokenize_prompts(INSTRUCTIONS[:2])
    tokens = llm.generate(torch.ones(2, 3, 64), torch.ones(2), prefix, suffix, max_new_tokens=9,
                          num_beams=1)  # fmt: skip
    assert tokens == [[], []]


def test_lora_adapters_reload_into_a_fresh_model(tmp_path, llama_dir):
    llm = LanguageModel(
        llama_dir, lora_rank=4, lora_target_modules=["q_proj", "v_proj", "down_proj"]
    )
    _randomise_lora(llm, seed=1)
    llm.eval()
    path = tmp_path / "llm.ckpt"
    llm._save_trainable(path)
    saved = torch.load(path)
    trainable = {name for name, p in llm.named_parameters() if p.requires_grad}
    assert set(saved) == trainable and all("lora_" in name for name in saved)
    assert len(saved) == 2 * 3 * 2  # A and B, 3 targets, 2 layers

    prefix, suffix = llm.tokenize_prompts(INSTRUCTIONS[:2])
    answer = llm.tokenize_answers(["one two", "three"])
    audio = torch.randn(2, 5, 64)
    expected = llm(audio, torch.tensor([1.0, 0.6]), prefix, suffix, answer).logits

    fresh = LanguageModel(
        llama_dir, lora_rank=4, lora_target_modules=["q_proj", "v_proj", "down_proj"]
    )
    fresh.eval()
    before = fresh(audio, torch.tensor([1.0, 0.6]), prefix, suffix, answer).logits
    assert not torch.allclose(before, expected)
    fresh._load_trainable(path)
    after = fresh(audio, torch.tensor([1.0, 0.6]), prefix, suffix, answer).logits
    assert torch.equal(after, expected)

    other = LanguageModel(llama_dir, lora_rank=4, lora_target_modules=["q_proj"])
    with pytest.raises(KeyError, match="unknown to LanguageModel"):
        other._load_trainable(path)


def test_missing_chat_template_is_a_clear_error(tmp_path, llama_dir):
    import shutil

    from transformers import AutoTokenizer

    target = tmp_path / "llm"
    shutil.copytree(llama_dir, target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    tokenizer.chat_template = None
    (target / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(target)
    with pytest.raises(ValueError, match="has no chat template"):
        LanguageModel(str(target))


def test_pipeline_gradients_reach_trainable_parts_only(whisper_dir, llama_dir):
    mowe, projector, llm = _pipeline(whisper_dir, llama_dir)
    mowe.train(), projector.train(), llm.train()
    wavs = torch.randn(3, 8000) * 0.1
    out = mowe(wavs, torch.tensor([1.0, 0.8, 0.5]))
    audio, audio_lens = projector(out.feats, out.lens)
    prefix, suffix = llm.tokenize_prompts(INSTRUCTIONS[:3])
    answer = llm.tokenize_answers(["one", "two", "three"])
    loss = _mean_loss(llm(audio, audio_lens, prefix, suffix, answer)) + 0.1 * out.aux_loss
    loss.backward()
    used = set(out.routing.experts.flatten().tolist())
    assert all(p.grad is None for p in mowe.base.parameters())
    assert all(p.grad is not None for p in mowe.router.parameters())
    for e, expert in enumerate(mowe.weak_pool):
        assert all((p.grad is not None) == (e in used) for p in expert.parameters())
    assert all(p.grad is not None for p in projector.parameters())
    for name, param in llm.named_parameters():
        assert (param.grad is not None) == ("lora_" in name), name


def _batch(llm, instructions, seed=1):
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(len(instructions), 6, llm.embedding_dim, generator=gen)
    lens = torch.linspace(1.0, 0.5, len(instructions))
    prefix, suffix = llm.tokenize_prompts(instructions)
    return audio, lens, prefix, suffix


def _logits_and_tokens(llm, instructions, answers):
    audio, lens, prefix, suffix = _batch(llm, instructions)
    with torch.no_grad():
        out = llm(audio, lens, prefix, suffix, llm.tokenize_answers(answers))
    tokens = llm.generate(audio, lens, prefix, suffix, max_new_tokens=6, num_beams=1)
    return out.logits, tokens


def test_lora_scale_one_is_unchanged_and_zero_is_the_bare_llm(llama_dir):
    instructions, answers = INSTRUCTIONS[:3], ["one two", "eins", "a bird sings"]
    llm = LanguageModel(llama_dir, lora_rank=4, lora_dropout=0.0).eval()
    _randomise_lora(llm)
    trained = _logits_and_tokens(llm, instructions, answers)
    bare = _logits_and_tokens(LanguageModel(llama_dir, lora_rank=0).eval(), instructions, answers)
    assert not torch.allclose(trained[0], bare[0], atol=1e-3)
    llm.lora_scale = 0.0
    scaled_to_zero = _logits_and_tokens(llm, instructions, answers)
    assert torch.equal(scaled_to_zero[0], bare[0]) and scaled_to_zero[1] == bare[1]
    llm.lora_scale = 0.5
    half = _logits_and_tokens(llm, instructions, answers)[0]
    assert not torch.allclose(half, trained[0], atol=1e-4)
    llm.lora_scale = 1.0
    again = _logits_and_tokens(llm, instructions, answers)
    assert torch.equal(again[0], trained[0]) and again[1] == trained[1]
    with pytest.raises(ValueError, match="no LoRA adapters to scale"):
        LanguageModel(llama_dir, lora_rank=0).lora_scale = 0.5


def _prompt_aware(llama_dir, seed=0, **options):
    llm = LanguageModel(llama_dir, lora_rank=4, lora_dropout=0.0, prompt_aware_lora=True,
                        **options).eval()  # fmt: skip
    _randomise_lora(llm)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained adapter: weights away from 1
        for param in llm.prompt_adapter.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    return llm


def test_prompt_aware_lora_starts_as_plain_lora(llama_dir):
    instructions, answers = INSTRUCTIONS[:2], ["one two", "eins"]
    torch.manual_seed(0)
    plain = LanguageModel(llama_dir, lora_rank=4, lora_dropout=0.0).eval()
    torch.manual_seed(0)
    aware = LanguageModel(llama_dir, lora_rank=4, lora_dropout=0.0, prompt_aware_lora=True).eval()
    _randomise_lora(plain)
    _randomise_lora(aware)
    expected = _logits_and_tokens(plain, instructions, answers)
    got = _logits_and_tokens(aware, instructions, answers)
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
    assert got[1] == expected[1]
    # 2 LoRA branches (q, v) per layer, weighted per example by a trainable adapter.
    layers = aware.model.get_base_model().config.num_hidden_layers
    assert aware.prompt_adapter.net[-1].out_features == 2 * layers
    assert {n.split(".")[0] for n, p in aware.named_parameters() if p.requires_grad} == {
        "model", "prompt_adapter"
    }  # fmt: skip
    assert any(n.startswith("prompt_adapter.") for n in aware.trainable_state_dict())


def test_prompt_aware_lora_weights_branches_per_example_and_keeps_batch_invariance(llama_dir):
    llm = _prompt_aware(llama_dir)
    instructions = INSTRUCTIONS[:4]
    answers = ["one two", "eins zwei", "a bird", "happy"]
    weights = llm.prompt_adapter(llm.prompt_embedding(*llm.tokenize_prompts(instructions)))
    assert weights.shape[0] == 4 and not torch.allclose(weights[0], weights[1], atol=1e-3)
    batched = _logits_and_tokens(llm, instructions, answers)
    audio, lens, prefix, suffix = _batch(llm, instructions)
    beams = llm.generate(audio, lens, prefix, suffix, max_new_tokens=4, num_beams=2)
    for i in range(len(instructions)):
        one = [audio[i : i + 1], lens[i : i + 1]]
        one += [(ids[i : i + 1], rel[i : i + 1]) for ids, rel in (prefix, suffix)]
        with torch.no_grad():
            alone = llm(*one, llm.tokenize_answers(answers[i : i + 1]))
        kept = alone.logits.shape[1]  # its own answer's positions: the batch's last ones
        torch.testing.assert_close(alone.logits[0], batched[0][i, -kept:], atol=1e-5, rtol=1e-5)
        assert llm.generate(*one, max_new_tokens=6, num_beams=1)[0] == batched[1][i]
        assert llm.generate(*one, max_new_tokens=4, num_beams=2)[0] == beams[i]


def test_prompt_aware_lora_trains_with_gradient_checkpointing(llama_dir):
    grads = {}
    for checkpointing in (False, True):
        llm = _prompt_aware(llama_dir, gradient_checkpointing=checkpointing).train()
        audio, lens, prefix, suffix = _batch(llm, INSTRUCTIONS[:2])
        answer = llm.tokenize_answers(["a", "b"])
        _mean_loss(llm(audio, lens, prefix, suffix, answer)).backward()
        grads[checkpointing] = [p.grad for p in llm.prompt_adapter.parameters()]
    assert all(g.abs().sum() > 0 for g in grads[False])
    for plain, recomputed in zip(grads[False], grads[True]):
        torch.testing.assert_close(recomputed, plain, atol=1e-6, rtol=1e-5)
