"""MoWEBrain through the LibriSpeech recipe: overfitting, exact resume, skipped
non-finite losses and unreadable batches, the feature cache, bf16, fused AdamW
and gradient checkpointing."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from fixture_corpora import load_recipe  # noqa: E402
from recipe_runs import (  # noqa: E402
    RECIPES,
    SHORT_UTTERANCES,
    make_short_librispeech,
    read_metrics,
    tiny_overrides,
)

from speechbrain_mowe.dataio import EmptyBatch, UnreadableAudio  # noqa: E402
from speechbrain_mowe.training import (  # noqa: E402
    MoWEBrain,
    setup_experiment,
    train_and_evaluate,
)
from speechbrain_mowe.training.stages import part_of  # noqa: E402

YAML = RECIPES / "LibriSpeech" / "ASR" / "hparams" / "mowe.yaml"
ANSWERS = SHORT_UTTERANCES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_short_librispeech(tmp_path_factory.mktemp("ls"))


def _run(folder, corpus, whisper_dir, llama_dir, brain_class=MoWEBrain, test="test-clean",
         yaml=YAML, **options):  # fmt: skip
    options = {"max_batch_duration": 3.0, **options}
    argv = [str(yaml), f"--data_folder={corpus}", "--train_splits=[train-clean-100]"]
    argv += [f"--valid_splits=[{test}]", f"--test_splits=[{test}]", "--lowercase=True"]
    argv += tiny_overrides(folder, whisper_dir, llama_dir, **options)
    hparams, run_opts, _ = setup_experiment(argv)
    prepare = load_recipe("LibriSpeech/librispeech_prepare.py").prepare_librispeech
    prepare(corpus, hparams["manifest_folder"], ["train-clean-100", "dev-clean", "test-clean"],
            lowercase=True)  # fmt: skip
    return train_and_evaluate(hparams, run_opts, brain_class)


class Recording(MoWEBrain):
    """Records each training step's loss and example ids."""

    steps: list

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        super().on_fit_batch_end(batch, outputs, loss, should_step)
        epoch = self.hparams.epoch_counter.current
        stage = getattr(self.hparams, "stage_name", None)
        self.steps.append(
            ((stage, epoch) if stage else epoch, list(batch.id), float(loss.detach()))
        )


class Interrupted(Exception):
    pass


def test_tiny_model_overfits_and_greedy_decoding_reproduces_answers(
    tmp_path, corpus, whisper_dir, llama_dir
):
    Recording.steps = []
    # Validated and tested on the training manifest: its prompts, its answers.
    train = "train-clean-100"
    _run(tmp_path, corpus, whisper_dir, llama_dir, Recording, train, number_of_epochs=5,
         num_samples=7 * 40, lr=0.003, warmup_steps=0, total_steps=100000, max_new_tokens=16,
         valid_search_interval=10)  # fmt: skip
    first = Recording.steps[0][2]
    last_epoch = [loss for epoch, _, loss in Recording.steps if epoch == 5]
    last = sum(last_epoch) / len(last_epoch)
    assert first > 4.0
    assert last < 0.5, f"loss went from {first:.2f} to {last:.2f}"
    result = read_metrics(tmp_path, train)
    assert result.metric(train, "asr", "WER") == 0.0, result


@pytest.mark.parametrize("settings", ["{}", "{prompt_aware_lora: True}"])
def test_resumed_run_repeats_the_uninterrupted_losses(tmp_path, corpus, whisper_dir, llama_dir,
                                                      settings):  # fmt: skip
    options = {"number_of_epochs": 2, "max_batch_duration": 2.0, "ckpt_interval_steps": 1,
               "model_settings": settings}  # fmt: skip
    Recording.steps = []
    _run(tmp_path / "whole", corpus, whisper_dir, llama_dir, Recording, **options)
    whole = Recording.steps
    steps_per_epoch = sum(1 for epoch, _, _ in whole if epoch == 1)
    assert steps_per_epoch >= 4
    kill_after = steps_per_epoch + 2  # two steps into epoch 2

    class Killed(Recording):
        def on_fit_batch_start(self, batch, should_step):
            if len(Recording.steps) == kill_after:
                raise Interrupted
            super().on_fit_batch_start(batch, should_step)

    Recording.steps = []
    with pytest.raises(Interrupted):
        _run(tmp_path / "resumed", corpus, whisper_dir, llama_dir, Killed, **options)
    before = Recording.steps
    Recording.steps = []
    _run(tmp_path / "resumed", corpus, whisper_dir, llama_dir, Recording, **options)
    after = Recording.steps

    assert [ids for _, ids, _ in before + after] == [ids for _, ids, _ in whole]
    resumed = [loss for _, _, loss in after]
    expected = [loss for _, _, loss in whole[kill_after:]]
    assert resumed == pytest.approx(expected, abs=1e-6)
    epoch2 = [i for epoch, ids, _ in before + after if epoch == 2 for i in ids]
    assert len(epoch2) == len(set(epoch2)) == len(ANSWERS)


