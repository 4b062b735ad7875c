"""An on-disk cache of a frozen encoder's features.

A frozen base encoder (Whisper-large-v3's encoder is most of a MoWE model's
forward time) gives the same features for a clip every epoch. The cache
computes them once, stores each example's valid frames under its id, and
reads them back on later epochs. Our encoders' outputs do not depend on the
rest of the batch, which is what makes this exact.

Entries live in a folder named after the encoder's fingerprint: a hash of its
class, its settings (e.g. Whisper's input mode) and every parameter and
buffer. Another checkpoint or another input mode is another fingerprint, so
stale features are never read. Each entry also records the clip's sample
count and a checksum of its samples; a clip whose audio changed on disk is
encoded again.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` channels.
"""

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence, Tuple

import torch
from speechbrain.utils.data_utils import batch_pad_right
from torch import nn

from speechbrain_mowe.lobes.sequence import to_absolute

logger = logging.getLogger(__name__)


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A hash of an encoder's class, extra states, parameters and buffers.

    Example
    -------
    >>> from speechbrain_mowe.lobes import TinyConvEncoder
    >>> a, b = TinyConvEncoder(), TinyConvEncoder()
    >>> encoder_fingerprint(a) == encoder_fingerprint(a)
    True
    >>> encoder_fingerprint(a) == encoder_fingerprint(b)
    False
    """
    digest = hashlib.sha256(f"{type(encoder).__module__}.{type(encoder).__qualname__}".encode())
    for name, value in encoder.state_dict().items():
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(str(value.dtype).encode())
            digest.update(str(tuple(value.shape)).encode())
            digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


def _checksum(wav: torch.Tensor) -> float:
    """A cheap fingerprint of a clip's samples."""
    wav = wav.detach().double()
    return float((wav * torch.arange(1, len(wav) + 1, device=wav.device)).sum())


class FeatureCache:
    """Computes a frozen encoder's features once per clip and reuses them.

    Arguments
    ---------
    folder : str or Path
        Where entries are stored (one sub-folder per encoder fingerprint).
    encoder : AudioEncoder
        The frozen encoder whose ``(feats, lens)`` are cached.
    dtype : torch.dtype, optional
        Storage dtype (e.g. ``torch.float16`` halves the disk use at the
        cost of rounding); default: the encoder's output dtype, exact.
    keep_in_memory : bool
        Also keep every entry read or written in memory, so that later epochs
        read no file (about frames x width x 4 bytes per clip of RAM).

    Example
    -------
    >>> from speechbrain_mowe.lobes import TinyConvEncoder
    >>> encoder = TinyConvEncoder().requires_grad_(False).eval()
    >>> cache = FeatureCache(getfixture("tmp_path"), encoder)
    >>> wavs, lens = torch.randn(2, 8000), torch.tensor([1.0, 0.5])
    >>> feats, feat_lens = cache.encode(["a", "b"], wavs, lens)
    >>> cache.misses, torch.equal(cache.encode(["a", "b"], wavs, lens)[0], feats), cache.hits
    (2, True, 2)
    """

    def __init__(
        self, folder, encoder: nn.Module, dtype: torch.dtype = None, keep_in_memory: bool = False
    ):
        if any(p.requires_grad for p in encoder.parameters()):
            raise ValueError(
                "FeatureCache needs a frozen encoder; features of a trained encoder "
                "change every step"
            )
        self.encoder = encoder
        self.dtype = dtype
        self.fingerprint = encoder_fingerprint(encoder)
        self.folder = Path(folder) / self.fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.output_dtype = next(encoder.parameters()).dtype
        self.memory = {} if keep_in_memory else None
        self.hits = 0
        self.misses = 0
        logger.info("Caching %s features in %s", type(encoder).__name__, self.folder)

    def _precision_folder(self) -> Path:
        """Features computed under autocast differ from float32 ones: kept apart."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        precision = (
            str(torch.get_autocast_dtype(device)).replace("torch.", "")
            if torch.is_autocast_enabled(device)
            else "fp32"
        )
        return self.folder / precision

    @staticmethod
    def _path(folder: Path, utt_id: str) -> Path:
        safe = hashlib.sha1(utt_id.encode()).hexdigest()[:20]
        return folder / safe[:2] / f"{safe}.pt"

    def _read(self, path: Path, utt_id: str, num_samples: int, checksum: float):
        if self.memory is not None and (path, num_samples, checksum) in self.memory:
            return self.memory[path, num_samples, checksum]
        if not path.exists():
            return None
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if (
            entry["id"] != utt_id
            or entry["num_samples"] != num_samples
            or entry["checksum"] != checksum
        ):
            return None
        if self.memory is not None:
            self.memory[path, num_samples, checksum] = entry["feats"]
        return entry["feats"]

    def _write(self, path: Path, utt_id: str, num_samples: int, checksum: float, feats):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        entry = {"id": utt_id, "num_samples": num_samples, "checksum": checksum, "feats": feats}
        torch.save(entry, tmp)
        os.replace(tmp, path)

    @torch.no_grad()
    def encode(
        self, ids: Sequence[str], wavs: torch.Tensor, wav_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The encoder's ``(feats [b, t, d], lens [b])`` for a batch, from the
        cache where possible; the missing examples are encoded together and stored.
        """
        num_samples = to_absolute(wav_lens, wavs.shape[1]).tolist()
        checksums = [_checksum(wav[:n]) for wav, n in zip(wavs, num_samples)]
        folder = self._precision_folder()
        paths = [self._path(folder, utt_id) for utt_id in ids]
        found = [self._read(*entry) for entry in zip(paths, ids, num_samples, checksums)]
        missing = [row for row, feats in enumerate(found) if feats is None]
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        if missing:
            rows = torch.tensor(missing, device=wavs.device)
            longest = max(num_samples[row] for row in missing)
            sub_wavs = wavs[rows, :longest]
            sub_lens = torch.tensor([num_samples[row] for row in missing]) / longest
            feats, lens = self.encoder(sub_wavs, sub_lens.to(wavs.device))
            frames = to_absolute(lens, feats.shape[1]).tolist()
            for k, row in enumerate(missing):
                stored = feats[k, : frames[k]].cpu()
                stored = stored.to(self.dtype) if self.dtype is not None else stored.clone()
                self._write(paths[row], ids[row], num_samples[row], checksums[row], stored)
                found[row] = stored
                if self.memory is not None:
                    self.memory[paths[row], num_samples[row], checksums[row]] = stored
        batch, lens = batch_pad_right(found)
        return batch.to(device=wavs.device, dtype=self.output_dtype), lens.to(wavs.device)
