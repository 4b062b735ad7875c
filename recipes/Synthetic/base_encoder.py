"""Pre-trains the synthetic experiment's base encoder for ASR alone, with CTC.

MoWE is for a strong but narrow base encoder: one that was trained for
speech recognition and so under-represents prosody and non-speech sounds.
Without a pre-trained Whisper at hand, the synthetic experiment makes one: a
small convolutional encoder (any registered encoder) with a linear
character head, trained with CTC on the ASR clips of the training split
only. The head is then dropped and the encoder is saved with
:func:`speechbrain_mowe.lobes.save_encoder`, so that a model family loads it
(frozen) with ``load_encoder``.

The character error rate of the greedy CTC output on the validation clips is
logged and kept next to the encoder, as a measure of how good the base is.
"""

import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, Mapping, Optional

import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.decoders.ctc import ctc_greedy_decode
from speechbrain.utils.data_pipeline import provides, takes
from speechbrain.utils.metric_stats import ErrorRateStats

from speechbrain_mowe.dataio import (
    DurationBatchSampler,
    EmptyBatch,
    audio_pipeline,
    collate_audio,
    durations,
    load_manifests,
)
from speechbrain_mowe.lobes import build_encoder, save_encoder

logger = logging.getLogger(__name__)


class CTCBrain(sb.Brain):
    """An encoder and a linear character head trained with CTC.

    ``modules``: ``encoder`` (an :class:`~speechbrain_mowe.lobes.AudioEncoder`)
    and ``head`` (a linear layer to the characters and the blank, index 0).
    """

    def compute_forward(self, batch, stage):
        """Character log-probabilities ``[b, t, c]`` and their relative lengths."""
        batch = batch.to(self.device)
        feats, feat_lens = self.modules.encoder(*batch.sig)
        return self.modules.head(feats).log_softmax(-1), feat_lens

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; greedy decoding scored by character error rate outside training."""
        log_probs, lens = predictions
        chars, char_lens = batch.chars
        loss = sb.nnet.losses.ctc_loss(log_probs, chars, lens, char_lens, blank_index=0)
        if stage != sb.Stage.TRAIN:
            hyps = ctc_greedy_decode(log_probs, lens, blank_id=0)
            decode = self.hparams.text_encoder.decode_ndim
            self.cer.append(
                batch.id, [decode(h) for h in hyps], [list(text) for text in batch.answer]
            )
        return loss

    def fit_batch(self, batch):
        """Skips a batch whose clips were all unreadable."""
        if isinstance(batch, EmptyBatch):
            return torch.tensor(float("nan"))
        return super().fit_batch(batch)

    def on_stage_start(self, stage, epoch=None):
        """A fresh error-rate tally for each evaluation."""
        if stage != sb.Stage.TRAIN:
            self.cer = ErrorRateStats()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch's losses and the validation CER."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        self.valid_cer = self.cer.summarize("error_rate")
        logger.info(
            "Base encoder CTC epoch %s: train loss %.3f, valid loss %.3f, valid CER %.2f%%",
            epoch, self.train_loss, stage_loss, self.valid_cer,
        )  # fmt: skip


def _ctc_data(manifest, data_root, text_encoder, max_batch_duration, shuffle, seed):
    dataset, _ = load_manifests({"asr": manifest}, {"asr": data_root})
    dataset.add_dynamic_item(audio_pipeline())

    @takes("answer")
    @provides("chars")
    def chars(text):
        return torch.LongTensor(text_encoder.encode_sequence(list(text)))

    dataset.add_dynamic_item(chars)
    dataset.set_output_keys(["id", "sig", "chars", "answer"])
    batches = DurationBatchSampler(
        range(len(dataset)), durations(dataset), max_batch_duration, shuffle=shuffle, seed=seed
    )
    return dataset, {"batch_sampler": batches, "collate_fn": collate_audio}


def pretrain_base_encoder(
    save_folder: str,
    train_manifest: str,
    valid_manifest: str,
    data_root: str,
    encoder: Mapping,
    number_of_epochs: int = 10,
    lr: float = 0.002,
    max_batch_duration: float = 60.0,
    seed: int = 0,
    run_opts: Optional[Dict] = None,
) -> Path:
    """Trains ``encoder`` with CTC on the ASR manifests and saves it.

    A second call with the same options and training manifest returns the
    saved encoder at once; other options, or another manifest, train again.

    Arguments
    ---------
    save_folder : str
        Receives ``encoder.ckpt`` (see :func:`~speechbrain_mowe.lobes.load_encoder`),
        ``characters.txt`` and ``pretraining.json`` (the options and the
        validation CER).
    train_manifest, valid_manifest : str
        ASR manifests (the ``answer`` column is the transcript).
    data_root : str
        Replaces ``$data_root`` in their ``wav`` column.
    encoder : mapping
        ``{"name": <registered encoder>, "config": {keyword arguments}}``.
    number_of_epochs, lr, max_batch_duration, seed
        Training settings (Adam, batches of at most ``max_batch_duration``
        padded seconds).
    run_opts : dict, optional
        SpeechBrain run options (device, progress bar).

    Returns
    -------
    Path
        The encoder file.
    """
    folder = Path(save_folder)
    path = folder / "encoder.ckpt"
    options = {
        "train_manifest": str(train_manifest),
        # The manifest's contents, so that a corpus made again with other
        # options (same file name) trains a new encoder.
        "train_manifest_sha1": hashlib.sha1(Path(train_manifest).read_bytes()).hexdigest(),
        "encoder": {"name": encoder["name"], "config": dict(encoder.get("config") or {})},
        "number_of_epochs": number_of_epochs,
        "lr": lr,
        "max_batch_duration": max_batch_duration,
        "seed": seed,
    }
    record = folder / "pretraining.json"
    if path.is_file() and record.is_file():
        if json.loads(record.read_text())["options"] == options:
            logger.info("Base encoder already pre-trained in %s", folder)
            return path
    folder.mkdir(parents=True, exist_ok=True)

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_encoder = CTCTextEncoder()
        text_encoder.insert_blank(index=0)
        train, train_kwargs = _ctc_data(
            train_manifest, data_root, text_encoder, max_batch_duration, True, seed
        )
        text_encoder.update_from_didataset(train, "answer", sequence_input=True)
        valid, valid_kwargs = _ctc_data(
            valid_manifest, data_root, text_encoder, max_batch_duration, False, seed
        )
        model = build_encoder(options["encoder"]["name"], **options["encoder"]["config"])
        modules = {"encoder": model, "head": torch.nn.Linear(model.output_dim, len(text_encoder))}
        counter = sb.utils.epoch_loop.EpochCounter(number_of_epochs)
        brain = CTCBrain(
            modules=modules,
            opt_class=lambda params: torch.optim.Adam(params, lr=lr),
            hparams={"text_encoder": text_encoder},
            run_opts=run_opts,
        )
        brain.fit(
            counter,
            train,
            valid,
            train_loader_kwargs=train_kwargs,
            valid_loader_kwargs=valid_kwargs,
        )
    model = brain.modules.encoder
    save_encoder(path, model.cpu(), options["encoder"]["name"], **options["encoder"]["config"])
    text_encoder.save(folder / "characters.txt")
    record.write_text(
        json.dumps({"options": options, "valid_cer": brain.valid_cer}, indent=2) + "\n"
    )
    logger.info("Base encoder saved to %s (valid CER %.2f%%)", path, brain.valid_cer)
    return path
