"""The model families (installed with the package, ``hparams/`` in a checkout)
built from tiny random checkpoints."""

import pytest
import torch

from speechbrain_mowe.families import FAMILIES_FOLDER, FamilySpec, load_family
from speechbrain_mowe.lobes import (
    BEATsEncoder,
    FrameStackProjector,
    HuBERTEncoder,
    HybridRouter,
    InstructionRouter,
    MoWEEncoder,
    SequenceCNNProjector,
    TinyConvEncoder,
    WavLMEncoder,
    WhisperEncoder,
    WindowQFormerProjector,
    build_encoder,
    save_encoder,
)
from speechbrain_mowe.model import Decoding, MoWEAudioLLM
from speechbrain_mowe.tiny import make_tiny_beats, make_tiny_ssl, make_tiny_whisper

FAMILIES = ["base_only", "mowe_paper", "salmonn_like", "wavllm_like"]
BASE_DIM = 64  # the tiny Whisper's width
LLM_DIM = 64  # the tiny LLM's width
# 0.5 s and 0.25 s: 25 and 13 Whisper frames, inside pad30's 1500.
VALID_FRAMES = [25, 13]


def _save_ssl(path, family):
    """A tiny random HuBERT or WavLM with the real models' 320x (50 Hz) feature encoder."""
    return make_tiny_ssl(path, family)


@pytest.fixture(scope="session")
def sources(tmp_path_factory, whisper_dir, llama_dir):
    """One mapping of tiny checkpoints serving every family."""
    folder = tmp_path_factory.mktemp("families")
    return {
        "whisper_source": whisper_dir,
        "llm_source": llama_dir,
        "whisper_tiny_source": make_tiny_whisper(folder / "whisper_tiny", d_model=32),
        "hubert_source": _save_ssl(folder / "hubert", "Hubert"),
        "wavlm_source": _save_ssl(folder / "wavlm", "WavLM"),
        "beats_checkpoint": make_tiny_beats(folder / "beats.pt"),
    }


@pytest.fixture(scope="module")
def families(sources):
    """Each family loaded once (the forward checks run in eval mode only)."""
    return {name: load_family(name, sources) for name in FAMILIES}


def _frozen(module):
    return not any(p.requires_grad for p in module.parameters())


