"""Causal LMs in GGUF, llama.cpp's format, converted once into transformers folders.

transformers reads a GGUF file and dequantizes its weights to float
(``from_pretrained(folder, gguf_file=...)``, with the ``gguf`` package) but
refuses to ``save_pretrained`` the model it read. :func:`convert_gguf` copies
those weights into a plain model of the same configuration and saves it with
its tokenizer and chat template, so every later model loads an ordinary
folder: no ``gguf`` needed, no dequantization at each start.
"""

from pathlib import Path
from typing import Optional

import torch

from speechbrain_mowe.artifacts import sha256

#: What every GGUF file starts with.
GGUF_MAGIC = b"GGUF"


def convert_gguf(gguf_file, save_dir, expected_sha256: Optional[str] = None) -> Path:
    """Converts a GGUF causal LM (weights, tokenizer, chat template) into a
    transformers folder.

    Arguments
    ---------
    gguf_file : str or Path
        The ``.gguf`` file.
    save_dir : str or Path
        Receives ``config.json``, ``model.safetensors`` (float32) and the
        tokenizer files.
    expected_sha256 : str, optional
        The file's pinned SHA-256, checked first.

    Returns
    -------
    Path
        ``save_dir``.

    Raises
    ------
    ValueError
        One line naming the file: another checksum, not a GGUF file, or a
        GGUF file transformers cannot read (truncated, another architecture).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.tiny import make_tiny_gguf
    >>> tmp = Path(tempfile.mkdtemp())
    >>> folder = convert_gguf(make_tiny_gguf(tmp / "tiny.gguf"), tmp / "llm")
    >>> sorted(p.name for p in folder.glob("*.json"))[:2]
    ['config.json', 'generation_config.json']
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_file)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise ValueError(f"{path} is not the expected file (SHA-256 {expected_sha256})")
    with open(path, "rb") as file:
        magic = file.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file: it starts with {magic!r}, not {GGUF_MAGIC!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        read = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
    except Exception as error:  # the reader's errors: struct, KeyError, ValueError, ...
        raise ValueError(
            f"{path} does not read as a GGUF causal LM ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:300]})"
        ) from error
    plain = type(read)(read.config)
    plain.load_state_dict(read.state_dict())
    plain.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    return Path(save_dir)
