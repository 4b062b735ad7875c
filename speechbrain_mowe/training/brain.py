"""The SpeechBrain ``Brain`` that trains and evaluates a MoWE audio LLM.

The model is one module, ``modules.model``, a
:class:`~speechbrain_mowe.model.MoWEAudioLLM`: its forward gives the training
objective (answer cross-entropy + the router loss) and its generation the
answers. Training logs each task's loss and each weak encoder's share of
each task (:class:`~speechbrain_mowe.training.tally.EpochTally`); validation
and test decode with batched generation and score each (dataset, task)
(:class:`~speechbrain_mowe.training.evaluation.Evaluation`); ``evaluate``
writes ``<output_folder>/test_results/<test set>/``.

What it adds to SpeechBrain's ``Brain``, each where SpeechBrain's own does
not suffice:

- a non-finite loss (or a batch whose clips are all unreadable) is not
  back-propagated, and an accumulation window with nothing finite on any rank
  is not stepped; a non-finite gradient drops the whole step (under DDP the
  rank with the non-finite loss back-propagates zero through its graph to
  stay in step, which can still carry non-finite values: the whole step is
  then dropped on every rank);
- under DDP, a rank with nothing to train on runs a zero-loss step on a
  silent clip so that all ranks stay in step; evaluation runs outside the
  DDP wrapper and is gathered once;
- the train loader's :class:`~speechbrain_mowe.dataio.DurationBatchSampler`
  shards itself (it is never wrapped in ``DistributedSamplerWrapper``);
- checkpoints add the epoch's tally and every rank's random generators, so
  a resumed run draws the same dropout and router noise as an uninterrupted
  one (the data order follows from the seed and the epoch).
"""

import functools
import logging
import random
from pathlib import Path
from typing import Dict

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import if_main_process, is_distributed_initialized

from speechbrain_mowe.dataio import DurationBatchSampler, EmptyBatch, FeatureCache
from speechbrain_mowe.model import Decoding, ModelOutput, MoWEAudioLLM, check_loss_normalisation
from speechbrain_mowe.tasks import get_task
from speechbrain_mowe.training.distributed import all_reduce_sum, gather_objects
from speechbrain_mowe.training.evaluation import Evaluation, EvaluationResult
from speechbrain_mowe.training.tally import EpochTally

logger = logging.getLogger(__name__)

#: The checkpoint meta key of the validation loss that chooses the kept
#: checkpoint (see ``selection_normalisation`` in :class:`MoWEBrain`).
SELECTION_KEY = "selection_loss"


class UnusableTrainingData(ValueError):
    """Too many clips of a training epoch could not be read."""