def _check_common(model, weak_dim=None, frozen_pool=True):
    """Base encoder, freezing, LLM adaptation and what every family's model has."""
    assert isinstance(model, MoWEAudioLLM)
    assert model.tasks == ["asr", "ast", "er", "aac"] and model.aux_weight == 0.1
    mowe, llm = model.mowe_encoder, model.llm
    assert isinstance(mowe, MoWEEncoder)
    assert type(mowe.base) is WhisperEncoder and mowe.base.mode == "pad30"
    assert mowe.base.long_audio == "refuse"
    assert mowe.freeze_base and _frozen(mowe.base)
    if weak_dim is not None and frozen_pool:
        assert mowe.freeze_weak and _frozen(mowe.weak_pool)
    if weak_dim is not None:
        assert mowe.weak_dim == weak_dim
        assert all(p.requires_grad for p in mowe.projections.parameters())
    lora = llm.model.peft_config["default"]
    assert (lora.r, lora.lora_alpha) == (8, 32)
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    assert llm.model.get_input_embeddings().weight.dtype == torch.bfloat16
    trainable = {n for n, p in llm.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    return mowe


def _run(model, expected_steps):
    """Encoder -> projector -> generate on a batch of two, in eval mode."""
    mowe, projector, llm = model.eval().mowe_encoder, model.projector, model.llm
    gen = torch.Generator().manual_seed(0)
    wavs = torch.randn(2, 8000, generator=gen) * 0.1
    wavs[1, 4000:] = 0
    lens = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        out = mowe(wavs, lens, torch.tensor([0, 3]))
        # pad30's 1500 frames, trimmed to the longest clip's.
        assert out.feats.shape == (2, VALID_FRAMES[0], mowe.output_dim)
        assert torch.round(out.lens * VALID_FRAMES[0]).long().tolist() == VALID_FRAMES
        for row, frames in enumerate(VALID_FRAMES):
            assert torch.all(out.feats[row, frames:] == 0)
            if mowe.num_experts:  # the weak block is filled on the valid frames
                assert torch.all(out.feats[row, :frames, BASE_DIM:].abs().sum(-1) > 0)
        audio, audio_lens = projector(out.feats, out.lens)
    assert audio.shape[-1] == llm.embedding_dim == LLM_DIM
    assert torch.round(audio_lens * audio.shape[1]).long().tolist() == expected_steps
    prefix, suffix = llm.tokenize_prompts(["transcribe the audio .", "describe the sound ."])
    answers = llm.generate(audio, audio_lens, prefix, suffix, max_new_tokens=3, num_beams=1)
    assert len(answers) == 2
    assert all(isinstance(a, list) and len(a) <= 3 for a in answers)
    return out


def test_mowe_paper(families):
    model = families["mowe_paper"]
    mowe = _check_common(model, weak_dim=1024)
    assert [type(w) for w in mowe.weak_pool] == [WhisperEncoder, HuBERTEncoder]
    tiny = mowe.weak_pool[0]
    assert (tiny.mode, tiny.output_dim) == ("pad30", 32)
    assert mowe.weak_pool[1].layer_logits is None
    router = mowe.router
    assert type(router) is HybridRouter
    assert (router.num_experts, router.top_k, router.renormalize) == (2, 1, False)
    assert router.independent.num_tasks == 4
    assert router.dependent.net.in_features == BASE_DIM
    assert mowe.weak_fusion == "sum" and isinstance(mowe.base_norm, torch.nn.Identity)
    assert mowe.output_dim == BASE_DIM + 1024
    projector = model.projector
    assert type(projector) is SequenceCNNProjector
    assert [conv.stride[0] for conv in projector.convs.layers] == [2, 2, 2]
    trainable = {n.split(".")[0] for n, p in mowe.named_parameters() if p.requires_grad}
    assert trainable == {"router", "projections"}
    out = _run(model, expected_steps=[4, 2])  # ceil(frames / 8)
    assert out.routing.experts.shape == (2, 1)


def test_base_only(families):
    model = families["base_only"]
    mowe = _check_common(model)
    assert len(mowe.weak_pool) == 0 and mowe.router is None
    assert mowe.output_dim == BASE_DIM
    assert not any(p.requires_grad for p in mowe.parameters())
    projector = model.projector
    assert type(projector) is SequenceCNNProjector
    assert [conv.stride[0] for conv in projector.convs.layers] == [2, 2, 2]
    out = _run(model, expected_steps=[4, 2])
    assert out.routing is None and float(out.aux_loss) == 0.0


def test_salmonn_like(families):
    model = families["salmonn_like"]
    mowe = _check_common(model, weak_dim=768)
    assert [type(w) for w in mowe.weak_pool] == [BEATsEncoder]
    assert mowe.router is None and mowe.weak_fusion == "concat"
    assert isinstance(mowe.base_norm, torch.nn.LayerNorm)
    assert isinstance(mowe.weak_norm, torch.nn.LayerNorm)
    assert mowe.output_dim == BASE_DIM + 768
    projector = model.projector
    assert type(projector) is WindowQFormerProjector
    assert (projector.window, projector.num_queries) == (17, 1)
    assert len(projector.qformer.layers) == 2
    assert projector.queries.shape == (1, 768)
    assert projector.qformer.layers[0].self_attn.num_heads == 12
    out = _run(model, expected_steps=[2, 1])  # ceil(frames / 17) windows, one query each
    assert out.routing is None and float(out.aux_loss) == 0.0


def test_wavllm_like(families):
    model = families["wavllm_like"]
    mowe = _check_common(model, weak_dim=768, frozen_pool=False)
    assert [type(w) for w in mowe.weak_pool] == [WavLMEncoder]
    wavlm = mowe.weak_pool[0]
    assert wavlm.layer_logits is not None and wavlm.layer_logits.numel() == 3  # 2 layers + input
    # WavLM itself is frozen and in eval mode; only its layer weights train.
    trainable = [n for n, p in wavlm.named_parameters() if p.requires_grad]
    assert trainable == ["layer_logits"] and not wavlm.lobe.training
    mowe.train()
    assert not wavlm.lobe.training
    feats, _ = wavlm(torch.randn(2, 8000) * 0.1, torch.tensor([1.0, 0.5]))
    feats.sum().backward()
    assert wavlm.layer_logits.grad is not None and wavlm.layer_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in wavlm.lobe.parameters())
    assert mowe.router is None and mowe.weak_fusion == "concat"
    assert isinstance(mowe.base_norm, torch.nn.Identity)
    assert mowe.output_dim == BASE_DIM + 768
    projector = model.projector
    assert type(projector) is FrameStackProjector and projector.stack == 4
    out = _run(model, expected_steps=[7, 4])  # ceil(frames / 4)
    assert out.routing is None


