"""The audio encoder interface, its registry and a tiny from-scratch encoder.

Every encoder maps a padded batch of 16 kHz waveforms to frame features::

    feats, feat_lens = encoder(wavs, wav_lens)   # [b, t, d], relative lengths

and declares ``output_dim`` (``d``) and ``frame_rate`` (frames per second).
Frames past each example's length are zero, and an example's features do not
depend on the other examples of the batch.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` channels.
"""

import abc
import math
from typing import Optional, Sequence, Tuple

import torch
import torchaudio
from torch import nn

from speechbrain_mowe.checkpointing import written_whole
from speechbrain_mowe.lobes.conv import MaskedConvStack
from speechbrain_mowe.lobes.sequence import length_mask, to_absolute, to_relative, zero_padding
from speechbrain_mowe.registry import Registry

#: What to do with audio longer than a model reads at once, in encoders and
#: at inference: refuse it with its duration, or take it in chunks.
LONG_AUDIO_MODES = ("refuse", "chunk")


class AudioEncoder(nn.Module, abc.ABC):
    """Base class of the audio encoders.

    Subclasses implement :meth:`encode` on absolute sample counts; this class
    converts SpeechBrain relative lengths, zeroes padding and handles inputs
    longer than ``max_seconds`` (the window of encoders that have one):
    ``long_audio="refuse"`` refuses them with a message naming the duration,
    ``"chunk"`` encodes consecutive windows and joins their frames. Nothing
    is ever truncated.

    Arguments
    ---------
    long_audio : str
        ``"refuse"`` or ``"chunk"``, for inputs longer than ``max_seconds``.
    """

    sample_rate: int = 16000
    #: Longest input the encoder accepts in one window (None: unlimited).
    max_seconds: Optional[float] = None
    output_dim: int
    frame_rate: float

    def __init__(self, long_audio: str = "refuse"):
        super().__init__()
        if long_audio not in LONG_AUDIO_MODES:
            raise ValueError(f"long_audio must be one of {LONG_AUDIO_MODES}, got '{long_audio}'")
        self.long_audio = long_audio

    @abc.abstractmethod
    def encode(
        self, wavs: torch.Tensor, num_samples: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encodes ``wavs [b, s]`` with ``num_samples [b]`` valid samples.

        Returns ``(feats [b, t, d], num_frames [b])``; ``s`` never exceeds the
        window.
        """

    def forward(
        self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encodes a padded batch.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms ``[b, s]`` at ``sample_rate``.
        wav_lens : torch.Tensor, optional
            Relative lengths ``[b]`` (SpeechBrain convention).

        Returns
        -------
        feats : torch.Tensor
            ``[b, t, output_dim]``, ``t`` the longest output, zero past each length.
        feat_lens : torch.Tensor
            Relative lengths ``[b]``.
        """
        num_samples = to_absolute(wav_lens, wavs.shape[1], wavs.shape[0]).to(wavs.device)
        window = self.window_samples
        if window is not None and int(num_samples.max()) > window:
            if self.long_audio == "refuse":
                longest = int(num_samples.max()) / self.sample_rate
                raise ValueError(
                    f"{type(self).__name__} encodes at most {self.max_seconds:g} s at once, "
                    f"got an input of {longest:.2f} s; pass long_audio='chunk' to encode "
                    "it in consecutive windows, or cut the audio"
                )
            feats, num_frames = self._encode_chunks(wavs, num_samples, window)
        else:
            feats, num_frames = self.encode(wavs[:, : int(num_samples.max())], num_samples)
        # Trimmed to the batch's longest output: Whisper's 30 s window gives
        # 1500 frames for a 2 s clip's 100, which every later module would carry.
        feats = zero_padding(feats[:, : int(num_frames.max())], num_frames)
        return feats, to_relative(num_frames, feats.shape[1])

    def frozen(self, training: bool = False) -> "AudioEncoder":
        """Sets the mode of a frozen encoder: eval (no dropout) even while the
        model trains; encoders with input augmentation (Whisper's
        ``spec_augment``) override this to keep it on while ``training``."""
        return self.eval()

    @property
    def augments_input(self) -> bool:
        """Whether the encoder now changes its input at random (then its
        features must not be cached)."""
        return False

    @property
    def window_samples(self) -> Optional[int]:
        """Samples in one encoder window, or None when unlimited."""
        if self.max_seconds is None:
            return None
        return int(round(self.max_seconds * self.sample_rate))

    def _encode_chunks(
        self, wavs: torch.Tensor, num_samples: torch.Tensor, window: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encodes consecutive windows as one batch and joins their frames."""
        batch = wavs.shape[0]
        n_chunks = math.ceil(int(num_samples.max()) / window)
        wavs = nn.functional.pad(wavs, (0, max(0, n_chunks * window - wavs.shape[1])))
        chunks = wavs[:, : n_chunks * window].reshape(batch * n_chunks, window)
        starts = torch.arange(n_chunks, device=wavs.device) * window
        chunk_samples = (num_samples.unsqueeze(1) - starts).clamp(0, window).reshape(-1)
        keep = chunk_samples > 0
        feats, frames = self.encode(chunks[keep], chunk_samples[keep])
        t, d = feats.shape[1], feats.shape[2]
        all_feats = feats.new_zeros(batch * n_chunks, t, d)
        all_feats[keep] = feats
        all_frames = torch.zeros_like(chunk_samples)
        all_frames[keep] = frames.to(all_frames.dtype)
        # Move each example's valid frames, in order, to the front of its row.
        valid = length_mask(all_frames, t).reshape(batch, n_chunks * t)
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        joined = all_feats.reshape(batch, n_chunks * t, d).gather(
            1, order.unsqueeze(-1).expand(-1, -1, d)
        )
        num_frames = all_frames.reshape(batch, n_chunks).sum(1)
        return joined[:, : int(num_frames.max())], num_frames


ENCODERS = Registry("encoder", AudioEncoder, group="speechbrain_mowe.encoders")


def build_encoder(name: str, **kwargs) -> AudioEncoder:
    """Builds the encoder registered as ``name`` (for YAML ``!apply:``).

    Example
    -------
    >>> enc = build_encoder("tiny_conv", output_dim=16)
    >>> enc.output_dim
    16
    """
    return ENCODERS.build(name, **kwargs)


def save_encoder(path, encoder: AudioEncoder, name: str, **config) -> None:
    """Saves an encoder with what rebuilds it: its registry ``name`` and ``config``.

    :func:`load_encoder` then needs only the file, so a model that uses an
    encoder trained elsewhere (e.g. pre-trained for ASR with CTC) cannot be
    built with another architecture than the one the weights belong to.

    Arguments
    ---------
    path : str or path
        The file to write.
    encoder : AudioEncoder
        The trained encoder.
    name : str
        Its name in :data:`ENCODERS`.
    **config
        The keyword arguments it was built with.

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "base.ckpt")
    >>> encoder = build_encoder("tiny_conv", output_dim=16)
    >>> save_encoder(path, encoder, "tiny_conv", output_dim=16)
    >>> loaded = load_encoder(path)
    >>> torch.equal(loaded(torch.ones(1, 800))[0], encoder(torch.ones(1, 800))[0])
    True
    """
    built = ENCODERS.get(name)
    if isinstance(built, type) and not isinstance(encoder, built):
        raise TypeError(f"encoder is a {type(encoder).__name__}, not the '{name}' encoder")
    state = {"name": name, "config": config, "state_dict": encoder.state_dict()}
    with written_whole(path) as temporary:
        torch.save(state, temporary)


def load_encoder(path, **overrides) -> AudioEncoder:
    """Rebuilds an encoder written by :func:`save_encoder` and loads its weights.

    Arguments
    ---------
    path : str or path
        The file written by :func:`save_encoder`.
    **overrides
        Settings that do not change the weights (e.g. ``long_audio`` of a Whisper encoder).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"Encoder checkpoint {path} does not exist") from None
    if not isinstance(state, dict) or not {"name", "config", "state_dict"} <= set(state):
        raise ValueError(
            f"{path} is not an encoder file written by save_encoder "
            "(expected the keys name, config and state_dict)"
        )
    encoder = build_encoder(state["name"], **{**state["config"], **overrides})
    encoder.load_state_dict(state["state_dict"])
    return encoder


