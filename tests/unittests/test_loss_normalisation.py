"""How a batch's answer loss averages its tokens (per token, example or
task), and which validation loss chooses the kept checkpoint."""

from pathlib import Path

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.epoch_loop import EpochCounter, EpochCounterWithStopper
from speechbrain.utils.train_logger import FileTrainLogger

from speechbrain_mowe.checkpointing import CrashSafeCheckpointer
from speechbrain_mowe.training import MoWEBrain
from speechbrain_mowe.training.brain import SELECTION_KEY

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


def _validate(brain, epoch, losses):
    """One validation stage whose examples have the ``(task, loss_sum,
    tokens)`` of ``losses``, after a training epoch of the asr and er tasks."""
    brain.tally.reset()
    trained = brain.model.task_ids(["asr", "er"])
    brain.tally.add(trained, torch.tensor([1.0, 1.0]), torch.tensor([1, 1]))
    brain.train_stats = {}
    brain.on_stage_start(sb.Stage.VALID, epoch)
    for i, (task, loss_sum, tokens) in enumerate(losses):
        brain.evaluation.records.append(
            {"id": f"{epoch}-{i}", "source": "valid", "task": task, "options": {},
             "hypothesis": None, "answer": "", "references": [], "wav": "", "instruction": "",
             "loss_sum": loss_sum, "tokens": tokens, "experts": []}
        )  # fmt: skip
    brain.on_stage_end(sb.Stage.VALID, None, epoch)


def test_the_kept_checkpoint_has_the_lowest_task_mean_loss_of_the_trained_tasks(
    model_and_batch, tmp_path
):
    model = model_and_batch[0]
    checkpointer = CrashSafeCheckpointer(tmp_path / "save", {"model": model})
    brain = MoWEBrain(
        modules={"model": model},
        hparams={"loss_normalisation": "token", "selection_normalisation": "task",
                 "train_logger": FileTrainLogger(tmp_path / "log.txt"),
                 "epoch_counter": EpochCounter(10), "valid_search_interval": 10},
        run_opts={"device": "cpu"},
        checkpointer=checkpointer,
    )  # fmt: skip
    # Epoch 1: transcripts worse, emotions better; aac (not trained) worst.
    _validate(brain, 1, [("asr", 20.0, 10), ("er", 0.2, 1), ("aac", 90.0, 10)])
    # Epoch 2: a lower token mean, by the long transcripts, the emotions forgotten.
    _validate(brain, 2, [("asr", 10.0, 10), ("er", 2.0, 1), ("aac", 10.0, 10)])
    assert brain.selection_key() == SELECTION_KEY
    best = checkpointer.find_checkpoint(min_key=SELECTION_KEY)
    assert best.meta[SELECTION_KEY] == pytest.approx((2.0 + 0.2) / 2)
    assert best.meta["loss"] == pytest.approx(110.2 / 21)
    assert checkpointer.find_checkpoint(min_key="loss").meta["loss"] == pytest.approx(22 / 21)
    log = (tmp_path / "log.txt").read_text()
    assert "valid selection_loss: 1.10" in log and "valid selection_loss: 1.50" in log


def test_a_run_checkpointed_before_selection_loss_existed_is_chosen_by_its_loss(
    model_and_batch, tmp_path
):
    model = model_and_batch[0]
    checkpointer = CrashSafeCheckpointer(tmp_path / "save", {"model": model})
    checkpointer.save_checkpoint(meta={"loss": 1.5})
    brain = MoWEBrain(modules={"model": model}, hparams={}, run_opts={"device": "cpu"},
                      checkpointer=checkpointer)  # fmt: skip
    assert brain.selection_key() == "loss"
    assert checkpointer.find_checkpoint(min_key=brain.selection_key()).meta["loss"] == 1.5


def test_an_unknown_selection_normalisation_is_refused_when_the_brain_is_built(model_and_batch):
    with pytest.raises(ValueError, match="loss_normalisation must be one of"):
        MoWEBrain(
            modules={"model": model_and_batch[0]},
            hparams={"selection_normalisation": "sentence"},
            run_opts={"device": "cpu"},
        )


def test_an_early_stopping_counter_stops_when_the_selection_loss_stops_falling(
    model_and_batch, tmp_path
):
    counter = EpochCounterWithStopper(10, limit_to_stop=2, limit_warmup=0, direction="min")
    brain = MoWEBrain(
        modules={"model": model_and_batch[0]},
        hparams={"selection_normalisation": "task", "epoch_counter": counter,
                 "train_logger": FileTrainLogger(tmp_path / "log.txt"),
                 "valid_search_interval": 10},
        run_opts={"device": "cpu"},
        checkpointer=CrashSafeCheckpointer(tmp_path / "save", {"counter": counter}),
    )  # fmt: skip
    stopped = []
    # The token mean keeps falling (transcripts); the task mean is best at epoch 2.
    for epoch, asr, er in [(1, 3.0, 1.0), (2, 2.0, 0.5), (3, 1.0, 2.0), (4, 0.5, 3.0)]:
        assert next(counter) == epoch
        _validate(brain, epoch, [("asr", 10 * asr, 10), ("er", er, 1)])
        stopped.append(counter.should_stop)
    assert stopped == [False, False, False, True]
    assert counter.best_limit == 2
    with pytest.raises(StopIteration):
        next(counter)
