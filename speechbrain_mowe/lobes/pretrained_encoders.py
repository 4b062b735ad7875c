"""Adapters giving SpeechBrain's pretrained-encoder lobes the
:class:`~speechbrain_mowe.lobes.encoders.AudioEncoder` interface.

Each adapter loads its weights through the SpeechBrain lobe (a local
directory or a hub name, ``from_pretrained`` as SpeechBrain does) and fixes
what makes the lobe's output depend on the rest of the batch:

* SpeechBrain's Whisper lobe takes the log-mel ceiling over the whole batch and
  always pads to 30 s; :class:`WhisperEncoder` works per example and can
  encode variable-length inputs.
* SpeechBrain's wav2vec2-family lobes normalise the waveform over the padded
  length; :class:`SSLEncoder` normalises over each example's valid samples.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` channels.
"""

import math
from typing import Optional

import torch
from speechbrain.augment.freq_domain import SpectrogramDrop
from speechbrain.integrations.huggingface.hubert import HuBERT
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from speechbrain.integrations.huggingface.wavlm import WavLM
from speechbrain.integrations.huggingface.whisper import Whisper
from speechbrain.lobes.models.beats import BEATs
from torch import nn

from speechbrain_mowe.lobes.encoders import ENCODERS, AudioEncoder, log_mel
from speechbrain_mowe.lobes.sequence import length_mask, to_relative

WHISPER_MODES = ("variable", "pad30")


def spec_augment(masks: int = 2, max_time: int = 20, max_bands: int = 10) -> Optional[nn.Module]:
    """SpecAugment from SpeechBrain's augmenters: ``masks`` time masks of up to
    ``max_time`` frames, then ``masks`` frequency masks of up to ``max_bands``
    mel bands (each count drawn in ``[1, masks]`` per batch); None when
    ``masks`` is 0, so that a YAML setting can switch it off.

    Example
    -------
    >>> augment = spec_augment(masks=2)
    >>> mel = torch.ones(3, 100, 80)
    >>> bool((augment(mel) == 0).any()), spec_augment(masks=0) is None
    (True, True)
    """
    if masks == 0:
        return None
    return nn.Sequential(
        SpectrogramDrop(1, max_time, 1, masks, dim=1),
        SpectrogramDrop(1, max_bands, 1, masks, dim=2),
    )