def test_widths_and_dtype_are_overridable(sources):
    model = load_family(
        "salmonn_like", sources, settings={"weak_dim": 16, "qformer_dim": 32},
        qformer_heads=4, llm_dtype="float32",
    )  # fmt: skip
    assert model.mowe_encoder.output_dim == BASE_DIM + 16
    assert model.projector.queries.shape == (1, 32)
    assert model.projector.qformer.layers[0].self_attn.num_heads == 4
    assert model.llm.model.get_input_embeddings().weight.dtype == torch.float32
    # The model records how it was built: the family, the sources it used, every setting.
    assert model.built_from == FamilySpec(
        "salmonn_like",
        (FAMILIES_FOLDER / "salmonn_like.yaml").read_text(),
        {key: sources[key] for key in ("whisper_source", "beats_checkpoint", "llm_source")},
        ("asr", "ast", "er", "aac"),
        {"weak_dim": 16, "qformer_dim": 32, "qformer_heads": 4, "llm_dtype": "float32",
         "long_audio": "refuse", "attn_implementation": None, "gradient_checkpointing": False,
         "prompt_aware_lora": False, "projector_norm": 1.0},
    )  # fmt: skip


def test_tasks_set_the_router_and_unknown_settings_are_named(sources):
    model = load_family("mowe_paper", sources, tasks=["asr", "er"], top_k=2)
    assert model.tasks == ["asr", "er"]
    assert model.mowe_encoder.router.independent.num_tasks == 2
    assert model.mowe_encoder.router.top_k == 2
    with pytest.raises(ValueError, match="'base_only' has no setting 'top_k'; its settings are: "
                                         "tasks, llm_dtype, long_audio, attn_implementation, "
                                         "gradient_checkpointing, prompt_aware_lora"):  # fmt: skip
        load_family("base_only", sources, top_k=2)
    with pytest.raises(ValueError, match="has no setting 'router'"):  # an object, not a setting
        load_family("mowe_paper", sources, router=None)
    # Settings belong in the settings, not in the sources; renamed keys are named.
    with pytest.raises(ValueError, match="'llm_dtype' is a setting of model family 'base_only'"):
        load_family("base_only", {**sources, "llm_dtype": "float16"})
    with pytest.raises(ValueError, match="'long_input' is no longer .* use the setting long_audio"):
        load_family("base_only", sources, long_input="chunk")


@pytest.mark.parametrize(
    "family, missing",
    [
        ("mowe_paper", "hubert_source"),
        ("mowe_paper", "whisper_tiny_source"),
        ("salmonn_like", "beats_checkpoint"),
        ("wavllm_like", "wavlm_source"),
        ("base_only", "llm_source"),
    ],
)
def test_missing_source_names_the_key(sources, family, missing):
    given = {key: value for key, value in sources.items() if key != missing}
    with pytest.raises(ValueError, match=f"'{missing}' is a !PLACEHOLDER") as err:
        load_family(family, given)
    assert f"Model family '{family}'" in str(err.value)
    assert "model_sources" in str(err.value)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="Unknown model family 'nope'") as err:
        load_family("nope")
    for name in FAMILIES + ["tiny_mowe"]:
        assert name in str(err.value)


