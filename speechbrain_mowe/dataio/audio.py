"""Audio reading that survives real-world files.

Everything is read through ``soundfile`` (libsndfile 1.1+ decodes wav, flac,
ogg and mp3; torchaudio 2.9+ would need ``torchcodec`` for the same). Every
clip comes out as a mono float32 tensor at 16 kHz: other sample rates are
resampled and extra channels averaged, with one log line the first time each
kind of conversion is met (not one line per file).

A file that is missing, cannot be decoded, holds no samples, holds NaN or
infinite samples or is shorter than a minimum raises :class:`AudioError`, whose
message names the file and the example id. Preparation scripts list such files
in their report and leave them out; training skips them and counts them
(:mod:`speechbrain_mowe.dataio.pipelines`).
"""

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import Optional

import soundfile as sf
import torch
import torchaudio

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

_announced_conversions = set()


class AudioError(ValueError):
    """A clip that cannot be used, with the file, the example id and why.

    Arguments
    ---------
    path : str
        The audio file.
    reason : str
        What is wrong with it.
    utt_id : str, optional
        The example the file belongs to.

    Example
    -------
    >>> str(AudioError("a/b.wav", "file not found", utt_id="b"))
    "b: file not found: 'a/b.wav'"
    """

    def __init__(self, path: str, reason: str, utt_id: Optional[str] = None):
        self.path = str(path)
        self.reason = reason
        self.utt_id = utt_id
        prefix = f"{utt_id}: " if utt_id is not None else ""
        super().__init__(f"{prefix}{reason}: '{self.path}'")


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: ``sample_rate``, ``channels``, ``frames``."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def audio_info(
    path, utt_id: Optional[str] = None, min_duration: float = 0.0, decode: bool = False
) -> AudioInfo:
    """Reads a file's header and checks that it holds at least ``min_duration`` s.

    Arguments
    ---------
    path : str or Path
        The audio file.
    utt_id : str, optional
        Named in errors.
    min_duration : float
        Shorter files raise :class:`AudioError`.
    decode : bool
        Decode the whole file and count its frames instead of trusting the
        header: slower, but catches a damaged payload and gives the true
        length of a truncated mp3, whose header still announces the full one.

    Returns
    -------
    AudioInfo

    Example
    -------
    >>> import torch, torchaudio
    >>> path = str(getfixture("tmp_path") / "tone.wav")
    >>> save_audio(path, torch.zeros(2, 4410), 44100)
    >>> audio_info(path)
    AudioInfo(sample_rate=44100, channels=2, frames=4410)
    >>> audio_info(path, utt_id="tone", min_duration=0.5)
    Traceback (most recent call last):
     ...
    speechbrain_mowe.dataio.audio.AudioError: tone: too short (0.10 s < 0.50 s): '...tone.wav'
    """
    with _reading(path, utt_id) as path:
        if decode:
            with sf.SoundFile(path) as f:
                result = AudioInfo(f.samplerate, f.channels, _count_frames(f))
        else:
            info = sf.info(path)
            result = AudioInfo(info.samplerate, info.channels, info.frames)
    _check_length(path, utt_id, result.frames, result.sample_rate, min_duration)
    return result


def load_audio(
    path,
    utt_id: Optional[str] = None,
    sample_rate: int = SAMPLE_RATE,
    min_duration: float = 0.0,
) -> torch.Tensor:
    """Reads a clip as a mono float32 tensor at ``sample_rate``.

    Arguments
    ---------
    path : str or Path
        A wav, flac, mp3, ogg, ... file, any sample rate, any channel count.
    utt_id : str, optional
        Named in errors.
    sample_rate : int
        The rate of the returned samples.
    min_duration : float
        Clips shorter than this (in seconds) raise :class:`AudioError`.

    Returns
    -------
    torch.Tensor
        ``[s]`` samples.

    Example
    -------
    >>> import torch
    >>> path = str(getfixture("tmp_path") / "stereo.flac")
    >>> save_audio(path, 0.1 * torch.ones(2, 44100), 44100)
    >>> wav = load_audio(path)
    >>> wav.shape, wav.dtype
    (torch.Size([16000]), torch.float32)
    >>> load_audio(path + ".missing", utt_id="x")
    Traceback (most recent call last):
     ...
    speechbrain_mowe.dataio.audio.AudioError: x: file not found: '...stereo.flac.missing'
    """
    with _reading(path, utt_id) as path:
        samples, file_rate = sf.read(path, dtype="float32", always_2d=True)
    _check_length(path, utt_id, samples.shape[0], file_rate, min_duration)
    wav = torch.from_numpy(samples)
    if not torch.isfinite(wav).all():
        raise AudioError(path, "non-finite samples (NaN or inf)", utt_id)
    channels = wav.shape[1]
    if channels > 1 or file_rate != sample_rate:
        _announce(path, file_rate, channels, sample_rate)
    wav = wav.mean(dim=1)
    if file_rate != sample_rate:
        wav = resampler(file_rate, sample_rate)(wav)
    return wav


def save_audio(path, wav: torch.Tensor, sample_rate: int, **kwargs) -> None:
    """Writes ``wav`` (``[s]`` or ``[channels, s]``) with the format the suffix names.

    Extra keyword arguments go to ``soundfile.write`` (e.g. ``format="MP3"``).
    """
    data = wav.detach().cpu().float().numpy()
    sf.write(os.fspath(path), data.T if data.ndim == 2 else data, sample_rate, **kwargs)


def _count_frames(f: sf.SoundFile, block: int = 1 << 16) -> int:
    # SoundFile.blocks() stops at the frame count of the header (padding a
    # truncated file); reading until a short block counts what really decodes.
    frames = 0
    while True:
        read = len(f.read(block, dtype="float32"))
        frames += read
        if read < block:
            return frames


@contextlib.contextmanager
def _reading(path, utt_id):
    """Yields ``path`` as a string; turns a missing file or any decoder
    failure into an :class:`AudioError`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise AudioError(path, "a folder, not an audio file", utt_id)
    if not os.path.isfile(path):
        raise AudioError(path, "file not found", utt_id)
    try:
        yield path
    except (sf.LibsndfileError, RuntimeError, EOFError, ValueError) as err:
        raise AudioError(path, f"unreadable audio ({err})", utt_id) from None


def _check_length(path, utt_id, frames, rate, min_duration):
    if frames == 0:
        raise AudioError(path, "empty audio (no samples)", utt_id)
    duration = frames / rate
    if duration < min_duration:
        raise AudioError(path, f"too short ({duration:.2f} s < {min_duration:.2f} s)", utt_id)


def _announce(path, file_rate, channels, sample_rate):
    kind = (file_rate, channels)
    if kind in _announced_conversions:
        return
    _announced_conversions.add(kind)
    steps = []
    if channels > 1:
        steps.append(f"averaging {channels} channels to mono")
    if file_rate != sample_rate:
        steps.append(f"resampling {file_rate} Hz to {sample_rate} Hz")
    what = " and ".join(steps)
    logger.info(
        "%s (first seen in '%s'; later files like it are converted silently)",
        what[0].upper() + what[1:],
        path,
    )


@functools.lru_cache(maxsize=16)
def resampler(orig_freq: int, new_freq: int) -> torchaudio.transforms.Resample:
    """A resampler from ``orig_freq`` to ``new_freq``, built once per pair of rates
    (its sinc kernel depends only on them)."""
    return torchaudio.transforms.Resample(orig_freq, new_freq)
