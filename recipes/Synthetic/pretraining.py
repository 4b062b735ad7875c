"""What the synthetic experiments pre-train before any audio LLM is trained.

Encoders, each trained with a head on one objective of its own and saved with
:func:`speechbrain_mowe.lobes.save_encoder` (the head dropped), so a model
family loads it (frozen) with ``load_encoder``:

``ctc``
    Characters of the ASR transcripts, with CTC: a narrow base encoder, good at
    what it was trained for and never asked to keep prosody or sounds.
``prosody``
    The pitch and loudness of every 10 ms of speech, computed by signal
    processing (torchaudio's NCCF pitch, the frame energy): what emotion and
    speaker cues need, and what an ASR base drops (as the MoWE paper's
    emotion-tuned HuBERT and Wav2Small's distilled prosody encoder do).
``events``
    Which sound events a generated scene holds (tones, chirps, noise, clicks
    and their count), as multi-label tagging: what captioning needs.

And the language model, pre-trained on the corpus's training texts (answers
and instructions) before it ever hears audio (:func:`pretrain_llm`).

Each is made once, in a folder named after its options and training data
(:func:`speechbrain_mowe.artifacts.prepared_artifact`): other options or
data make a new one beside it, so a trained model's sources never change.
"""

import abc
import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import speechbrain as sb
import torch
import torchaudio
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.decoders.ctc import ctc_greedy_decode
from speechbrain.utils.data_pipeline import provides, takes
from speechbrain.utils.metric_stats import ErrorRateStats
from synthetic_scenes import EVENT_PHRASES
from torch import nn

from speechbrain_mowe.artifacts import prepared_artifact
from speechbrain_mowe.dataio import (
    DurationBatchSampler,
    EmptyBatch,
    UnreadableAudio,
    audio_pipeline,
    collate_audio,
    durations,
    load_manifests,
)
from speechbrain_mowe.lobes import build_encoder, save_encoder
from speechbrain_mowe.lobes.sequence import align_frames, length_mask, masked_mean, to_absolute
from speechbrain_mowe.tiny import make_tiny_llm

logger = logging.getLogger(__name__)

#: The encoder's file in its folder.
ENCODER_FILE = "encoder.ckpt"

#: The event tags of the generated scenes (``kind`` or ``kind:detail``, as in
#: the manifests' ``events`` column).
EVENT_TAGS = [kind if detail is None else f"{kind}:{detail}" for kind, detail in EVENT_PHRASES]


class Objective(abc.ABC):
    """What an encoder is pre-trained for: its targets, head, loss and score.

    Subclasses set ``name``, ``targets_from`` (the manifest column the targets
    come from) and ``metric`` (how the validation score reads); :meth:`prepare`
    may first look at the training data.
    """

    name: str
    targets_from: str
    metric: str

    def prepare(self, dataset) -> None:
        """Called once with the training set, before the head is built."""
        del dataset

    @abc.abstractmethod
    def targets(self, value, wav: torch.Tensor) -> torch.Tensor:
        """The targets of one example from its ``targets_from`` value and samples."""

    @abc.abstractmethod
    def head(self, input_dim: int) -> nn.Module:
        """The layer(s) trained on top of the encoder."""

    @abc.abstractmethod
    def loss(self, outputs, feat_frames, targets, target_lens) -> torch.Tensor:
        """The training loss of a batch (``outputs``: the head's, ``[b, t, c]``)."""

    @abc.abstractmethod
    def score(self, outputs, feat_frames, targets, target_lens) -> List[float]:
        """Per-example errors or hits of a validation batch (their mean is reported)."""


class CTCCharacters(Objective):
    """The transcript's characters with CTC; scored by greedy CER (%)."""

    name, targets_from, metric = "ctc", "answer", "valid CER %"

    def __init__(self):
        self.text = CTCTextEncoder()
        self.text.insert_blank(index=0)

    def prepare(self, dataset) -> None:
        self.text.update_from_didataset(dataset, "answer", sequence_input=True)

    def targets(self, value, wav):
        return torch.LongTensor(self.text.encode_sequence(list(value)))

    def head(self, input_dim):
        return nn.Linear(input_dim, len(self.text))

    def loss(self, outputs, feat_frames, targets, target_lens):
        log_probs = outputs.log_softmax(-1)
        rel = feat_frames / outputs.shape[1]
        return sb.nnet.losses.ctc_loss(log_probs, targets, rel, target_lens, blank_index=0)

    def score(self, outputs, feat_frames, targets, target_lens):
        stats = ErrorRateStats()
        hyps = ctc_greedy_decode(outputs.log_softmax(-1), feat_frames / outputs.shape[1], 0)
        refs = to_absolute(target_lens, targets.shape[1])
        ids = [str(i) for i in range(len(hyps))]
        stats.append(ids, hyps, [t[:n].tolist() for t, n in zip(targets, refs)])
        return [score["WER"] for score in stats.scores]