def test_non_finite_loss_is_skipped_and_counted(tmp_path, corpus, whisper_dir, llama_dir):
    class NaNAtStep3(Recording):
        def compute_objectives(self, predictions, batch, stage):
            loss = super().compute_objectives(predictions, batch, stage)
            if stage.name == "TRAIN" and len(Recording.steps) == 2:
                self.before = [p.detach().clone() for p in self.modules.parameters()]
                return loss * float("nan")
            return loss

        def on_fit_batch_end(self, batch, outputs, loss, should_step):
            super().on_fit_batch_end(batch, outputs, loss, should_step)
            if len(Recording.steps) == 3:
                after = list(self.modules.parameters())
                self.unchanged = all(torch.equal(a, b) for a, b in zip(self.before, after))

    Recording.steps = []
    brain = _run(tmp_path, corpus, whisper_dir, llama_dir, NaNAtStep3, number_of_epochs=1)
    assert brain.unchanged
    assert torch.isnan(torch.tensor(Recording.steps[2][2]))
    assert all(torch.isfinite(torch.tensor(loss)) for _, _, loss in Recording.steps[3:])
    log = (tmp_path / "train_log.txt").read_text()
    assert "train nonfinite_losses: 1" in log
    assert all(torch.isfinite(p).all() for p in brain.modules.parameters())


def test_an_all_unreadable_batch_is_skipped_and_counted(tmp_path, corpus, whisper_dir, llama_dir):
    brain = _run(tmp_path, corpus, whisper_dir, llama_dir, number_of_epochs=1)
    before = [p.detach().clone() for p in brain.modules.parameters()]
    loss = brain.fit_batch(EmptyBatch([UnreadableAudio("x", "x.wav", "file not found")]))
    assert torch.isnan(loss)
    assert brain.tally.skipped.summary() == "1 clips skipped (1 x file not found)"
    assert all(torch.equal(a, b) for a, b in zip(before, brain.modules.parameters()))


def test_feature_cache_gives_the_same_losses(tmp_path, corpus, whisper_dir, llama_dir):
    options = {"number_of_epochs": 2}
    Recording.steps = []
    _run(tmp_path / "plain", corpus, whisper_dir, llama_dir, Recording, **options)
    plain = Recording.steps
    Recording.steps = []
    brain = _run(tmp_path / "cached", corpus, whisper_dir, llama_dir, Recording,
                 cache_features=True, **options)  # fmt: skip
    assert [loss for *_, loss in Recording.steps] == pytest.approx(
        [loss for *_, loss in plain], abs=1e-6
    )
    # The splits share ids and audio: epoch 1's training encodes each clip once;
    # the 2 validations, epoch 2's training and the test read the cache.
    assert list(brain.feature_caches) == ["base"]  # tiny_mowe's weak encoders train
    assert brain.feature_caches["base"].misses == len(ANSWERS)
    assert brain.feature_caches["base"].hits == 4 * len(ANSWERS)


