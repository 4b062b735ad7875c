"""CTranslate2 Whisper checkpoints read and converted to transformers' Whisper.

A CTranslate2 ``model.bin`` is little-endian::

    u32 version (6) | string spec name (``WhisperSpec``) | u32 revision | u32 count
    count x ( string name | u8 rank | rank x u32 dims | u8 dtype | u32 bytes | bytes )
    u32 aliases | aliases x ( string alias | string target )

where a string is a u16 byte length and the bytes (a trailing NUL dropped).
:func:`read_ctranslate2` reads it into arrays; :func:`convert_whisper` maps a
``WhisperSpec`` onto a transformers ``WhisperForConditionalGeneration`` (the
fused self-attention q/k/v and cross-attention k/v split, the key bias, which
CTranslate2 stores as zeros, dropped, the output projection tied to the
decoder embeddings) and saves it, with its tokenizer, feature extractor and
generation settings, as a folder that ``from_pretrained`` and
:class:`~speechbrain_mowe.lobes.WhisperEncoder` load like any Whisper checkpoint.
"""

import json
import re
import struct
from pathlib import Path
from typing import BinaryIO, Dict, NamedTuple, Optional

import numpy as np
import torch

from speechbrain_mowe.artifacts import sha256

#: CTranslate2's data type codes.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
#: The only layout version read here.
VERSION = 6


class CTranslate2Model(NamedTuple):
    """What a ``model.bin`` holds: the spec's name and revision, the variables
    (aliases resolved to their targets) and the aliases themselves."""

    spec: str
    revision: int
    variables: Dict[str, np.ndarray]
    aliases: Dict[str, str]


class _Reader:
    """Little-endian fields of a file, with an error naming the file when it ends early."""

    def __init__(self, file: BinaryIO, path):
        self.file, self.path = file, path

    def read(self, size: int) -> bytes:
        data = self.file.read(size)
        if len(data) != size:
            raise ValueError(f"{self.path} ends early: not a complete CTranslate2 model")
        return data

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        return self.read(self.unpack("H")).decode("utf-8").rstrip("\0")


def read_ctranslate2(path) -> CTranslate2Model:
    """Reads a CTranslate2 ``model.bin``.

    Raises
    ------
    ValueError
        The file is not a CTranslate2 model of layout :data:`VERSION`, ends
        early, has trailing bytes, or holds a variable whose size does not
        match its dims and type (the message names the file and the variable).
    """
    path = Path(path)
    with open(path, "rb") as file:
        reader = _Reader(file, path)
        version = reader.unpack("I")
        if version != VERSION:
            raise ValueError(
                f"{path} is not a CTranslate2 model of layout {VERSION} (its header says {version})"
            )
        spec, revision, count = reader.string(), reader.unpack("I"), reader.unpack("I")
        variables = {}
        for _ in range(count):
            name = reader.string()
            dims = [reader.unpack("I") for _ in range(reader.unpack("B"))]
            code, size = reader.unpack("B"), reader.unpack("I")
            if code not in DTYPES:
                raise ValueError(f"{path}: variable {name} has an unknown data type {code}")
            dtype = np.dtype(DTYPES[code])
            if size != int(np.prod(dims, dtype=np.int64)) * dtype.itemsize:
                raise ValueError(
                    f"{path}: variable {name} holds {size} bytes, not the {dims} {dtype} "
                    "its header announces"
                )
            variables[name] = np.frombuffer(reader.read(size), dtype=dtype).reshape(dims)
        aliases = {}
        for _ in range(reader.unpack("I")):
            alias, target = reader.string(), reader.string()
            if target not in variables:
                raise ValueError(f"{path}: alias {alias} names a missing variable {target}")
            aliases[alias] = target
        if file.read(1):
            raise ValueError(f"{path} has bytes after its aliases: not a CTranslate2 model")
    variables.update({alias: variables[target] for alias, target in aliases.items()})
    return CTranslate2Model(spec, revision, variables, aliases)


def _split_attention(prefix: str, get, names, hf_prefix: str, state: Dict) -> None:
    """Fused CTranslate2 projections -> transformers' q/k/v (k without bias)."""
    for fused, parts in names.items():
        weight, bias = get(f"{prefix}/{fused}/weight"), get(f"{prefix}/{fused}/bias")
        width = weight.shape[1]
        for index, part in enumerate(parts):
            rows = slice(index * width, (index + 1) * width)
            state[f"{hf_prefix}.{part}_proj.weight"] = weight[rows]
            if part == "k":
                if np.any(bias[rows] != 0):
                    raise ValueError(f"{prefix}/{fused}: the key bias is not zero")
            else:
                state[f"{hf_prefix}.{part}_proj.bias"] = bias[rows]