class Prosody(Objective):
    """Log pitch and energy of every 10 ms frame, standardised; pitch only where
    the frame is loud enough to be voiced. Scored by the validation MSE."""

    name, targets_from, metric = "prosody", "wav", "valid MSE"
    #: Frames quieter than this (dB below the clip's loudest) count as unvoiced.
    VOICING_DB = 30.0

    def targets(self, value, wav):
        del value
        pitch = torchaudio_pitch(wav)
        frames = pitch.shape[0]
        energy = wav[: frames * 160].reshape(frames, 160).pow(2).mean(1).clamp(min=1e-10).log10()
        energy = 10 * energy
        voiced = energy > energy.max() - self.VOICING_DB
        # Standardised around a speaking voice: log2 of 150 Hz, and -30 dB.
        log_pitch = torch.where(voiced, torch.log2(pitch / 150.0), torch.zeros_like(pitch))
        return torch.stack([log_pitch, (energy + 30) / 20, voiced.float()], dim=-1)

    def head(self, input_dim):
        return nn.Linear(input_dim, 2)

    def _errors(self, outputs, feat_frames, targets, target_lens):
        frames = to_absolute(target_lens, targets.shape[1])
        predicted = align_frames(outputs, feat_frames, frames, targets.shape[1])
        valid = length_mask(frames, targets.shape[1]).float()
        weights = torch.stack([targets[..., 2] * valid, valid], dim=-1)
        squared = (predicted - targets[..., :2]) ** 2 * weights
        return squared.sum((1, 2)), weights.sum((1, 2)).clamp(min=1)

    def loss(self, outputs, feat_frames, targets, target_lens):
        squared, count = self._errors(outputs, feat_frames, targets, target_lens)
        return squared.sum() / count.sum()

    def score(self, outputs, feat_frames, targets, target_lens):
        squared, count = self._errors(outputs, feat_frames, targets, target_lens)
        return (squared / count).tolist()


class EventTags(Objective):
    """Which of :data:`EVENT_TAGS` a scene holds, from the mean of its frames;
    scored by the share of clips whose every tag is right (%)."""

    name, targets_from, metric = "events", "events", "valid exact-match %"

    def targets(self, value, wav):
        del wav
        present = set(value.split())
        return torch.tensor([float(tag in present) for tag in EVENT_TAGS])

    def head(self, input_dim):
        return nn.Linear(input_dim, len(EVENT_TAGS))

    def _logits(self, outputs, feat_frames):
        return masked_mean(outputs, feat_frames)

    def loss(self, outputs, feat_frames, targets, target_lens):
        logits = self._logits(outputs, feat_frames)
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)

    def score(self, outputs, feat_frames, targets, target_lens):
        right = (self._logits(outputs, feat_frames) > 0) == targets.bool()
        return (100.0 * right.all(-1).float()).tolist()


def torchaudio_pitch(wav: torch.Tensor) -> torch.Tensor:
    """Pitch (Hz) of every 10 ms frame (torchaudio's NCCF estimate, median-smoothed)."""
    return torchaudio.functional.detect_pitch_frequency(wav, 16000, frame_time=0.01)


#: Objective name -> class.
OBJECTIVES = {cls.name: cls for cls in (CTCCharacters, Prosody, EventTags)}


class PretrainingBrain(sb.Brain):
    """``modules``: ``encoder`` (an AudioEncoder) and ``head``; ``hparams.objective``."""

    def compute_forward(self, batch, stage):
        """The head's outputs over the encoder's frames, and the valid frames."""
        batch = batch.to(self.device)
        feats, lens = self.modules.encoder(*batch.sig)
        return self.modules.head(feats), to_absolute(lens, feats.shape[1])

    def compute_objectives(self, predictions, batch, stage):
        """The objective's loss; validation examples are also scored."""
        outputs, frames = predictions
        targets, target_lens = batch.targets
        objective = self.hparams.objective
        if stage != sb.Stage.TRAIN:
            self.scores.extend(objective.score(outputs, frames, targets, target_lens))
        return objective.loss(outputs, frames, targets, target_lens)

    def fit_batch(self, batch):
        """Skips a batch whose clips were all unreadable."""
        if isinstance(batch, EmptyBatch):
            return torch.tensor(float("nan"))
        return super().fit_batch(batch)

    def on_stage_start(self, stage, epoch=None):
        """A fresh tally of the validation scores."""
        self.scores = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch's losses and the validation score."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        self.valid_score = sum(self.scores) / max(len(self.scores), 1)
        logger.info(
            "%s pre-training epoch %s: train loss %.4f, valid loss %.4f, %s %.3f",
            self.hparams.objective.name, epoch, self.train_loss, stage_loss,
            self.hparams.objective.metric, self.valid_score,
        )  # fmt: skip


