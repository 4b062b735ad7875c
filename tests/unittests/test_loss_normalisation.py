"""How a batch's answer loss averages its tokens: per token, example or task."""

from pathlib import Path

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mowe.training import MoWEBrain

HPARAMS = Path(__file__).parents[2] / "hparams" / "tiny_mowe.yaml"
ANSWERS = ["one two three four five six", "a bird", "der fuchs springt", "happy"]
INSTRUCTIONS = [
    "transcribe the audio .",
    "describe the sound .",
    "transcribe the audio .",
    "what emotion does the speaker express ?",
]
TASKS = torch.tensor([0, 1, 0, 3])


@pytest.fixture(scope="module")
def model_and_batch(whisper_dir, llama_dir):
    torch.manual_seed(0)
    with open(HPARAMS) as f:
        hparams = load_hyperpyyaml(f, {"whisper_source": whisper_dir, "llm_source": llama_dir})
    model = hparams["model"].eval()
    gen = torch.Generator().manual_seed(0)
    samples = torch.tensor([16000, 12000, 9000, 14000])
    wavs = torch.randn(4, 16000, generator=gen) * 0.1 * (torch.arange(16000) < samples[:, None])
    return model, wavs, samples


def _losses(model, wavs, samples, rows, normalisation):
    """The answer loss of the examples ``rows``, as one batch."""
    rows = list(rows)
    length = int(samples[rows].max())
    prefix, suffix = model.llm.tokenize_prompts([INSTRUCTIONS[i] for i in rows])
    answer = model.llm.tokenize_answers([ANSWERS[i] for i in rows])
    with torch.no_grad():
        out = model(
            wavs[rows, :length], samples[rows] / length, prefix, suffix, answer, TASKS[rows],
            loss_normalisation=normalisation,
        )  # fmt: skip
    return out


def test_example_normalisation_is_the_mean_of_the_examples_own_losses(model_and_batch):
    model, wavs, samples = model_and_batch
    batched = _losses(model, wavs, samples, range(4), "example").answer_loss
    alone = [_losses(model, wavs, samples, [i], "token").answer_loss for i in range(4)]
    torch.testing.assert_close(batched, torch.stack(alone).mean(), rtol=1e-5, atol=1e-6)


def test_task_normalisation_is_the_mean_of_the_tasks_token_losses(model_and_batch):
    model, wavs, samples = model_and_batch
    batched = _losses(model, wavs, samples, range(4), "task").answer_loss
    per_task = [
        _losses(model, wavs, samples, rows, "token").answer_loss for rows in ([0, 2], [1], [3])
    ]
    torch.testing.assert_close(batched, torch.stack(per_task).mean(), rtol=1e-5, atol=1e-6)


def test_token_normalisation_weighs_long_answers_more(model_and_batch):
    model, wavs, samples = model_and_batch
    out = _losses(model, wavs, samples, range(4), "token")
    torch.testing.assert_close(
        out.answer_loss, out.answer_sums.sum() / out.answer_tokens.sum(), rtol=1e-6, atol=0
    )
    assert out.answer_tokens.tolist()[0] > 2 * out.answer_tokens.tolist()[3]


def test_an_unknown_normalisation_is_refused_when_the_brain_is_built(model_and_batch):
    model = model_and_batch[0]
    with pytest.raises(ValueError, match="loss_normalisation must be one of token, example, task"):
        MoWEBrain(
            modules={"model": model},
            hparams={"loss_normalisation": "word"},
            run_opts={"device": "cpu"},
        )