def _layer_count(variables, side: str) -> int:
    pattern = re.compile(rf"{side}/layer_(\d+)/")
    found = {int(m.group(1)) for m in map(pattern.match, variables) if m}
    return max(found) + 1 if found else 0


def whisper_state_dict(model: CTranslate2Model) -> Dict[str, torch.Tensor]:
    """The variables of a ``WhisperSpec`` as a transformers Whisper state dict (float32)."""
    variables = model.variables

    def get(name):
        if name not in variables:
            raise ValueError(f"the WhisperSpec lacks the variable {name}")
        return variables[name].astype(np.float32)

    state = {}

    def norm(ct2: str, hf: str):
        state[f"{hf}.weight"], state[f"{hf}.bias"] = get(f"{ct2}/gamma"), get(f"{ct2}/beta")

    def linear(ct2: str, hf: str):
        state[f"{hf}.weight"], state[f"{hf}.bias"] = get(f"{ct2}/weight"), get(f"{ct2}/bias")

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        state[f"{hf}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
        norm(f"{side}/layer_norm", f"{hf}.layer_norm")
        for i in range(_layer_count(variables, side)):
            ct2, layer = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            norm(f"{ct2}/self_attention/layer_norm", f"{layer}.self_attn_layer_norm")
            _split_attention(f"{ct2}/self_attention", get, {"linear_0": "qkv"},
                             f"{layer}.self_attn", state)  # fmt: skip
            linear(f"{ct2}/self_attention/linear_1", f"{layer}.self_attn.out_proj")
            norm(f"{ct2}/ffn/layer_norm", f"{layer}.final_layer_norm")
            linear(f"{ct2}/ffn/linear_0", f"{layer}.fc1")
            linear(f"{ct2}/ffn/linear_1", f"{layer}.fc2")
            if side == "decoder":
                norm(f"{ct2}/attention/layer_norm", f"{layer}.encoder_attn_layer_norm")
                _split_attention(f"{ct2}/attention", get, {"linear_0": "q", "linear_1": "kv"},
                                 f"{layer}.encoder_attn", state)  # fmt: skip
                linear(f"{ct2}/attention/linear_2", f"{layer}.encoder_attn.out_proj")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    state["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}


def _whisper_config(model: CTranslate2Model, special: Dict[str, int]):
    from transformers import WhisperConfig

    variables = model.variables
    d_model = variables["decoder/embeddings/weight"].shape[1]
    return WhisperConfig(
        vocab_size=variables["decoder/embeddings/weight"].shape[0],
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=special["<|endoftext|>"],
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=special["<|endoftext|>"],
        decoder_start_token_id=special["<|startoftranscript|>"],
        tie_word_embeddings=True,
    )


def convert_whisper(model_dir, save_dir, expected_sha256: Optional[str] = None) -> Path:
    """Converts a CTranslate2 Whisper folder into a transformers Whisper folder.

    Arguments
    ---------
    model_dir : str or Path
        Holds ``model.bin`` (a ``WhisperSpec``), ``config.json`` (CTranslate2's:
        ``suppress_ids``, ``suppress_ids_begin``, ``alignment_heads``) and
        ``tokenizer.json``.
    save_dir : str or Path
        Receives the transformers folder: ``config.json``, the weights,
        ``generation_config.json``, the tokenizer and ``preprocessor_config.json``.
    expected_sha256 : str, optional
        Refuse a ``model.bin`` with another checksum.

    Returns
    -------
    Path
        ``save_dir``.
    """
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    model_dir, save_dir = Path(model_dir), Path(save_dir)
    weights = model_dir / "model.bin"
    if expected_sha256 is not None and sha256(weights) != expected_sha256:
        raise ValueError(f"{weights} is not the expected file (SHA-256 {expected_sha256})")
    model = read_ctranslate2(weights)
    if model.spec != "WhisperSpec":
        raise ValueError(f"{weights} holds a {model.spec}, not a WhisperSpec")
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    special = {token: tokenizer.convert_tokens_to_ids(token) for token in
               ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")}  # fmt: skip
    config = _whisper_config(model, special)
    with torch.device("meta"):
        whisper = WhisperForConditionalGeneration(config)
    state = whisper_state_dict(model)
    whisper.load_state_dict(state, strict=False, assign=True)
    whisper.tie_weights()
    missing = [n for n, p in whisper.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"{weights}: the WhisperSpec gives no value for {missing[:5]}")
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    english_only = config.vocab_size < 51865
    whisper.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        no_timestamps_token_id=special["<|notimestamps|>"],
        forced_decoder_ids=[[1, special["<|notimestamps|>"]]] if english_only else None,
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        alignment_heads=ct2_config.get("alignment_heads", []),
        is_multilingual=not english_only,
        max_length=config.max_target_positions,
    )
    whisper.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(save_dir)
    return save_dir
