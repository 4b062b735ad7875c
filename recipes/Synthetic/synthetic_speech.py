"""Speech for the synthetic corpus: eSpeak NG through ctypes.

:func:`speak` synthesizes text with eSpeak NG, loaded from the
``espeakng-loader`` package (which ships the library and its data), at
22.05 kHz, resampled to 16 kHz. eSpeak keeps state between utterances in
static variables that survive ``espeak_Terminate``, so every call loads a
fresh copy of the library: the same arguments then give the same samples
whatever was synthesized before (as long as no other code in the process
holds the library open). Not thread-safe.
"""

import _ctypes
import ctypes
import os
from dataclasses import dataclass
from typing import List

import espeakng_loader
import numpy as np
import torch

from speechbrain_mowe.dataio import SAMPLE_RATE
from speechbrain_mowe.dataio.audio import resampler

ESPEAK_SAMPLE_RATE = 22050
#: eSpeak NG English voices (accents).
ACCENTS = ("en-us", "en-us-nyc", "en", "en-gb-x-rp", "en-gb-scotland")
#: eSpeak NG voice variants per speaker sex.
VARIANTS = {
    "man": ("m1", "m2", "m3", "m4", "m5", "m6", "m7"),
    "woman": ("f1", "f2", "f3", "f4", "f5"),
}

# espeak_ng_OUTPUT_MODE / espeak_PARAMETER / espeak_POSITION_TYPE / flag values of speak_lib.h
_SYNCHRONOUS = 2
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_unload = _ctypes.FreeLibrary if os.name == "nt" else _ctypes.dlclose
_SIGNATURES = {
    "espeak_Initialize": (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int),
    "espeak_SetSynthCallback": (_SYNTH_CALLBACK,),
    "espeak_ng_SetRandSeed": (ctypes.c_long,),
    "espeak_SetVoiceByName": (ctypes.c_char_p,),
    "espeak_SetParameter": (ctypes.c_int, ctypes.c_int, ctypes.c_int),
    "espeak_Synth": (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ),
    "espeak_Terminate": (),
}


def _load_espeak() -> ctypes.CDLL:
    """A fresh copy of the library (its static state reset), with argument types set."""
    library = ctypes.CDLL(espeakng_loader.get_library_path())
    for name, argtypes in _SIGNATURES.items():
        getattr(library, name).argtypes = argtypes
    return library


@dataclass(frozen=True)
class Voice:
    """An eSpeak NG voice and its prosody settings.

    Arguments
    ---------
    accent : str
        eSpeak voice, one of :data:`ACCENTS`.
    variant : str
        eSpeak voice variant, one of :data:`VARIANTS`.
    rate : int
        Words per minute (eSpeak: 80 to 450, default 175).
    pitch : int
        Base pitch, 0 to 99 (default 50), relative to the variant's own.
    pitch_range : int
        Pitch variation, 0 (monotone) to 99 (default 50).
    volume : int
        Amplitude, linear, 0 to 200 (at 100, peaks reach 0.7 to 1.0 of full
        scale depending on the voice; eSpeak saturates above).
    """

    accent: str
    variant: str
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50
    volume: int = 100

    @property
    def name(self) -> str:
        """The eSpeak voice name, e.g. ``en-us+f3``."""
        return f"{self.accent}+{self.variant}"

    @property
    def sex(self) -> str:
        """``man`` or ``woman``, after the variant."""
        return next(sex for sex, variants in VARIANTS.items() if self.variant in variants)


def speak(text: str, voice: Voice, seed: int = 0) -> torch.Tensor:
    """Synthesizes ``text`` with eSpeak NG, as 16 kHz mono float samples.

    Arguments
    ---------
    text : str
        What to say.
    voice : Voice
        Voice and prosody.
    seed : int
        Seeds eSpeak's noise (breathy variants).

    Returns
    -------
    torch.Tensor
        ``[s]`` samples in [-1, 1].

    Example
    -------
    >>> voice = Voice("en-us", "f2", rate=160, volume=60)
    >>> wav = speak("the dog sees a ball", voice)
    >>> 1.0 < len(wav) / 16000 < 2.5
    True
    >>> torch.equal(wav, speak("the dog sees a ball", voice))
    True
    """
    chunks: List[np.ndarray] = []

    def receive(samples, count, events):
        if count > 0:
            chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    callback = _SYNTH_CALLBACK(receive)
    library = _load_espeak()
    try:
        rate = library.espeak_Initialize(
            _SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"eSpeak NG failed to start (returned {rate})")
        library.espeak_SetSynthCallback(callback)
        library.espeak_ng_SetRandSeed(seed)
        if library.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice '{voice.name}'")
        for parameter, value in (
            (_RATE, voice.rate),
            (_VOLUME, voice.volume),
            (_PITCH, voice.pitch),
            (_RANGE, voice.pitch_range),
        ):
            library.espeak_SetParameter(parameter, value, 0)
        data = text.encode()
        status = library.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        library.espeak_Terminate()
    finally:
        _unload(library._handle)
    if status != 0:
        raise RuntimeError(f"eSpeak NG could not synthesize {text!r} (error {status})")
    wav = torch.from_numpy(np.concatenate(chunks).astype(np.float32) / 32768)
    return resampler(ESPEAK_SAMPLE_RATE, SAMPLE_RATE)(wav)