def test_bf16_autocast_gives_the_fp32_losses_to_rounding(tmp_path, corpus, whisper_dir, llama_dir):
    losses = {}
    for precision in ("fp32", "bf16"):
        Recording.steps = []
        _run(tmp_path / precision, corpus, whisper_dir, llama_dir, Recording, number_of_epochs=2,
             precision=precision, eval_precision=precision)  # fmt: skip
        losses[precision] = [loss for *_, loss in Recording.steps]
    assert len(losses["bf16"]) == len(losses["fp32"]) > 2
    assert all(torch.isfinite(torch.tensor(losses["bf16"])))
    # bf16 keeps 8 bits of mantissa (about 0.4% per rounding) and the runs drift
    # apart as they train: over these 8 steps the largest relative difference
    # measured here was 1.6% (the last step); the tolerance is 5%.
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_fused_adamw_and_gradient_checkpointing_give_the_same_losses(
    tmp_path, corpus, whisper_dir, llama_dir
):
    Recording.steps = []
    _run(tmp_path / "plain", corpus, whisper_dir, llama_dir, Recording, number_of_epochs=2)
    plain = Recording.steps
    Recording.steps = []
    brain = _run(tmp_path / "fast", corpus, whisper_dir, llama_dir, Recording, number_of_epochs=2,
                 fused_adamw=True, model_settings="{gradient_checkpointing: True}")  # fmt: skip
    assert brain.optimizer.defaults["fused"] is True
    assert brain.model.llm.model.get_base_model().model.layers[0].gradient_checkpointing
    assert len(Recording.steps) == len(plain) > 2
    assert [loss for *_, loss in Recording.steps] == pytest.approx(
        [loss for *_, loss in plain], abs=1e-5
    )


STAGES = """
stages:
    - name: adapt
      trainable: [projector]
      epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter
          limit: 1
      lr_annealing: !new:speechbrain.nnet.schedulers.WarmAndExpDecayLRSchedule
          lr: 0.003
          n_warmup_steps: 2
          total_steps: 100
    - name: tune
      trainable: [projector, lora, router, weak_encoders]
      opt_class: !name:torch.optim.AdamW
          lr: 0.001
      epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter
          limit: 2
      lr_annealing: !new:speechbrain.nnet.schedulers.WarmAndExpDecayLRSchedule
          lr: 0.001
          n_warmup_steps: 1
          total_steps: 100
"""


@pytest.fixture(scope="module")
def staged_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("yaml") / "staged.yaml"
    text = YAML.read_text()
    assert "\nstages: null\n" in text
    path.write_text(text.replace("\nstages: null\n", STAGES))
    return path


def _stage_losses(steps, stage):
    return [loss for (name, _), _, loss in steps if name == stage]


def test_stages_run_in_order_and_equal_the_stages_run_one_after_the_other(
    tmp_path, corpus, whisper_dir, llama_dir, staged_yaml
):
    options = {"yaml": staged_yaml, "max_batch_duration": 2.0}
    Recording.steps = []
    brain = _run(tmp_path / "all", corpus, whisper_dir, llama_dir, Recording, **options)
    whole = Recording.steps
    assert [key for key, *_ in whole][0] == ("adapt", 1) and whole[-1][0] == ("tune", 2)
    assert len(_stage_losses(whole, "adapt")) >= 4 and len(_stage_losses(whole, "tune")) >= 8
    # Stage 1 trained the projector only; stage 2 the rest too.
    trained = {name: p for name, p in brain.model.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in trained)
    for index, name in ((1, "adapt"), (2, "tune")):
        folder = tmp_path / "all" / "stages" / f"{index}-{name}"
        assert "trained_in_stage: " + name in (folder / "inference.yaml").read_text()
    assert "trained_in_stage: tune" in (tmp_path / "all" / "inference.yaml").read_text()
    log = (tmp_path / "all" / "train_log.txt").read_text()
    assert "stage: adapt, epoch: 1" in log and "stage: tune, epoch: 2" in log

    Recording.steps = []
    first = _run(tmp_path / "first", corpus, whisper_dir, llama_dir, Recording,
                 run_stages="[adapt]", **options)  # fmt: skip
    assert _stage_losses(Recording.steps, "adapt") == _stage_losses(whole, "adapt")
    params = dict(first.model.named_parameters())
    assert {part_of(n) for n, p in params.items() if p.requires_grad} == {"projector"}
    lora_b = [p for n, p in params.items() if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)  # as initialised
    Recording.steps = []
    _run(tmp_path / "second", corpus, whisper_dir, llama_dir, Recording, run_stages="[tune]",
         init_from=tmp_path / "first" / "stages" / "1-adapt", **options)  # fmt: skip
    assert _stage_losses(Recording.steps, "adapt") == []
    assert _stage_losses(Recording.steps, "tune") == pytest.approx(
        _stage_losses(whole, "tune"), abs=1e-6
    )
    assert read_metrics(tmp_path / "second", "test-clean").loss == pytest.approx(
        read_metrics(tmp_path / "all", "test-clean").loss, abs=1e-6
    )