def _data(manifests, data_root, objective, max_batch_duration, shuffle, seed):
    dataset, _ = load_manifests(manifests, {source: data_root for source in manifests})
    dataset.add_dynamic_item(audio_pipeline())
    column, computed = objective.targets_from, {}

    @takes("id", column, "sig")
    @provides("targets")
    def targets(utt_id, value, sig):
        if isinstance(sig, UnreadableAudio):  # left out of its batch by collate_audio
            return sig
        # Computed once per clip (pitch tracking costs more than an epoch's step).
        if utt_id not in computed:
            computed[utt_id] = objective.targets(value, sig)
        return computed[utt_id]

    dataset.add_dynamic_item(targets)
    dataset.set_output_keys(["id", "sig", "targets"])
    batches = DurationBatchSampler(
        range(len(dataset)), durations(dataset), max_batch_duration, shuffle=shuffle, seed=seed
    )
    return dataset, {"batch_sampler": batches, "collate_fn": collate_audio}


def _file_digest(paths: Sequence[str]) -> str:
    digest = hashlib.sha1()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def pretrain_encoder(
    encoders_folder: str,
    name: str,
    objective: str,
    train_manifests: Mapping[str, str],
    valid_manifests: Mapping[str, str],
    data_root: str,
    encoder: Mapping,
    number_of_epochs: int = 10,
    lr: float = 0.002,
    max_batch_duration: float = 60.0,
    seed: int = 0,
    run_opts: Optional[Dict] = None,
    skip_prep: bool = False,
) -> Path:
    """Trains an encoder for one objective and saves it (the head dropped).

    The encoder goes to ``<encoders_folder>/<name>-<digest>/``, a folder named
    after its options and training data (see
    :func:`speechbrain_mowe.artifacts.prepared_artifact`): a second call with
    the same options and data returns it at once, and other options, or other
    data, train a new one beside it, never over it.

    Arguments
    ---------
    encoders_folder : str
        Receives the encoder's folder, holding ``encoder.ckpt`` (see
        :func:`~speechbrain_mowe.lobes.load_encoder`) and ``pretraining.json``
        (the options and the validation score).
    name : str
        The encoder's name (its folder's prefix).
    objective : str
        A name in :data:`OBJECTIVES`: ``ctc``, ``prosody`` or ``events``.
    train_manifests, valid_manifests : mapping
        Source -> manifest of the clips to train and validate on.
    data_root : str
        Replaces ``$data_root`` in their ``wav`` column.
    encoder : mapping
        ``{"name": <registered encoder>, "config": {keyword arguments}}``.
    number_of_epochs, lr, max_batch_duration, seed
        Training settings (Adam, batches of at most ``max_batch_duration``
        padded seconds).
    run_opts : dict, optional
        SpeechBrain run options (device, progress bar).
    skip_prep : bool
        Train nothing: the encoder must exist (else an error naming it).

    Returns
    -------
    Path
        The encoder file.
    """
    options = {
        "objective": objective,
        # The manifests' contents, not their names: a corpus made with other
        # options in the same place trains a new encoder.
        "train_sha1": _file_digest(train_manifests.values()),
        "encoder": {"name": encoder["name"], "config": dict(encoder.get("config") or {})},
        "number_of_epochs": number_of_epochs,
        "lr": lr,
        "max_batch_duration": max_batch_duration,
        "seed": seed,
    }

    def make(folder: Path) -> None:
        target = OBJECTIVES[objective]()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            train, train_kwargs = _data(
                train_manifests, data_root, target, max_batch_duration, True, seed
            )
            target.prepare(train)
            valid, valid_kwargs = _data(
                valid_manifests, data_root, target, max_batch_duration, False, seed
            )
            model = build_encoder(options["encoder"]["name"], **options["encoder"]["config"])
            brain = PretrainingBrain(
                modules={"encoder": model, "head": target.head(model.output_dim)},
                opt_class=lambda params: torch.optim.Adam(params, lr=lr),
                hparams={"objective": target},
                run_opts=run_opts,
            )
            brain.fit(
                sb.utils.epoch_loop.EpochCounter(number_of_epochs),
                train,
                valid,
                train_loader_kwargs=train_kwargs,
                valid_loader_kwargs=valid_kwargs,
            )
        save_encoder(
            folder / ENCODER_FILE,
            brain.modules.encoder.cpu(),
            encoder["name"],
            **options["encoder"]["config"],
        )
        result = {
            "options": options,
            "train_manifests": dict(train_manifests),
            "metric": target.metric,
            "valid_score": brain.valid_score,
        }
        (folder / "pretraining.json").write_text(json.dumps(result, indent=2) + "\n")
        logger.info("%s encoder trained (%s %.3f)", objective, target.metric, brain.valid_score)

    folder = prepared_artifact(
        encoders_folder,
        name,
        options,
        make,
        skip_prep=skip_prep,
        made_by="run train.py once without --skip_prep=True to pre-train it",
    )
    return folder / ENCODER_FILE


