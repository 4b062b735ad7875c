"""The GE2E speaker encoder of Resemblyzer as a frame-level weak encoder.

Resemblyzer's voice encoder (Wan et al., "Generalized End-to-End Loss for
Speaker Verification", 2018) is a 3-layer LSTM (hidden 256) over 40 mel bands
of power (not log) spectra, 25 ms windows every 10 ms at 16 kHz, trained to
embed speakers. :class:`GE2EEncoder` computes the same front end as the
original's librosa call (``melspectrogram(sr=16000, n_fft=400, hop_length=160,
n_mels=40)``: a periodic Hann window, frames centred on every 160th sample
with zeros beyond the signal, Slaney mel filters) and returns the last LSTM
layer's state at every frame: 256 channels, 100 frames per second, carrying
what the network knows of the voice so far. The LSTM runs forward in time,
so padding after an example never changes its frames. Only the weights of
Resemblyzer's ``pretrained.pt`` are used, not its code (whose dependencies
include librosa and webrtcvad); its volume normalisation and silence trimming
are not applied, so loudness and pauses are left for the model to hear.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` channels.
"""

from typing import Optional

import torch
import torchaudio
from torch import nn

from speechbrain_mowe.lobes.encoders import ENCODERS, AudioEncoder
from speechbrain_mowe.lobes.sequence import length_mask


@ENCODERS.register("ge2e")
class GE2EEncoder(AudioEncoder):
    """Resemblyzer's GE2E LSTM, frame by frame.

    Arguments
    ---------
    weights : str or Path, optional
        A Resemblyzer checkpoint (``model_state`` holding ``lstm.*``); default:
        the installed ``resemblyzer/pretrained.pt``, checked against its
        pinned SHA-256 (:func:`speechbrain_mowe.weights.ge2e_weights`).

    Example
    -------
    >>> encoder = GE2EEncoder().eval()
    >>> feats, lens = encoder(torch.randn(2, 16000) * 0.1, torch.tensor([1.0, 0.5]))
    >>> feats.shape, lens
    (torch.Size([2, 101, 256]), tensor([1.0000, 0.5050]))
    """

    n_fft = 400
    hop_length = 160
    n_mels = 40
    hidden_size = 256
    num_layers = 3
    output_dim = hidden_size
    frame_rate = 100.0

    def __init__(self, weights: Optional[str] = None):
        super().__init__()
        #: Where the weights come from (a model card names it; None: a file of the user's).
        self.weights_origin = None
        if weights is None:
            from speechbrain_mowe.weights import GE2E_SHA256, ge2e_weights  # loads no module

            weights = ge2e_weights()
            self.weights_origin = (
                f"resemblyzer==0.1.4 pretrained.pt (sha256 {GE2E_SHA256}), Apache-2.0"
            )
        self.register_buffer(
            "filters",
            torchaudio.functional.melscale_fbanks(
                self.n_fft // 2 + 1,
                0.0,
                self.sample_rate / 2,
                self.n_mels,
                self.sample_rate,
                norm="slaney",
                mel_scale="slaney",
            ).T.contiguous(),
            persistent=False,
        )
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.lstm = nn.LSTM(self.n_mels, self.hidden_size, self.num_layers, batch_first=True)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "model_state" not in state:
            raise ValueError(f"{weights} is not a Resemblyzer checkpoint (no model_state)")
        lstm = {
            k[len("lstm.") :]: v for k, v in state["model_state"].items() if k.startswith("lstm.")
        }
        expected = {name: tuple(p.shape) for name, p in self.lstm.state_dict().items()}
        found = {name: tuple(value.shape) for name, value in lstm.items()}
        if found != expected:
            raise ValueError(
                f"{weights} holds no 3-layer, 256-wide GE2E LSTM (its lstm.* tensors: {found})"
            )
        self.lstm.load_state_dict(lstm)

    def mel(self, wavs: torch.Tensor, num_samples: torch.Tensor):
        """The original front end: ``([b, t, 40]`` mel power, ``[b]`` frames)``,
        ``1 + num_samples // 160`` frames per example, zero past each length."""
        wavs = wavs * length_mask(num_samples, wavs.shape[1]).to(wavs.dtype)
        wavs = nn.functional.pad(wavs, (self.n_fft // 2, self.n_fft // 2))
        spec = torch.stft(
            wavs, self.n_fft, self.hop_length, window=self.window.to(wavs.dtype),
            center=False, return_complex=True,
        )  # fmt: skip
        num_frames = torch.div(num_samples, self.hop_length, rounding_mode="floor") + 1
        power = spec[..., : int(num_frames.max())].abs() ** 2
        mel = (self.filters.to(power.dtype) @ power).transpose(1, 2)
        return mel * length_mask(num_frames, mel.shape[1]).unsqueeze(-1), num_frames

    def encode(self, wavs, num_samples):
        """The mel front end, then the LSTM's last layer at every frame."""
        mel, num_frames = self.mel(wavs, num_samples)
        feats, _ = self.lstm(mel)
        return feats, num_frames