def test_a_run_interrupted_in_stage_2_resumes_there_with_the_same_losses(
    tmp_path, corpus, whisper_dir, llama_dir, staged_yaml
):
    options = {"yaml": staged_yaml, "max_batch_duration": 2.0, "ckpt_interval_steps": 1}
    Recording.steps = []
    _run(tmp_path / "whole", corpus, whisper_dir, llama_dir, Recording, **options)
    whole = Recording.steps
    kill_after = len(_stage_losses(whole, "adapt")) + 3  # three steps into stage 2

    class Killed(Recording):
        def on_fit_batch_start(self, batch, should_step):
            if len(Recording.steps) == kill_after:
                raise Interrupted
            super().on_fit_batch_start(batch, should_step)

    Recording.steps = []
    with pytest.raises(Interrupted):
        _run(tmp_path / "resumed", corpus, whisper_dir, llama_dir, Killed, **options)
    before = Recording.steps
    Recording.steps = []
    _run(tmp_path / "resumed", corpus, whisper_dir, llama_dir, Recording, **options)
    after = Recording.steps
    assert after[0][0][0] == "tune"  # stage 1 was not run again
    assert [ids for _, ids, _ in before + after] == [ids for _, ids, _ in whole]
    assert [loss for _, _, loss in after] == pytest.approx(
        [loss for _, _, loss in whole[kill_after:]], abs=1e-6
    )


def test_a_stage_without_its_own_schedule_is_refused(tmp_path, corpus, whisper_dir, llama_dir):
    yaml = tmp_path / "staged.yaml"
    yaml.write_text(YAML.read_text().replace("\nstages: null\n", """
stages:
    - name: only
      trainable: [projector]
      epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter
          limit: 1
"""))  # fmt: skip
    with pytest.raises(ValueError, match="stage 'only' must give its own lr_annealing"):
        _run(tmp_path / "out", corpus, whisper_dir, llama_dir, yaml=yaml)


def test_the_test_lora_scale_is_tested_and_kept_for_inference(tmp_path, corpus, whisper_dir,
                                                              llama_dir):  # fmt: skip
    _run(tmp_path / "plain", corpus, whisper_dir, llama_dir, number_of_epochs=1)
    halved = _run(tmp_path / "halved", corpus, whisper_dir, llama_dir, number_of_epochs=1,
                  test_lora_scale=0.5)  # fmt: skip
    assert halved.model.llm.lora_scale == 0.5
    assert "lora_scale: 0.5" in (tmp_path / "halved" / "inference.yaml").read_text()
    losses = [read_metrics(tmp_path / name, "test-clean").loss for name in ("plain", "halved")]
    assert losses[0] != pytest.approx(losses[1], abs=1e-6)


def test_test_predictions_are_written_for_the_harnesses(tmp_path, corpus, whisper_dir, llama_dir):
    _run(tmp_path, corpus, whisper_dir, llama_dir, number_of_epochs=1,
         benchmark_formats="[audiobench, airbench, mmau]")  # fmt: skip
    folder = tmp_path / "test_results" / "test-clean"

    def lines(name):
        return [json.loads(line) for line in (folder / name).read_text().splitlines()]

    hypotheses = lines("hypotheses.jsonl")
    audiobench = json.loads((folder / "predictions_audiobench.json").read_text())
    airbench = lines("predictions_airbench.jsonl")
    mmau = json.loads((folder / "predictions_mmau.json").read_text())
    expected = [h["hypothesis"] for h in hypotheses]
    assert [r["model_prediction"] for r in audiobench] == expected
    assert [r["response"] for r in airbench] == expected
    assert [r["model_prediction"] for r in mmau] == expected
    assert [r["uniq_id"] for r in airbench] == [h["id"] for h in hypotheses]
    assert all(Path(r["path"]).is_file() and r["task_name"] == "asr" for r in airbench)
    assert all(r["task_type"] == "ASR" and r["text"] for r in audiobench)
