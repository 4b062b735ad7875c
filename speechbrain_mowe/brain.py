"""The SpeechBrain ``Brain`` that trains and evaluates a MoWE audio LLM.

``compute_forward`` runs the MoWE encoder, the projector and the LLM;
``compute_objectives`` takes the answer cross-entropy (in float32, outside
autocast) plus ``aux_weight`` times the router's load-balancing loss. Training
logs the loss of each task and how often each weak encoder was chosen for
each task. Validation and test decode with batched generation and score each
(source, task) with its metric (:mod:`speechbrain_mowe.metrics`); the test
stage writes the metrics, a readable summary and every hypothesis to
``<output_folder>/test_results/<test set>/``.

Beyond SpeechBrain's own ``Brain``:

- the train loader's :class:`~speechbrain_mowe.dataio.DurationBatchSampler`
  gets ``set_epoch`` every epoch and shards itself under DDP (it is never
  wrapped in ``DistributedSamplerWrapper``, whose length is fixed);
- a non-finite loss is counted and contributes nothing: no gradient, and no
  optimizer step when nothing finite was accumulated (on any rank);
- a batch whose clips are all unreadable is skipped and counted (under DDP the
  rank runs a zero-loss step on a silent clip so all ranks stay in step);
- the optimizer gets the trainable parameters only;
- the checkpointed state adds the epoch's tallies and the random generators'
  states, so a resumed run draws the same dropout and router noise as an
  uninterrupted one (the data order is a function of the seed and epoch);
- evaluation is sharded over DDP ranks and its results gathered once, with
  the duplicates of the last, padded batches removed.
"""

import functools
import json
import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import if_main_process, is_distributed_initialized

from speechbrain_mowe.dataio import DurationBatchSampler, EmptyBatch, SkippedClips
from speechbrain_mowe.experiment import MODEL_PARTS
from speechbrain_mowe.feature_cache import FeatureCache
from speechbrain_mowe.lobes.audio_llm import AudioLLMOutput, answer_token_losses
from speechbrain_mowe.lobes.mowe import MoWEOutput
from speechbrain_mowe.metrics import english_normalizer, make_scorer

logger = logging.getLogger(__name__)


class Predictions(NamedTuple):
    """What :meth:`MoWEBrain.compute_forward` returns."""

    encoder: MoWEOutput
    llm: AudioLLMOutput
    audio: torch.Tensor
    audio_lens: torch.Tensor


def expert_shares(experts: Sequence[str], counts: Sequence[float]) -> str:
    """How often each expert was chosen, as percentages of all choices.

    Example
    -------
    >>> expert_shares(["0:a", "1:b"], [3, 1])
    '0:a 75% 1:b 25%'
    """
    total = sum(counts)
    return " ".join(f"{name} {100 * n / total:.0f}%" for name, n in zip(experts, counts))


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """Sums a CPU ``tensor`` over the DDP ranks, in place; through the GPU
    when the backend is NCCL, which reduces CUDA tensors only."""
    if torch.distributed.get_backend() == "nccl":
        on_gpu = tensor.cuda()
        torch.distributed.all_reduce(on_gpu)
        tensor.copy_(on_gpu.cpu())
    else:
        torch.distributed.all_reduce(tensor)