def pretrain_llm(
    llm_folder: str,
    tokenizer_texts: Sequence[str],
    training_texts: Sequence[str],
    config: Mapping,
    number_of_epochs: int = 0,
    lr: float = 0.003,
    batch_size: int = 32,
    seed: int = 0,
    skip_prep: bool = False,
) -> Path:
    """A small causal LM with a tokenizer trained on ``tokenizer_texts``, then
    (``number_of_epochs`` > 0) trained as a language model on ``training_texts``.

    Made once in ``<llm_folder>/llm-<digest>/``, a folder named after its
    options and texts: other options or texts make a new one beside it.

    Arguments
    ---------
    llm_folder : str
        Receives the LM's folder: the LM and its tokenizer (``from_pretrained``
        reads it) and ``llm_options.json``.
    tokenizer_texts : sequence of str
        What the byte-level BPE tokenizer is trained on (the lexicon, so that
        most words are one token).
    training_texts : sequence of str
        The texts the LM learns, one sequence each (e.g. the training answers
        and instructions); nothing of the evaluation splits.
    config : mapping
        :func:`~speechbrain_mowe.tiny.make_tiny_llm` settings (``hidden_size``,
        ``num_layers``, ``vocab_size``, ``init_std``).
    number_of_epochs, lr, batch_size, seed
        Training (AdamW); 0 epochs leaves the LM random.
    skip_prep : bool
        Make nothing: the LM must exist (else an error naming it).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {
        **dict(config),
        "seed": seed,
        "number_of_epochs": number_of_epochs,
        "lr": lr,
        "batch_size": batch_size,
        "texts_sha1": hashlib.sha1(
            "\n".join([*tokenizer_texts, "", *training_texts]).encode()
        ).hexdigest(),
    }

    def make(folder: Path) -> None:
        make_tiny_llm(folder, corpus=tokenizer_texts, seed=seed, **config)
        losses = []
        if number_of_epochs > 0:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder)
            ids = [
                [
                    tokenizer.bos_token_id,
                    *tokenizer(text, add_special_tokens=False)["input_ids"],
                    tokenizer.eos_token_id,
                ]
                for text in training_texts
            ]
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
            generator = torch.Generator().manual_seed(seed)
            model.train()
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                for epoch in range(number_of_epochs):
                    order = torch.randperm(len(ids), generator=generator).tolist()
                    total = 0.0
                    for start in range(0, len(order), batch_size):
                        rows = [torch.tensor(ids[i]) for i in order[start : start + batch_size]]
                        tokens = nn.utils.rnn.pad_sequence(
                            rows, batch_first=True, padding_value=tokenizer.pad_token_id
                        )
                        mask = length_mask(torch.tensor([len(r) for r in rows]), tokens.shape[1])
                        labels = tokens.masked_fill(~mask, -100)
                        loss = model(
                            input_ids=tokens, attention_mask=mask.long(), labels=labels
                        ).loss
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                        total += loss.item() * len(rows)
                    losses.append(total / len(ids))
                    logger.info("LLM pre-training epoch %d: loss %.4f", epoch + 1, losses[-1])
            model.save_pretrained(folder)
        record = {"options": options, "losses": losses}
        (folder / "llm_options.json").write_text(json.dumps(record, indent=2) + "\n")

    return prepared_artifact(
        llm_folder,
        "llm",
        options,
        make,
        skip_prep=skip_prep,
        made_by="run train.py once without --skip_prep=True to make it",
    )
