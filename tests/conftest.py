"""Shared fixtures: tiny random checkpoints saved to temporary directories."""

import pytest
import torch

from speechbrain_mowe.tiny import make_tiny_llm, make_tiny_whisper


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    """A tiny Llama-shaped LM with its BPE tokenizer."""
    return make_tiny_llm(tmp_path_factory.mktemp("llama"), family="llama")


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    """A tiny Qwen2-shaped LM with its BPE tokenizer."""
    return make_tiny_llm(tmp_path_factory.mktemp("qwen2"), family="qwen2")


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory):
    """A tiny Whisper with a 30 s window."""
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="session")
def short_whisper_dir(tmp_path_factory):
    """A tiny Whisper with a 2 s window, to test long inputs cheaply."""
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper2s"), max_seconds=2)


@pytest.fixture
def wavs():
    """Three noise-like clips of 1.0, 0.62 and 0.31 s in a padded batch."""
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(3, 16000, generator=gen) * 0.1
    lens = torch.tensor([16000, 9920, 4960])
    batch = batch * (torch.arange(16000) < lens[:, None])
    return batch, lens / 16000