@ENCODERS.register("whisper")
class WhisperEncoder(AudioEncoder):
    """The encoder of a Whisper checkpoint.

    Arguments
    ---------
    source : str
        Local directory or hub name of a Whisper checkpoint (with its
        feature-extractor config).
    save_path : str
        Download cache for hub names.
    mode : str
        ``"pad30"``: every input is padded to the 30 s window, Whisper's
        training condition (1500 frames out whatever the input).
        ``"variable"``: only the batch's longest input is encoded, with the
        positional embeddings trimmed to it and padded frames masked in
        attention; an example's output has one frame per 20 ms and equals
        its output when encoded alone. The mode is stored in the state dict;
        loading a state dict saved under the other mode raises an error.
    long_audio : str
        ``"refuse"`` or ``"chunk"`` for inputs longer than the window.
    spec_augment : torch.nn.Module, optional
        SpecAugment on the log-mel input while training: a module mapping
        ``[b, t, n_mels]`` to the same, e.g. :func:`spec_augment` (SpeechBrain's
        ``SpectrogramDrop`` in time and in frequency). It stays on when the
        encoder is frozen inside a training model (:meth:`frozen`), never in
        evaluation.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.tiny import make_tiny_whisper
    >>> path = make_tiny_whisper(tempfile.mkdtemp())  # or "openai/whisper-large-v3"
    >>> enc = WhisperEncoder(path, mode="variable")
    >>> feats, lens = enc(torch.randn(2, 32000), torch.tensor([1.0, 0.5]))
    >>> feats.shape, lens
    (torch.Size([2, 100, 64]), tensor([1.0000, 0.5000]))
    """

    def __init__(
        self,
        source: str,
        save_path: str = "",
        *,
        mode: str = "variable",
        long_audio: str = "refuse",
        spec_augment: Optional[nn.Module] = None,
    ):
        super().__init__(long_audio=long_audio)
        if mode not in WHISPER_MODES:
            raise ValueError(f"Whisper mode must be one of {WHISPER_MODES}, got '{mode}'")
        self.mode = mode
        self.spec_augment = spec_augment
        self._augmenting = False
        lobe = Whisper(source, save_path, encoder_only=True, freeze=False)
        self.encoder = lobe.model.encoder
        self.register_buffer("filters", lobe._mel_filters, persistent=False)
        self.n_fft = lobe._n_fft
        self.hop_length = lobe._hop_length
        self.output_dim = self.encoder.config.d_model
        self.frame_rate = self.sample_rate / self.hop_length / 2
        # Two mel frames per position; the window is what the embeddings cover.
        self.max_seconds = (
            self.encoder.config.max_source_positions * 2 * self.hop_length / self.sample_rate
        )

    def train(self, mode: bool = True):
        """Sets training mode; SpecAugment (if any) follows it."""
        super().train(mode)
        self._augmenting = mode
        return self

    def frozen(self, training: bool = False) -> "WhisperEncoder":
        """Eval mode (no dropout), with SpecAugment on while ``training``."""
        self.eval()
        self._augmenting = training
        return self

    @property
    def augments_input(self) -> bool:
        """Whether SpecAugment is applied now."""
        return self.spec_augment is not None and self._augmenting

    def get_extra_state(self):
        """The input mode, saved with the model."""
        return {"mode": self.mode}

    def set_extra_state(self, state):
        """Refuses weights trained under another input mode."""
        if state.get("mode") != self.mode:
            raise ValueError(
                f"This WhisperEncoder runs in mode '{self.mode}' but the state dict was "
                f"saved in mode '{state.get('mode')}'; build it with mode='{state.get('mode')}'"
            )

    def encode(self, wavs, num_samples):
        """Log-mel (per-example ceiling) then the encoder in the chosen mode."""
        if self.mode == "pad30":
            window = self.window_samples
            wavs = nn.functional.pad(wavs, (0, window - wavs.shape[1]))
            mel_samples = torch.full_like(num_samples, window)
        else:
            mel_samples = num_samples
        mel, mel_frames = log_mel(wavs, mel_samples, self.filters, self.n_fft, self.hop_length)
        valid = length_mask(mel_frames, mel.shape[-1]).unsqueeze(1)
        log_spec = torch.clamp(mel, min=1e-10).log10()
        ceiling = log_spec.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = (torch.maximum(log_spec, ceiling - 8.0) + 4.0) / 4.0
        if self.augments_input:
            log_spec = self.spec_augment(log_spec.transpose(1, 2)).transpose(1, 2)
        num_frames = self._frames(torch.div(num_samples, self.hop_length, rounding_mode="floor"))
        if self.mode == "pad30":
            return self.encoder(log_spec).last_hidden_state, num_frames
        return self._encode_variable(log_spec * valid, mel_frames), num_frames

    @staticmethod
    def _frames(mel_frames):
        """Output frames of the two convolutions (the second has stride 2)."""
        return torch.div(mel_frames - 1, 2, rounding_mode="floor") + 1

    def _encode_variable(self, mel, mel_frames):
        """Whisper's encoder on unpadded mels: masked convs, trimmed positions."""
        enc = self.encoder
        x = nn.functional.gelu(enc.conv1(mel))
        x = x * length_mask(mel_frames, x.shape[-1]).unsqueeze(1).to(x.dtype)
        x = nn.functional.gelu(enc.conv2(x)).transpose(1, 2)
        frames = self._frames(mel_frames)
        x = x + enc.embed_positions.weight[: x.shape[1]].to(x.dtype)
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        keys = length_mask(frames, x.shape[1])
        bias = torch.zeros(keys.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~keys, torch.finfo(x.dtype).min)
        bias = bias[:, None, None, :].expand(-1, 1, x.shape[1], -1)
        for layer in enc.layers:
            if self.training and enc.layerdrop > 0 and torch.rand([]) < enc.layerdrop:
                continue
            x = layer(x, bias)
        return enc.layer_norm(x)