def rng_states() -> Dict:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators."""
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict):
    """Restores what :func:`rng_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@functools.partial(register_checkpoint_hooks, save_on_main_only=False)
class MoWEBrain(sb.Brain):
    """Trains and evaluates ``modules["model"]``, a :class:`MoWEAudioLLM`.

    Hyperparameters read, besides SpeechBrain's run options (all optional
    but ``epoch_counter``, ``train_logger`` and ``output_folder``):

    - ``max_new_tokens``, ``num_beams``: decoding (defaults of
      :class:`~speechbrain_mowe.model.Decoding`);
    - ``valid_search_interval``: decode during validation every this many
      epochs and at the last one (default 1; other epochs report the loss only);
    - ``scorer_options``: ``{task: {option: value}}`` for the tasks' scorers;
    - ``cache_features``, ``feature_cache_folder``: cache the features of the
      frozen encoders, the base and the frozen weak encoders
      (:class:`~speechbrain_mowe.dataio.FeatureCache`), also in memory when
      ``feature_cache_in_memory``;
    - ``lr_annealing``: a SpeechBrain scheduler called with the optimizer
      after each optimizer step;
    - ``benchmark_formats``: also write each test set's predictions in these
      harnesses' formats (:mod:`speechbrain_mowe.benchmark_formats`);
    - ``test_lora_scale``: the factor of the LoRA scale when testing
      (default 1; see :attr:`~speechbrain_mowe.lobes.LanguageModel.lora_scale`);
    - ``loss_normalisation``: how the answer loss averages the answer tokens
      of a batch, in training and validation: ``token`` (the default), ``example``
      or ``task`` (see :func:`~speechbrain_mowe.model.answer_loss`);
    - ``selection_normalisation``: which validation loss chooses the kept
      checkpoint (:data:`SELECTION_KEY` in its meta; default: as
      ``loss_normalisation``): the answer loss averaged per ``token``,
      ``example`` or ``task``, over the tasks the epoch trained
      (:meth:`~speechbrain_mowe.training.evaluation.Evaluation.loss`); an
      ``epoch_counter`` with ``update_metric`` (SpeechBrain's
      ``EpochCounterWithStopper``) is given it too, to stop early;
    - ``stage_name``: the training stage, named in the log
      (:mod:`~speechbrain_mowe.training.stages`).

    See ``recipes/*/train.py`` and :func:`speechbrain_mowe.training.train_and_evaluate`.
    """

    def __init__(
        self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None
    ):
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        if not isinstance(self.model, MoWEAudioLLM):
            raise TypeError(f"modules['model'] must be a MoWEAudioLLM, not {type(self.model)}")
        if self.distributed_launch and not self.find_unused_parameters:
            logger.info("Turning on find_unused_parameters: top-k routing leaves experts idle")
            self.find_unused_parameters = True
        if not self.scaler.is_enabled():
            # Skip the whole step when any gradient is non-finite (see check_gradients).
            self.skip_nonfinite_grads = True
        self.scorer_options = self._checked_scorer_options()
        self.tally = EpochTally(self.model.tasks, self.model.experts)
        self.finite_in_window = 0
        self.feature_caches = self._feature_caches()
        given = {key: getattr(self.hparams, key) for key in ("max_new_tokens", "num_beams")
                 if hasattr(self.hparams, key)}  # fmt: skip
        self.decoding = Decoding(**given)
        self.loss_normalisation = getattr(self.hparams, "loss_normalisation", "token")
        self.selection_normalisation = getattr(
            self.hparams, "selection_normalisation", self.loss_normalisation
        )
        for normalisation in (self.loss_normalisation, self.selection_normalisation):
            check_loss_normalisation(normalisation)  # at start-up, not at the first step
        self.evaluation = None
        self.test_results: Dict[str, EvaluationResult] = {}

    def _checked_scorer_options(self) -> Dict[str, Dict]:
        """``scorer_options``, with an option the task's scorer does not take
        refused now rather than when first scoring; options of tasks the model
        does not have are left out, with a warning."""
        for name in self.model.tasks:
            get_task(name)  # every task of the model is registered
        checked = {}
        for name, options in (getattr(self.hparams, "scorer_options", None) or {}).items():
            if name not in self.model.tasks:
                logger.warning(
                    "scorer_options of task '%s' left out: the model's tasks are %s",
                    name,
                    self.model.tasks,
                )
                continue
            checked[name] = dict(options or {})
            get_task(name).check_scorer_options(checked[name])
        return checked

    def _feature_caches(self) -> Dict[str, FeatureCache]:
        """A cache per frozen encoder (``base``, ``weak_<i>``), when ``cache_features``."""
        if not getattr(self.hparams, "cache_features", False):
            return {}
        mowe, folder = self.model.mowe_encoder, self.hparams.feature_cache_folder
        frozen = {"base": mowe.base} if mowe.freeze_base else {}
        if mowe.freeze_weak:
            frozen.update((f"weak_{i}", expert) for i, expert in enumerate(mowe.weak_pool))
        memory = getattr(self.hparams, "feature_cache_in_memory", False)
        return {name: FeatureCache(folder, e, keep_in_memory=memory) for name, e in frozen.items()}

    def _cached_features(self, batch, stage):
        """``(base_output, weak_outputs)`` from the caches (None where there is none;
        never the base's while it augments its input in training)."""
        wavs, wav_lens = batch.sig
        mowe = self.model.mowe_encoder

        def cached(name, encoder):
            cache = self.feature_caches.get(name)
            if cache is None or (stage == sb.Stage.TRAIN and encoder.augments_input):
                return None
            return cache.encode(batch.id, wavs, wav_lens)

        weak = [cached(f"weak_{i}", expert) for i, expert in enumerate(mowe.weak_pool)]
        return cached("base", mowe.base), (weak if any(w is not None for w in weak) else None)

    @property
    def model(self) -> MoWEAudioLLM:
        """The model (unwrapped from DDP)."""
        module = self.modules["model"]
        return getattr(module, "module", module)

    @property
    def nonfinite_count(self) -> int:
        """SpeechBrain's count of this epoch's non-finite losses, kept in the
        checkpointed epoch tally (one count, exact across a resume)."""
        return self.tally.nonfinite

    @nonfinite_count.setter
    def nonfinite_count(self, value: int):
        # SpeechBrain zeroes it when an epoch's pass starts, a resumed one too,
        # whose count came back with the tally.
        if value == 0 and self.step > 0:
            return
        self.tally.nonfinite = value

    # ------------------------------------------------------------ computation
    def compute_forward(self, batch, stage) -> ModelOutput:
        """The model's teacher-forced forward (evaluation bypasses DDP)."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        base_output, weak_outputs = self._cached_features(batch, stage)
        model = self.modules["model"] if stage == sb.Stage.TRAIN else self.model
        task_ids = torch.as_tensor(batch.task_id, device=self.device)
        return model(
            wavs, wav_lens, batch.prefix, batch.suffix, batch.answer_tokens, task_ids,
            base_output, weak_outputs, loss_normalisation=self.loss_normalisation,
        )  # fmt: skip

    def compute_objectives(self, predictions: ModelOutput, batch, stage) -> torch.Tensor:
        """The training objective (tallied per task), or the answer loss."""
        if stage != sb.Stage.TRAIN:
            return predictions.answer_loss
        if torch.isfinite(predictions.loss):
            routing = predictions.audio.encoded.routing
            self.tally.add(
                torch.as_tensor(batch.task_id),
                predictions.answer_sums,
                predictions.answer_tokens,
                None if routing is None else routing.experts,
            )
        return predictions.loss

    # --------------------------------------------------------------- training
    def _train_loader_specifics(self, dataset, loader_kwargs):
        # Overridden: SpeechBrain would wrap our sampler in a
        # DistributedSamplerWrapper, whose length is fixed; it shards itself.
        sampler = loader_kwargs.get("batch_sampler")
        if isinstance(sampler, DurationBatchSampler):
            self.train_sampler = sampler  # SpeechBrain calls its set_epoch
            return loader_kwargs
        return super()._train_loader_specifics(dataset, loader_kwargs)

    def fit_batch(self, batch):
        """SpeechBrain's ``fit_batch``, except that a non-finite loss or an
        all-unreadable batch adds nothing to the gradients: SpeechBrain would
        back-propagate it, which spoils the whole accumulation window."""
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.tally.skipped.add(batch)
        if isinstance(batch, EmptyBatch):
            if self.distributed_launch:
                self._zero_loss_step(should_step)
            elif should_step:
                self.optimizers_step()
            return torch.tensor(float("nan"))
        self.on_fit_batch_start(batch, should_step)
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
                loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            if torch.isfinite(loss):
                self.finite_in_window += 1
                self.scaler.scale(loss / self.grad_accumulation_factor).backward()
            else:
                logger.warning("Non-finite loss %s on batch %s; skipped", loss.item(), batch.id)
                self.check_loss_isfinite(loss)  # counts it; stops past nonfinite_patience
                if self.distributed_launch:
                    # A backward pass keeps DDP ranks in step; it adds zero.
                    (0.0 * torch.nan_to_num(loss, 0.0, 0.0, 0.0)).backward()
        if should_step:
            self.optimizers_step()
        self.on_fit_batch_end(batch, outputs, loss, should_step)
        return loss.detach().cpu()

    def _zero_loss_step(self, should_step):
        """A forward and backward pass on a silent clip that adds zero gradient,
        so that a rank with nothing to train on stays in step with the others."""
        llm = self.model.llm
        prefix, suffix = llm.tokenize_prompts(["."])
        wavs = torch.zeros(1, 16000, device=self.device)
        ones = torch.ones(1, device=self.device)
        task_ids = torch.zeros(1, dtype=torch.long, device=self.device)
        with self.no_sync(not should_step):
            out = self.modules["model"](
                wavs, ones, prefix, suffix, llm.tokenize_answers(["."]), task_ids
            )
            (0.0 * out.loss).backward()
        if should_step:
            self.optimizers_step()

    def optimizers_step(self):
        """SpeechBrain's step, then the learning-rate schedule; skipped (the
        gradients dropped) when no rank accumulated a finite loss since the
        last one: there is nothing to learn from, and fp16's GradScaler cannot
        step without gradients."""
        finite = torch.tensor(float(self.finite_in_window))
        all_reduce_sum(finite)
        self.finite_in_window = 0
        if finite == 0:
            self.zero_grad(set_to_none=True)
            return
        super().optimizers_step()
        scheduler = getattr(self.hparams, "lr_annealing", None)
        if scheduler is not None:
            scheduler(self.optimizer)

    def check_gradients(self):
        """Drops every gradient (so the step changes nothing) if any is
        non-finite; SpeechBrain's drops only the non-finite ones, stepping the
        other parameters on a partial gradient."""
        params = [p for p in self.modules.parameters() if p.grad is not None]
        # One device-to-host synchronisation, not one per parameter.
        if params and not bool(torch.stack([torch.isfinite(p.grad).all() for p in params]).all()):
            logger.warning("Non-finite gradients; the optimizer step is skipped")
            if if_main_process():  # every rank sees the same reduced gradients
                self.nonfinite_count += 1
            for p in params:
                p.grad = None

    # ------------------------------------------------------------- evaluation
    def _decode_now(self, stage, epoch) -> bool:
        if stage == sb.Stage.TEST:
            return True
        interval = getattr(self.hparams, "valid_search_interval", 1)
        last = getattr(self.hparams.epoch_counter, "limit", None)
        return epoch is not None and (epoch % interval == 0 or epoch == last)

    @torch.no_grad()
    def evaluate_batch(self, batch, stage):
        """Teacher-forced loss, then (when decoding) batched generation."""
        self.evaluation.skipped.add(batch)
        if isinstance(batch, EmptyBatch):
            return torch.tensor(float("nan"))
        with self.evaluation_ctx:
            output = self.compute_forward(batch, stage)
            hypotheses = None
            if self.evaluation.decoding:
                hypotheses = self.model.generate(
                    output.audio, batch.prefix, batch.suffix, self.decoding
                )
        self.evaluation.add(batch, output, hypotheses)
        return self.compute_objectives(output, batch, stage).detach().cpu()

    def on_stage_start(self, stage, epoch=None):
        """A new epoch tally (unless resuming mid-epoch), or a new evaluation."""
        if stage == sb.Stage.TRAIN:
            if self.step == 0:
                self.tally.reset()
                self.finite_in_window = 0
        else:
            self.evaluation = Evaluation(self.model.experts, self._decode_now(stage, epoch))
        if stage == sb.Stage.TEST:
            self.model.llm.lora_scale = getattr(self.hparams, "test_lora_scale", 1.0)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch; scores the evaluation (and checkpoints after validation)."""
        if stage == sb.Stage.TRAIN:
            self.tally.all_reduce()
            self.train_stats = {"loss": stage_loss, **self.tally.summary()}
            logger.info("Epoch %s: %s", epoch, self.tally.skipped.summary())
            self._refuse_unreadable_epoch(epoch)
            return
        name = "valid" if stage == sb.Stage.VALID else "test"
        result = self.evaluation.finish(name, self.scorer_options)
        if stage == sb.Stage.VALID:
            selection = self._selection_loss()
            counter = self.hparams.epoch_counter
            if hasattr(counter, "update_metric"):  # e.g. SpeechBrain's EpochCounterWithStopper
                counter.update_metric(selection)
            lr = self.optimizer.param_groups[0]["lr"] if hasattr(self, "optimizer") else None
            stage = getattr(self.hparams, "stage_name", None)
            self.hparams.train_logger.log_stats(
                stats_meta={**({"stage": stage} if stage else {}), "epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats={**result.log_stats(), SELECTION_KEY: round(selection, 6)},
            )
            self.checkpointer.save_and_keep_only(
                meta={"loss": result.loss, SELECTION_KEY: selection}, min_keys=[SELECTION_KEY]
            )

    def _selection_loss(self) -> float:
        """The validation loss that chooses checkpoints: averaged as
        ``selection_normalisation`` says, over the validation examples of the
        tasks this epoch trained (of every task when it trained none of them)."""
        trained = set(self.tally.trained_tasks())
        validated = {record["task"] for record in self.evaluation.records}
        return self.evaluation.loss(self.selection_normalisation, trained & validated or None)

    def selection_key(self) -> str:
        """The meta key that chooses among the run's checkpoints:
        :data:`SELECTION_KEY`, or ``loss`` for a run all of whose checkpoints
        were saved before it existed (the token-mean validation loss)."""
        checkpoints = self.checkpointer.list_checkpoints()
        if checkpoints and not any(SELECTION_KEY in c.meta for c in checkpoints):
            return "loss"
        return SELECTION_KEY

    def evaluate(self, test_set, name: str = "test", **kwargs) -> EvaluationResult:
        """SpeechBrain's ``evaluate`` on the test set ``name``: logs its scores,
        writes them to ``<output_folder>/test_results/<name>/`` and returns them
        (also kept in ``test_results[name]``)."""
        super().evaluate(test_set, **kwargs)
        result = self.evaluation.result
        result.name = name
        self.hparams.train_logger.log_stats(
            stats_meta={"Epoch loaded": self.hparams.epoch_counter.current, "test set": name},
            test_stats=result.log_stats(),
        )
        if if_main_process():
            formats = getattr(self.hparams, "benchmark_formats", None) or ()
            folder = Path(self.hparams.output_folder) / "test_results" / name
            folder = self.evaluation.write(folder, formats)
            logger.info("Test results for %s written to %s", name, folder)
        self.test_results[name] = result
        return result

    def _refuse_unreadable_epoch(self, epoch):
        """An epoch that could read no more than ``1 - max_skipped_share`` of
        its clips (by default: half) learnt nothing worth keeping: stop."""
        skipped = self.tally.skipped
        limit = getattr(self.hparams, "max_skipped_share", 0.5)
        if skipped.count and skipped.share > limit:
            manifests = ", ".join(str(path) for path in self.hparams.train_data.values())
            raise UnusableTrainingData(
                f"Epoch {epoch} could not read {skipped.count} of its "
                f"{skipped.count + skipped.used} clips ({skipped.share:.0%}, more than "
                f"max_skipped_share={limit}): manifests {manifests}, data_root "
                f"{getattr(self.hparams, 'data_root', None)}; e.g. {'; '.join(skipped.examples)}"
            )

    # ------------------------------------------------------------ checkpoints
    def _should_save_intra_epoch_ckpt(self, last_ckpt_time, steps_since_ckpt):
        # Overridden: only between optimizer steps, as accumulated gradients are not saved.
        due = super()._should_save_intra_epoch_ckpt(last_ckpt_time, steps_since_ckpt)
        return due and self.step % self.grad_accumulation_factor == 0

    @mark_as_saver
    def _save(self, path):
        # Overrides SpeechBrain's hook (step, average loss, optimizer step) to
        # add every rank's epoch tally, window count and random generators.
        rank_state = {
            "finite_in_window": self.finite_in_window,
            "tally": self.tally.state_dict(),
            "rng": rng_states(),
        }
        ranks = gather_objects(rank_state)  # runs on every rank
        if if_main_process():
            state = {
                "step": self.step,
                "avg_train_loss": self.avg_train_loss,
                "optimizer_step": self.optimizer_step,
                "ranks": ranks,
            }
            torch.save(state, path)

    @mark_as_loader
    def _recover(self, path, end_of_epoch):
        # Overrides SpeechBrain's hook: reads what _save wrote.
        del end_of_epoch
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.step = state["step"]
        self.avg_train_loss = state["avg_train_loss"]
        self.optimizer_step = state["optimizer_step"]
        rank = torch.distributed.get_rank() if is_distributed_initialized() else 0
        world = torch.distributed.get_world_size() if is_distributed_initialized() else 1
        ranks = state["ranks"]
        if len(ranks) != world:
            logger.warning(
                "The checkpoint was saved with %d processes; the random generators and "
                "epoch tallies of process 0 are used, so the resumed run is not exact",
                len(ranks),
            )
        own = ranks[rank] if rank < len(ranks) else ranks[0]
        self.finite_in_window = own["finite_in_window"]
        self.tally.load_state_dict(own["tally"])
        set_rng_states(own["rng"])