@pytest.fixture(scope="module")
def conv_sources(tmp_path_factory, llama_dir):
    """A saved base encoder (as the synthetic recipe's CTC pre-training writes it)."""
    path = tmp_path_factory.mktemp("conv") / "encoder.ckpt"
    torch.manual_seed(0)
    base = build_encoder("tiny_conv", channels=[16, 24], strides=[2, 1])
    save_encoder(path, base, "tiny_conv", channels=[16, 24], strides=[2, 1])
    return {"base_checkpoint": str(path), "llm_source": llama_dir}, base


@pytest.mark.parametrize("name", ["conv_mowe", "conv_base_only"])
def test_conv_families(conv_sources, name):
    sources, saved = conv_sources
    model = load_family(name, sources)
    mowe, llm = model.mowe_encoder, model.llm
    # The base is the saved encoder, frozen, with its saved weights.
    assert mowe.base.output_dim == 24 and mowe.base.frame_rate == 50
    assert mowe.freeze_base and _frozen(mowe.base)
    for (key, value), (_, expected) in zip(
        mowe.base.state_dict().items(), saved.state_dict().items()
    ):
        assert torch.equal(value, expected), key
    # The small random LLM trains whole, without adapters.
    assert not hasattr(llm.model, "peft_config")
    assert all(p.requires_grad for p in llm.model.parameters())
    wavs = torch.randn(2, 8000) * 0.1
    lens = torch.tensor([1.0, 0.5])
    with torch.no_grad():
        out = mowe.eval()(wavs, lens, torch.tensor([0, 3]))
    assert torch.round(out.lens * out.feats.shape[1]).long().tolist() == [25, 13]
    if name == "conv_mowe":
        assert [type(w) for w in mowe.weak_pool] == [TinyConvEncoder] * 3
        assert type(mowe.router) is HybridRouter and mowe.router.top_k == 1
        assert mowe.output_dim == 24 + 64 and out.routing.experts.shape == (2, 1)
    else:
        assert len(mowe.weak_pool) == 0 and mowe.router is None and mowe.output_dim == 24
    audio, _ = model.projector(out.feats, out.lens)
    assert audio.shape == (2, 7, llm.embedding_dim)  # ceil(25 / 4) steps


def test_conv_family_refuses_a_file_that_is_not_an_encoder(tmp_path, llama_dir):
    path = tmp_path / "weights.ckpt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not an encoder file written by save_encoder"):
        load_family("conv_mowe", {"base_checkpoint": str(path), "llm_source": llama_dir})
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        load_family(
            "conv_mowe",
            {"base_checkpoint": str(tmp_path / "missing.ckpt"), "llm_source": llama_dir},
        )


@pytest.mark.parametrize("kind", ["instruction", "instruction_dependent"])
def test_whisper_mowe_routes_by_the_instruction(conv_sources, whisper_dir, tmp_path, kind):
    sources = {"whisper_source": whisper_dir, "llm_source": conv_sources[0]["llm_source"]}
    for name in ("prosody", "events"):
        sources[f"{name}_checkpoint"] = str(tmp_path / f"{name}.ckpt")
        save_encoder(sources[f"{name}_checkpoint"], build_encoder("tiny_conv"), "tiny_conv")
    model = load_family("whisper_mowe", sources, router_kind=kind).eval()
    router = model.mowe_encoder.router
    assert type(router) is InstructionRouter and model.mowe_encoder.reads_instruction
    assert (router.dependent is not None) == (kind == "instruction_dependent")
    wavs, lens = torch.randn(2, 16000) * 0.1, torch.tensor([1.0, 0.6])
    answers = model.answer(wavs, lens, ["transcribe the audio .", "describe the sound ."],
                           decoding=Decoding(max_new_tokens=2))  # no task ids  # fmt: skip
    assert len(answers) == 2