class EpochTally:
    """Per-task losses, routing counts and skipped work of one training epoch.

    Arguments
    ---------
    tasks : sequence of str
        Task names, in task-id order.
    experts : sequence of str
        Names of the weak encoders.

    Example
    -------
    >>> tally = EpochTally(["asr", "er"], ["0:a", "1:b"])
    >>> tally.add(torch.tensor([0, 1, 1]), torch.tensor([2.0, 3.0, 1.0]),
    ...           torch.tensor([2, 1, 1]), torch.tensor([[0], [1], [1]]))
    >>> stats = tally.summary()
    >>> stats["loss_asr"], stats["loss_er"], stats["routing_er"]
    (1.0, 2.0, '0:a 0% 1:b 100%')
    """

    def __init__(self, tasks, experts):
        self.tasks = list(tasks)
        self.experts = list(experts)
        self.skipped = SkippedClips()
        self.reset()

    def reset(self):
        """Starts a new epoch."""
        self.loss_sums = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.tokens = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.routes = torch.zeros(len(self.tasks), max(len(self.experts), 1), dtype=torch.float64)
        self.nonfinite = 0
        self.skipped.reset()

    def add(self, task_ids, loss_sums, tokens, experts=None):
        """Counts one batch: per-example summed losses and token counts, and
        the ``[b, k]`` experts chosen (None without a router)."""
        task_ids = task_ids.cpu()
        self.loss_sums.index_add_(0, task_ids, loss_sums.detach().double().cpu())
        self.tokens.index_add_(0, task_ids, tokens.double().cpu())
        if experts is not None:
            rows = task_ids[:, None].expand_as(experts).flatten()
            flat = rows * self.routes.shape[1] + experts.cpu().flatten()
            self.routes.view(-1).index_add_(0, flat, torch.ones(len(flat), dtype=torch.float64))

    def all_reduce(self):
        """Sums the tallies of every DDP rank."""
        if not is_distributed_initialized():
            return
        counts = torch.tensor([float(self.nonfinite), float(self.skipped.count)])
        for tensor in (self.loss_sums, self.tokens, self.routes, counts):
            all_reduce_sum(tensor)
        self.nonfinite = int(counts[0])
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, dict(self.skipped.reasons))
        self.skipped.reset()
        for reasons in gathered:
            self.skipped.reasons.update(reasons)

    def summary(self) -> Dict:
        """Loss per task and the share of each expert per task, for the train log."""
        stats = {}
        for t, task in enumerate(self.tasks):
            if self.tokens[t] > 0:
                stats[f"loss_{task}"] = round(float(self.loss_sums[t] / self.tokens[t]), 6)
        for t, task in enumerate(self.tasks):
            if self.routes[t].sum() > 0 and self.experts:
                stats[f"routing_{task}"] = expert_shares(self.experts, self.routes[t].tolist())
        if self.nonfinite:
            stats["nonfinite_losses"] = self.nonfinite
        if self.skipped.count:
            stats["skipped_clips"] = self.skipped.count
        return stats

    def state_dict(self) -> Dict:
        """For checkpoints."""
        return {
            "loss_sums": self.loss_sums,
            "tokens": self.tokens,
            "routes": self.routes,
            "nonfinite": self.nonfinite,
            "skipped": dict(self.skipped.reasons),
        }

    def load_state_dict(self, state: Dict):
        """From checkpoints."""
        self.loss_sums = state["loss_sums"]
        self.tokens = state["tokens"]
        self.routes = state["routes"]
        self.nonfinite = state["nonfinite"]
        self.skipped.reset()
        self.skipped.reasons.update(state["skipped"])


def encode_audio(
    mowe_encoder, projector, wavs, wav_lens, task_ids=None, base_output=None
) -> Tuple[MoWEOutput, torch.Tensor, torch.Tensor]:
    """The audio half of the lobe chain: the MoWE encoder, then the projector.

    Arguments
    ---------
    mowe_encoder : speechbrain_mowe.lobes.MoWEEncoder
    projector : torch.nn.Module
        Maps ``(feats, lens)`` to ``(audio embeddings [b, t, d], lens)``.
    wavs, wav_lens, task_ids, base_output
        As in :meth:`~speechbrain_mowe.lobes.MoWEEncoder.forward`.

    Returns
    -------
    encoded : MoWEOutput
    audio : torch.Tensor
        ``[b, t, d]`` embeddings for the LLM.
    audio_lens : torch.Tensor
        ``[b]`` relative lengths.
    """
    encoded = mowe_encoder(wavs, wav_lens, task_ids, base_output=base_output)
    audio, audio_lens = projector(encoded.feats, encoded.lens)
    return encoded, audio, audio_lens


