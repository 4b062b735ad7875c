"""GGUF checkpoints: a tiny Llama written as llama.cpp lays it out converts to a
plain transformers folder that gives the original model's logits and tokens,
and what is not a readable GGUF file is refused in one line naming it."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechbrain_mowe.lobes import LanguageModel
from speechbrain_mowe.tiny import make_tiny_gguf
from speechbrain_mowe.weights import convert_gguf, sha256

TEXT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_a_converted_gguf_gives_the_original_logits_tokens_and_chat_template(tiny, tmp_path):
    folder = convert_gguf(tiny, tmp_path / "llm", expected_sha256=sha256(tiny))
    original = AutoModelForCausalLM.from_pretrained(f"{tiny}.source").eval()
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer, source_tokenizer = (
        AutoTokenizer.from_pretrained(p) for p in (folder, f"{tiny}.source")
    )
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    assert torch.equal(ids, source_tokenizer(TEXT, return_tensors="pt").input_ids)
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == TEXT  # the round trip
    assert tokenizer.chat_template == source_tokenizer.chat_template
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, original(ids).logits)
    assert not list(folder.glob("*.gguf"))  # a plain folder: no GGUF read again
    llm = LanguageModel(source=str(folder))  # the lobe loads it as any checkpoint
    assert llm.embedding_dim == original.config.hidden_size


def test_a_wrong_checksum_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="is not the expected file"):
        convert_gguf(tiny, tmp_path / "llm", expected_sha256="0" * 64)
    assert not (tmp_path / "llm").exists()


NOT_GGUF = (lambda data: b"PK" + data[2:], "is not a GGUF file: it starts with b'PKUF'")
TRUNCATED = (lambda data: data[: len(data) // 3], "does not read as a GGUF causal LM")


@pytest.mark.parametrize("damage, reason", [NOT_GGUF, TRUNCATED])
def test_a_malformed_file_is_refused_in_one_line_naming_it(tiny, tmp_path, damage, reason):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(damage(open(tiny, "rb").read()))
    with pytest.raises(ValueError) as error:
        convert_gguf(broken, tmp_path / "llm")
    assert str(error.value).startswith(f"{broken} ") and reason in str(error.value)
    assert "\n" not in str(error.value)