class SSLEncoder(AudioEncoder):
    """A wav2vec 2.0-family model (wav2vec2, WavLM, HuBERT) as an encoder.

    Arguments
    ---------
    source : str
        Local directory or hub name.
    save_path : str
        Download cache for hub names.
    layer_weights : bool
        Output a learned softmax-weighted sum of all hidden layers (as WavLLM
        does with WavLM) instead of the last layer.
    freeze_backbone : bool
        Keep the pretrained model frozen (no gradients, eval mode) while the
        layer weights still train; use it with ``MoWEEncoder(freeze_weak=False)``,
        since ``freeze_weak`` would freeze the layer weights too.

    Note
    ----
    Checkpoints whose feature extractor uses group normalisation
    (``feat_extract_norm="group"``, e.g. wav2vec2-base) normalise over the
    padded length inside the model, so their output still depends on padding;
    layer-norm checkpoints (WavLM, HuBERT-large, wav2vec2-large) do not.
    """

    lobe_class: type

    def __init__(
        self,
        source: str,
        save_path: str = "",
        *,
        layer_weights: bool = False,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        self.lobe = self.lobe_class(
            source, save_path, freeze=False, output_all_hiddens=layer_weights
        )
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.lobe.requires_grad_(False)
        # Normalised here per example over the valid samples instead.
        self.normalize = self.lobe.normalize_wav
        self.lobe.normalize_wav = False
        config = self.lobe.model.config
        self.output_dim = config.hidden_size
        self.frame_rate = self.sample_rate / math.prod(config.conv_stride)
        self.layer_logits = (
            nn.Parameter(torch.zeros(config.num_hidden_layers + 1)) if layer_weights else None
        )

    def train(self, mode: bool = True):
        """Sets training mode, keeping a frozen backbone in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.lobe.eval()
        return self

    def encode(self, wavs, num_samples):
        """Normalise per example, run the lobe, mix layers if asked."""
        if self.normalize:
            valid = length_mask(num_samples, wavs.shape[1]).to(wavs.dtype)
            count = valid.sum(1, keepdim=True).clamp(min=1)
            mean = (wavs * valid).sum(1, keepdim=True) / count
            var = (((wavs - mean) * valid) ** 2).sum(1, keepdim=True) / count
            wavs = (wavs - mean) / torch.sqrt(var + 1e-5) * valid
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            feats = self.lobe(wavs, to_relative(num_samples, wavs.shape[1]))
        if self.layer_logits is not None:
            weights = self.layer_logits.softmax(0).to(feats.dtype)
            feats = torch.einsum("l,lbtd->btd", weights, feats)
        num_frames = self.lobe.model._get_feat_extract_output_lengths(num_samples)
        return feats, num_frames.long()


@ENCODERS.register("wav2vec2")
class Wav2Vec2Encoder(SSLEncoder):
    """wav2vec 2.0 through SpeechBrain's ``Wav2Vec2`` lobe (see :class:`SSLEncoder`)."""

    lobe_class = Wav2Vec2


@ENCODERS.register("wavlm")
class WavLMEncoder(SSLEncoder):
    """WavLM through SpeechBrain's ``WavLM`` lobe (see :class:`SSLEncoder`)."""

    lobe_class = WavLM


@ENCODERS.register("hubert")
class HuBERTEncoder(SSLEncoder):
    """HuBERT through SpeechBrain's ``HuBERT`` lobe (see :class:`SSLEncoder`)."""

    lobe_class = HuBERT


@ENCODERS.register("beats")
class BEATsEncoder(AudioEncoder):
    """BEATs audio-event encoder through SpeechBrain's ``BEATs`` lobe.

    BEATs cuts its 100 Hz, 128-band filterbank into 16 x 16 patches and emits
    the 8 frequency patches of each time step in a row; as in SALMONN this
    sequence is used as is, at 8 x 100 / 16 = 50 frames per second.

    Arguments
    ---------
    ckpt_path : str
        Path of a BEATs checkpoint (a torch file holding ``cfg`` and ``model``).
    """

    frame_rate = 50.0

    def __init__(self, ckpt_path: str):
        super().__init__()
        self.lobe = BEATs(ckp_path=ckpt_path, freeze=False)
        self.output_dim = self.lobe.cfg.encoder_embed_dim
        patch = self.lobe.cfg.input_patch_size
        self._patch = patch
        self._freq_patches = 128 // patch

    def encode(self, wavs, num_samples):
        """Filterbank patches through the transformer."""
        feats = self.lobe(wavs, to_relative(num_samples, wavs.shape[1]))[0]
        # Kaldi fbank (25 ms / 10 ms, edges snipped), then whole 16-frame patches.
        fbank_frames = (torch.div(num_samples - 400, 160, rounding_mode="floor") + 1).clamp(min=0)
        steps = torch.div(fbank_frames, self._patch, rounding_mode="floor")
        return feats, (steps * self._freq_patches).clamp(max=feats.shape[1])