def generate_answers(
    llm, audio, audio_lens, prefix, suffix, max_new_tokens: int = 128, num_beams: int = 1
) -> List[str]:
    """Batched generation of the answers to prompts around projected audio, as text.

    Arguments
    ---------
    llm : speechbrain_mowe.lobes.AudioLLM
    audio, audio_lens, prefix, suffix
        As in :meth:`~speechbrain_mowe.lobes.AudioLLM.generate`.
    max_new_tokens, num_beams : int
        Decoding settings.

    Returns
    -------
    list of str
        One answer per example, without surrounding whitespace.
    """
    tokens = llm.generate(
        audio, audio_lens, prefix, suffix, max_new_tokens=max_new_tokens, num_beams=num_beams
    )
    return [text.strip() for text in llm.decode(tokens)]


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
    """Trains and evaluates ``modules`` = ``mowe_encoder``, ``projector``, ``llm``.

    Hyperparameters read (besides SpeechBrain's run options):

    - ``tasks``: task names in router task-id order;
    - ``aux_weight``: weight of the router's auxiliary loss (default 0.1);
    - ``max_new_tokens`` (default 128), ``num_beams`` (default 1): decoding;
    - ``valid_search_interval``: decode during validation every this many
      epochs and at the last one (default 1; other epochs report the loss only);
    - ``normalizer_source``: a Whisper checkpoint whose ``normalizer.json``
      gives the English spelling mapping of the normalised WER (optional);
    - ``emotion_labels``: the label set answers are mapped to (default: the
      labels present in the references);
    - ``cache_base_features``: cache the frozen base encoder's features in
      ``feature_cache_folder`` (default ``<output_folder>/feature_cache``), see
      :class:`~speechbrain_mowe.feature_cache.FeatureCache`;
    - ``lr_annealing``: a SpeechBrain scheduler called with the optimizer after
      each optimizer step (optional);
    - ``epoch_counter``, ``train_logger``, ``output_folder``.

    See ``recipes/*/train.py`` and :func:`speechbrain_mowe.experiment.train_and_evaluate`.
    """

    def __init__(
        self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None
    ):
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        if self.distributed_launch and not self.find_unused_parameters:
            logger.info("Turning on find_unused_parameters: top-k routing leaves experts idle")
            self.find_unused_parameters = True
        if not self.scaler.is_enabled():
            # Skip the whole step when any gradient is non-finite (see check_gradients).
            self.skip_nonfinite_grads = True
        mowe = self.mowe_encoder
        experts = [f"{i}:{type(e).__name__}" for i, e in enumerate(mowe.weak_pool)]
        self.tally = EpochTally(self.hparams.tasks, experts)
        self.finite_in_window = 0
        self.feature_cache = None
        if self._hparam("cache_base_features", False):
            folder = self._hparam("feature_cache_folder") or Path(
                self.hparams.output_folder, "feature_cache"
            )
            self.feature_cache = FeatureCache(folder, mowe.base)
        self.decoding = True
        self.records: List[Dict] = []
        self.test_name = "test"
        self.test_results: Dict[str, Dict] = {}

    # ---------------------------------------------------------------- modules
    def _unwrapped(self, name: str):
        module = self.modules[name]
        return getattr(module, "module", module)

    @property
    def mowe_encoder(self):
        """The MoWE encoder (unwrapped from DDP)."""
        return self._unwrapped("mowe_encoder")

    @property
    def projector(self):
        """The projector (unwrapped from DDP)."""
        return self._unwrapped("projector")

    @property
    def llm(self):
        """The :class:`~speechbrain_mowe.lobes.AudioLLM` (unwrapped from DDP)."""
        return self._unwrapped("llm")

    def _hparam(self, name, default=None):
        return getattr(self.hparams, name, default)

    # ------------------------------------------------------------ computation
    def compute_forward(self, batch, stage) -> Predictions:
        """Encoder -> projector -> teacher-forced LLM logits."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        base_output = None
        if self.feature_cache is not None:
            base_output = self.feature_cache.encode(batch.id, wavs, wav_lens)
        task_ids = torch.as_tensor(batch.task_id, device=self.device)
        return self._run_lobes(
            stage, wavs, wav_lens, task_ids, batch.prefix, batch.suffix, batch.answer_tokens,
            base_output,
        )  # fmt: skip

    def _run_lobes(
        self, stage, wavs, wav_lens, task_ids, prefix, suffix, answer, base_output=None
    ) -> Predictions:
        # Evaluation bypasses the DDP wrappers: ranks need not run it in step.
        if stage == sb.Stage.TRAIN:
            mowe, projector, llm = (self.modules[name] for name in MODEL_PARTS)
        else:
            mowe, projector, llm = (self._unwrapped(name) for name in MODEL_PARTS)
        encoded, audio, audio_lens = encode_audio(
            mowe, projector, wavs, wav_lens, task_ids, base_output
        )
        out = llm(audio, audio_lens, prefix, suffix, answer, return_loss=False)
        return Predictions(encoded, out, audio, audio_lens)

    def compute_objectives(self, predictions: Predictions, batch, stage) -> torch.Tensor:
        """Answer cross-entropy (float32) + ``aux_weight`` x router auxiliary loss."""
        sums, counts = answer_token_losses(predictions.llm.logits, predictions.llm.labels)
        loss = sums.sum() / counts.sum().clamp(min=1)
        if stage == sb.Stage.TRAIN:
            aux = predictions.encoder.aux_loss.float()
            loss = loss + self._hparam("aux_weight", 0.1) * aux
            if torch.isfinite(loss):
                routing = predictions.encoder.routing
                experts = routing.experts if routing is not None else None
                self.tally.add(torch.as_tensor(batch.task_id), sums, counts, experts)
        else:
            self._ce = (sums.detach().cpu(), counts.cpu())
        return loss

    # --------------------------------------------------------------- training
    def _train_loader_specifics(self, dataset, loader_kwargs):
        sampler = loader_kwargs.get("batch_sampler")
        if isinstance(sampler, DurationBatchSampler):
            # It shards itself under DDP; SpeechBrain must only call set_epoch.
            self.train_sampler = sampler
            return loader_kwargs
        return super()._train_loader_specifics(dataset, loader_kwargs)

    def init_optimizers(self):
        """One optimizer over the trainable parameters only."""
        if self.opt_class is None:
            return super().init_optimizers()
        params = [p for p in self.modules.parameters() if p.requires_grad]
        self.optimizer = self.opt_class(params)
        self.optimizers_dict = {"optimizer": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def fit_batch(self, batch):
        """One step; the loss is taken outside autocast, and a non-finite loss
        or an all-unreadable batch adds nothing to the gradients."""
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.tally.skipped.add(batch)
        if isinstance(batch, EmptyBatch):
            if self.distributed_launch:
                self._zero_loss_step(should_step)
            elif should_step:
                self._finish_window()
            return torch.tensor(float("nan"))
        self.on_fit_batch_start(batch, should_step)
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
            loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            finite = bool(torch.isfinite(loss))
            if finite:
                self.finite_in_window += 1
                self.scaler.scale(loss / self.grad_accumulation_factor).backward()
            else:
                self.tally.nonfinite += 1
                logger.warning("Non-finite loss %s on batch %s; skipped", float(loss), batch.id)
                if self.tally.nonfinite > self.nonfinite_patience:
                    raise ValueError(
                        f"{self.tally.nonfinite} non-finite losses this epoch, more than "
                        f"--nonfinite_patience={self.nonfinite_patience}; to debug, wrap fit() "
                        "in torch.autograd.detect_anomaly()"
                    )
                if self.distributed_launch:
                    # A backward pass keeps DDP ranks in step; it adds zero.
                    (0.0 * torch.nan_to_num(loss, 0.0, 0.0, 0.0)).backward()
        if should_step:
            self._finish_window()
        self.on_fit_batch_end(batch, outputs, loss, should_step)
        return loss.detach().cpu()

    def _finish_window(self):
        """Steps the optimizer if any rank accumulated a finite loss, else drops
        the gradients."""
        finite = torch.tensor(float(self.finite_in_window))
        if is_distributed_initialized():
            all_reduce_sum(finite)
        self.finite_in_window = 0
        if finite > 0:
            self.optimizers_step()
            scheduler = self._hparam("lr_annealing")
            if scheduler is not None:
                scheduler(self.optimizer)
        else:
            self.zero_grad(set_to_none=True)

    def _zero_loss_step(self, should_step):
        """A forward and backward pass on a silent clip that adds zero gradient,
        so that a rank with nothing to train on stays in step with the others."""
        prefix, suffix = self.llm.tokenize_prompts(["."])
        answer = self.llm.tokenize_answers(["."])
        wavs = torch.zeros(1, 16000, device=self.device)
        ones = torch.ones(1, device=self.device)
        task_ids = torch.zeros(1, dtype=torch.long, device=self.device)
        with self.no_sync(not should_step):
            out = self._run_lobes(sb.Stage.TRAIN, wavs, ones, task_ids, prefix, suffix, answer)
            (0.0 * (out.llm.logits.float().sum() + out.encoder.aux_loss)).backward()
        if should_step:
            self._finish_window()

    def check_gradients(self):
        """Drops every gradient (so the step changes nothing) if any is non-finite."""
        params = [p for p in self.modules.parameters() if p.grad is not None]
        # One device-to-host synchronisation, not one per parameter.
        if params and not bool(torch.stack([torch.isfinite(p.grad).all() for p in params]).all()):
            logger.warning("Non-finite gradients; the optimizer step is skipped")
            if if_main_process():  # every rank sees the same reduced gradients
                self.tally.nonfinite += 1
            for p in params:
                p.grad = None

    # ------------------------------------------------------------- evaluation
    def decoding_options(self) -> Dict:
        """``max_new_tokens`` and ``num_beams`` of evaluation (and inference)."""
        return {
            "max_new_tokens": self._hparam("max_new_tokens", 128),
            "num_beams": self._hparam("num_beams", 1),
        }

    def _decode_now(self, stage, epoch) -> bool:
        if stage == sb.Stage.TEST:
            return True
        interval = self._hparam("valid_search_interval", 1)
        last = getattr(self.hparams.epoch_counter, "limit", None)
        return epoch is not None and (epoch % interval == 0 or epoch == last)

    @torch.no_grad()
    def evaluate_batch(self, batch, stage):
        """Teacher-forced loss, then (when decoding) batched generation."""
        if isinstance(batch, EmptyBatch):
            return torch.tensor(float("nan"))
        with self.evaluation_ctx:
            predictions = self.compute_forward(batch, stage)
        loss = self.compute_objectives(predictions, batch, stage)
        hypotheses = [None] * len(batch.id)
        if self.decoding:
            with self.evaluation_ctx:
                hypotheses = generate_answers(
                    self.llm,
                    predictions.audio,
                    predictions.audio_lens,
                    batch.prefix,
                    batch.suffix,
                    **self.decoding_options(),
                )
        sums, counts = (values.tolist() for values in self._ce)
        routing = predictions.encoder.routing
        experts = routing.experts.tolist() if routing is not None else [[]] * len(batch.id)
        languages = getattr(batch, "target_language", [""] * len(batch.id))
        for i, utt_id in enumerate(batch.id):
            self.records.append(
                {
                    "id": utt_id,
                    "source": batch.source[i],
                    "task": batch.task[i],
                    "hypothesis": hypotheses[i],
                    "answer": batch.answer[i],
                    "references": list(batch.references[i]) or [batch.answer[i]],
                    "target_language": languages[i],
                    "loss_sum": sums[i],
                    "tokens": counts[i],
                    "experts": experts[i],
                }
            )
        return loss.detach().cpu()

    def evaluate(self, test_set, name: str = "test", **kwargs):
        """SpeechBrain's ``evaluate``; ``name`` names the results folder."""
        self.test_name = name
        return super().evaluate(test_set, **kwargs)

    def _gathered_records(self) -> List[Dict]:
        """Every rank's records, once per example id, in id order."""
        records = self.records
        if is_distributed_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, records)
            records = [record for part in gathered for record in part]
        unique = {}
        for record in records:
            unique.setdefault(record["id"], record)
        return [unique[key] for key in sorted(unique)]

    def _scorer_options(self, task: str, group: List[Dict]) -> Dict:
        if task == "asr":
            return {"normalizer": english_normalizer(self._hparam("normalizer_source"))}
        if task == "ast":
            return {"target_language": group[0]["target_language"]}
        if task == "er" and self._hparam("emotion_labels"):
            return {"labels": list(self.hparams.emotion_labels)}
        return {}

    def score(self, records: List[Dict]) -> Dict[str, object]:
        """Metrics per (source, task) and the scorers that made them."""
        groups = defaultdict(list)
        for record in records:
            key = (record["source"], record["task"], record["target_language"])
            groups[key].append(record)
        scorers = {}
        languages = defaultdict(set)
        for source, task, language in groups:
            languages[source, task].add(language)
        for (source, task, language), group in sorted(groups.items()):
            scorer = make_scorer(task, **self._scorer_options(task, group))
            references = [r["references"] if task == "aac" else r["answer"] for r in group]
            scorer.append([r["id"] for r in group], [r["hypothesis"] for r in group], references)
            several = len(languages[source, task]) > 1
            scorers[f"{source}/{task}" + (f"/{language}" if several else "")] = scorer
        return scorers

    def on_stage_start(self, stage, epoch=None):
        """Resets the epoch's tallies or the evaluation records."""
        if stage == sb.Stage.TRAIN:
            if self.step == 0:  # not resuming mid-epoch
                self.tally.reset()
                self.finite_in_window = 0
        else:
            self.records = []
            self.decoding = self._decode_now(stage, epoch)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, scores, checkpoints and writes results."""
        if stage == sb.Stage.TRAIN:
            self.tally.all_reduce()
            self.train_stats = {"loss": stage_loss, **self.tally.summary()}
            logger.info("Epoch %s: %s", epoch, self.tally.skipped.summary())
            return
        records = self._gathered_records()
        tokens = sum(r["tokens"] for r in records)
        stats = {"loss": sum(r["loss_sum"] for r in records) / max(tokens, 1)}
        scorers = self.score(records) if self.decoding else {}
        for key, scorer in scorers.items():
            for metric, value in scorer.summarize().items():
                if isinstance(value, (int, float)):
                    stats[f"{key}/{metric}"] = round(float(value), 4)
        stats.update(self.routing_stats(records))
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"] if hasattr(self, "optimizer") else None
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"loss": stats["loss"]}, min_keys=["loss"])
            return
        self.hparams.train_logger.log_stats(
            stats_meta={
                "Epoch loaded": self.hparams.epoch_counter.current,
                "test set": self.test_name,
            },
            test_stats=stats,
        )
        self.test_results[self.test_name] = stats
        if if_main_process():
            self.write_results(self.test_name, stats, scorers, records)

    def routing_stats(self, records: List[Dict]) -> Dict[str, str]:
        """``{"routing/<task>": shares}``: how often each weak encoder was
        chosen for each task's examples (empty without a router)."""
        names = self.tally.experts
        counts = {task: [0] * len(names) for task in self.hparams.tasks}
        for record in records:
            for expert in record["experts"]:
                counts[record["task"]][expert] += 1
        return {
            f"routing/{task}": expert_shares(names, chosen)
            for task, chosen in counts.items()
            if sum(chosen)
        }

    def write_results(self, name: str, stats: Dict, scorers: Dict, records: List[Dict]):
        """``metrics.json``, ``results.txt`` (readable, with metric notes and routing),
        ``hypotheses.jsonl`` and per-metric files under ``test_results/<name>/``."""
        folder = Path(self.hparams.output_folder) / "test_results" / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "metrics.json", "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2, ensure_ascii=False)
        lines = [f"Test set: {name}", f"loss: {stats['loss']:.6f}"]
        for key, scorer in scorers.items():
            lines.append(f"\n[{key}] ({len(scorer.ids)} examples)")
            lines.extend(scorer.summary_lines())
            scorer.write(str(folder / key.replace("/", "_")))
        routing = [f"{key}: {value}" for key, value in stats.items() if key.startswith("routing/")]
        if routing:
            lines.extend(["\n[weak encoders chosen per task]", *routing])
        (folder / "results.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        with open(folder / "hypotheses.jsonl", "w", encoding="utf-8") as f:
            for r in records:
                keep = {k: r[k] for k in ("id", "source", "task", "hypothesis", "references")}
                f.write(json.dumps(keep, ensure_ascii=False) + "\n")
        logger.info("Test results for %s written to %s", name, folder)

    # ------------------------------------------------------------ checkpoints
    def _should_save_intra_epoch_ckpt(self, last_ckpt_time, steps_since_ckpt):
        """Only between optimizer steps: accumulated gradients are not saved."""
        due = super()._should_save_intra_epoch_ckpt(last_ckpt_time, steps_since_ckpt)
        return due and self.step % self.grad_accumulation_factor == 0

    @mark_as_saver
    def _save(self, path):
        # Runs on every rank: each one's tally and generators are kept.
        rank_state = {
            "finite_in_window": self.finite_in_window,
            "tally": self.tally.state_dict(),
            "rng": rng_states(),
        }
        ranks = [rank_state]
        if is_distributed_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, rank_state)
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
        del end_of_epoch
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.step = state["step"]
        self.avg_train_loss = state["avg_train_loss"]
        self.optimizer_step = state["optimizer_step"]
        rank = torch.distributed.get_rank() if is_distributed_initialized() else 0
        ranks = state["ranks"]
        if len(ranks) != (
            torch.distributed.get_world_size() if is_distributed_initialized() else 1
        ):
            logger.warning(
                "The checkpoint was saved with %d processes; the random generators and "
                "epoch tallies of process 0 are used, so the resumed run is not exact",
                len(ranks),
            )
        own = ranks[rank] if rank < len(ranks) else ranks[0]
        self.finite_in_window = own["finite_in_window"]
        self.tally.load_state_dict(own["tally"])
        set_rng_states(own["rng"])