def log_mel(
    wavs: torch.Tensor,
    num_samples: torch.Tensor,
    filters: torch.Tensor,
    n_fft: int,
    hop_length: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mel power spectrogram of each example, unaffected by batch padding.

    The waveform gets ``n_fft // 2`` explicit zeros on the right, so the last
    valid frames of a lone example see the same zeros as those of a padded
    one (``torch.stft``'s reflect padding would differ). Frame ``i`` is centred
    on sample ``i * hop_length``; an example has ``num_samples // hop_length``
    frames, as in Whisper.

    Arguments
    ---------
    wavs : torch.Tensor
        ``[b, s]``.
    num_samples : torch.Tensor
        Valid samples ``[b]``.
    filters : torch.Tensor
        Mel filterbank ``[n_mels, n_fft // 2 + 1]``.
    n_fft, hop_length : int
        STFT size and hop.

    Returns
    -------
    mel : torch.Tensor
        ``[b, n_mels, t]`` mel power, zero past each length.
    num_frames : torch.Tensor
        ``[b]``.
    """
    wavs = nn.functional.pad(wavs * length_mask(num_samples, wavs.shape[1]), (0, n_fft // 2))
    window = torch.hann_window(n_fft, device=wavs.device, dtype=wavs.dtype)
    spec = torch.stft(wavs, n_fft, hop_length, window=window, return_complex=True)
    num_frames = torch.div(num_samples, hop_length, rounding_mode="floor")
    power = spec[..., : int(num_frames.max())].abs() ** 2
    mel = filters.to(power.dtype) @ power
    return mel * length_mask(num_frames, mel.shape[-1]).unsqueeze(1), num_frames


@ENCODERS.register("tiny_conv")
class TinyConvEncoder(AudioEncoder):
    """A Wav2Small-sized convolutional encoder trained from scratch.

    Log-mel features (25 ms windows, 10 ms hop) followed by a strided
    :class:`MaskedConvStack`; about 46k parameters with the defaults, cheap
    enough to sit in a pool of weak experts.

    Arguments
    ---------
    n_mels : int
        Mel bands of the front end.
    channels : sequence of int
        Channels of the convolution layers; the last is ``output_dim``.
    strides : sequence of int
        Stride of each layer; the frame rate is 100 / prod(strides).
    kernel_size : int
        Kernel size of every layer.
    output_dim : int, optional
        Overrides the last entry of ``channels``.

    Example
    -------
    >>> enc = TinyConvEncoder()
    >>> feats, lens = enc(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> feats.shape, lens
    (torch.Size([2, 25, 64]), tensor([1.0000, 0.5200]))
    >>> sum(p.numel() for p in enc.parameters()) < 100_000
    True
    """

    n_fft = 400
    hop_length = 160

    def __init__(
        self,
        n_mels: int = 40,
        channels: Sequence[int] = (48, 64, 64),
        strides: Sequence[int] = (2, 2, 1),
        kernel_size: int = 5,
        output_dim: Optional[int] = None,
    ):
        super().__init__()
        channels = list(channels)
        if output_dim is not None:
            channels[-1] = output_dim
        self.register_buffer(
            "filters",
            torchaudio.functional.melscale_fbanks(
                self.n_fft // 2 + 1, 0.0, self.sample_rate / 2, n_mels, self.sample_rate
            ).T.contiguous(),
            persistent=False,
        )
        self.convs = MaskedConvStack(n_mels, channels, [kernel_size] * len(channels), strides)
        self.output_dim = channels[-1]
        self.frame_rate = self.sample_rate / self.hop_length / math.prod(strides)

    def encode(self, wavs, num_samples):
        """Log-mel front end then the convolution stack."""
        mel, num_frames = log_mel(wavs, num_samples, self.filters, self.n_fft, self.hop_length)
        feats = torch.log(mel + 1e-6).transpose(1, 2)
        return self.convs(feats, num_frames)
