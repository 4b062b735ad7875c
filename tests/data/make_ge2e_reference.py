"""Writes ``ge2e_reference.npz``: the original Resemblyzer front end (librosa) and
LSTM on a fixed waveform, which ``tests/unittests/test_ge2e.py`` compares the
package's GE2EEncoder with.

Needs librosa, which the package does not install, and resemblyzer::

    pip install --target /tmp/librosa_site librosa==0.11.0
    PYTHONPATH=/tmp/librosa_site python tests/data/make_ge2e_reference.py \\
        tests/data/ge2e_reference.npz
"""

import sys
import types

import numpy as np


def reference_wav() -> np.ndarray:
    """1.5 s of two tones, one gliding, amplitude-modulated, in noise (16-bit)."""
    rng = np.random.default_rng(20261202)
    t = np.arange(24000) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t * (1 + 0.1 * t))
    wav = wav * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(24000)
    return np.round(wav * 32767).astype(np.int16)


def main(path: str) -> None:
    """Runs the original code on :func:`reference_wav` and saves what it computes."""
    sys.modules["webrtcvad"] = types.ModuleType("webrtcvad")  # only its VAD, unused, needs it
    import librosa
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    pcm = reference_wav()
    mel = wav_to_mel_spectrogram(pcm.astype(np.float32) / 32767)
    encoder = VoiceEncoder("cpu", verbose=False)
    with torch.no_grad():
        frames, _ = encoder.lstm(torch.from_numpy(mel)[None])
    versions = np.array([f"librosa {librosa.__version__}", "resemblyzer 0.1.4"])
    np.savez_compressed(path, pcm=pcm, mel=mel, frames=frames[0, ::5].numpy(), versions=versions)


if __name__ == "__main__":
    main(sys.argv[1])
