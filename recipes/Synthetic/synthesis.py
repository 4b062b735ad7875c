"""Generators of the synthetic corpus: sentences, speech and sound scenes.

Sentences
    A small English grammar, ``determiner [adjective] noun verb determiner
    [adjective] noun [place] [time]``, over a few dozen words, with its exact
    German translation (gender and case agreement of determiners and
    adjective endings, nouns capitalised, the time adverb moved after the
    verb): ``the small dog sees a red ball today`` is ``der kleine Hund sieht
    heute einen roten Ball``. Both sides are lowercase apart from German
    nouns and carry no punctuation.

Speech
    :func:`speak` synthesizes text with eSpeak NG, loaded through ctypes from
    the ``espeakng-loader`` package (which ships the library and its data),
    at 22.05 kHz, resampled to 16 kHz. eSpeak keeps state between
    utterances in static variables that survive ``espeak_Terminate``, so
    every call loads a fresh copy of the library: the same arguments then
    give the same samples whatever was synthesized before (as long as no
    other code in the process holds the library open). Not thread-safe.

Sound scenes
    One to three sound events in a row (a high or low steady tone, a rising
    or falling chirp, a noise burst, one to three clicks) over faint
    background noise, and paraphrased captions naming the events in order
    and the number of clicks.
"""

import _ctypes
import ctypes
import itertools
import math
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import espeakng_loader
import numpy as np
import torch

from speechbrain_mowe.dataio import SAMPLE_RATE
from speechbrain_mowe.dataio.audio import resampler

# --- Sentences ---------------------------------------------------------------

#: German forms (nominative, accusative) per gender of each determiner family.
_DEFINITE = {"m": ("der", "den"), "f": ("die", "die"), "n": ("das", "das")}
_DEMONSTRATIVE = {"m": ("dieser", "diesen"), "f": ("diese", "diese"), "n": ("dieses", "dieses")}
_INDEFINITE = {"m": ("ein", "einen"), "f": ("eine", "eine"), "n": ("ein", "ein")}
_POSSESSIVE = {"m": ("mein", "meinen"), "f": ("meine", "meine"), "n": ("mein", "mein")}
#: Adjective endings (nominative, accusative) per gender after each kind of determiner.
_WEAK = {"m": ("e", "en"), "f": ("e", "e"), "n": ("e", "e")}
_MIXED = {"m": ("er", "en"), "f": ("e", "e"), "n": ("es", "es")}

#: English determiner -> (German forms, adjective endings after it).
DETERMINERS = {
    "the": (_DEFINITE, _WEAK),
    "a": (_INDEFINITE, _MIXED),
    "this": (_DEMONSTRATIVE, _WEAK),
    "my": (_POSSESSIVE, _MIXED),
}
#: English adjective -> German stem.
ADJECTIVES = {
    "small": "klein",
    "big": "groß",
    "old": "alt",
    "young": "jung",
    "red": "rot",
    "green": "grün",
    "blue": "blau",
    "white": "weiß",
    "black": "schwarz",
}
#: Nouns that can be subjects (animate) -> (German noun, gender).
SUBJECT_NOUNS = {
    "dog": ("Hund", "m"),
    "cat": ("Katze", "f"),
    "bird": ("Vogel", "m"),
    "horse": ("Pferd", "n"),
    "child": ("Kind", "n"),
    "woman": ("Frau", "f"),
    "man": ("Mann", "m"),
    "girl": ("Mädchen", "n"),
}
#: Nouns that are only objects -> (German noun, gender).
THING_NOUNS = {
    "ball": ("Ball", "m"),
    "apple": ("Apfel", "m"),
    "hat": ("Hut", "m"),
    "cup": ("Tasse", "f"),
    "box": ("Kiste", "f"),
    "lamp": ("Lampe", "f"),
    "book": ("Buch", "n"),
    "car": ("Auto", "n"),
    "boat": ("Boot", "n"),
}
NOUNS = {**SUBJECT_NOUNS, **THING_NOUNS}
PEOPLE = ("child", "woman", "man", "girl")
COLOURS = ("red", "green", "blue", "white", "black")
#: Adjectives said of living beings only.
LIVING_ADJECTIVES = ("young",)
#: Transitive verbs (third person singular, accusative object).
VERBS = {
    "sees": "sieht",
    "finds": "findet",
    "likes": "mag",
    "holds": "hält",
    "carries": "trägt",
    "buys": "kauft",
    "paints": "malt",
    "hears": "hört",
    "needs": "braucht",
    "watches": "beobachtet",
}
#: The verbs whose object may be a person.
PERSON_VERBS = ("sees", "finds", "likes", "hears", "paints", "watches")
PLACES = {
    "in the garden": "im Garten",
    "in the kitchen": "in der Küche",
    "in the park": "im Park",
    "on the street": "auf der Straße",
    "at the lake": "am See",
}
TIMES = {"today": "heute", "again": "wieder", "now": "jetzt", "often": "oft"}

#: How often a noun phrase has an adjective, and a sentence a place or a time.
ADJECTIVE_SHARE = 0.5
PLACE_SHARE = 0.4
TIME_SHARE = 0.4


@dataclass(frozen=True)
class NounPhrase:
    """``determiner [adjective] noun``, all given as English words."""

    determiner: str
    adjective: Optional[str]
    noun: str

    def english(self) -> str:
        """The phrase in English, with ``an`` before a vowel."""
        words = [w for w in (self.adjective, self.noun) if w]
        article = "an" if self.determiner == "a" and words[0][0] in "aeiou" else self.determiner
        return " ".join([article, *words])

    def german(self, case: int) -> str:
        """The phrase in German, nominative (``case=0``) or accusative (``1``)."""
        forms, endings = DETERMINERS[self.determiner]
        noun, gender = NOUNS[self.noun]
        words = [forms[gender][case]]
        if self.adjective:
            words.append(ADJECTIVES[self.adjective] + endings[gender][case])
        return " ".join([*words, noun])


@dataclass(frozen=True)
class Sentence:
    """One sentence of the grammar; :attr:`english` and :attr:`german` are its texts.

    Example
    -------
    >>> s = Sentence(NounPhrase("my", "old", "horse"), "needs",
    ...              NounPhrase("a", None, "apple"), place="at the lake", time="now")
    >>> s.english
    'my old horse needs an apple at the lake now'
    >>> s.german
    'mein altes Pferd braucht jetzt einen Apfel am See'
    >>> Sentence.from_english(s.english) == s
    True
    """

    subject: NounPhrase
    verb: str
    object: NounPhrase
    place: Optional[str] = None
    time: Optional[str] = None

    @property
    def english(self) -> str:
        """``subject verb object [place] [time]``."""
        parts = [self.subject.english(), self.verb, self.object.english(), self.place, self.time]
        return " ".join(p for p in parts if p)

    @property
    def german(self) -> str:
        """``subject verb [time] object [place]``."""
        parts = [
            self.subject.german(0),
            VERBS[self.verb],
            TIMES.get(self.time),
            self.object.german(1),
            PLACES.get(self.place),
        ]
        return " ".join(p for p in parts if p)

    @classmethod
    def from_english(cls, text: str) -> "Sentence":
        """Parses an English sentence of the grammar; ValueError for anything else."""
        words = text.split()

        def take(vocabulary) -> Optional[str]:
            for size in (3, 1):
                phrase = " ".join(words[:size])
                if len(words) >= size and phrase in vocabulary:
                    del words[:size]
                    return phrase
            return None

        def noun_phrase(nouns) -> Optional[NounPhrase]:
            determiner = take({**DETERMINERS, "an": None})
            adjective = take(ADJECTIVES)
            noun = take(nouns)
            if determiner is None or noun is None:
                return None
            return NounPhrase("a" if determiner == "an" else determiner, adjective, noun)

        subject = noun_phrase(SUBJECT_NOUNS)
        verb = take(VERBS)
        obj = noun_phrase(NOUNS)
        sentence = None
        if subject and verb and obj:
            sentence = cls(subject, verb, obj, take(PLACES), take(TIMES))
        if sentence is None or words or sentence.english != " ".join(text.split()):
            raise ValueError(f"Not a sentence of the grammar: {text!r}")
        return sentence


def translate(english: str) -> str:
    """The German translation of an English sentence of the grammar.

    Example
    -------
    >>> translate("the small dog sees a red ball")
    'der kleine Hund sieht einen roten Ball'
    >>> translate("a dog sees")
    Traceback (most recent call last):
     ...
    ValueError: Not a sentence of the grammar: 'a dog sees'
    """
    return Sentence.from_english(english).german


def random_sentence(rng: random.Random) -> Sentence:
    """A sentence drawn from the grammar, with a few restrictions so that it
    makes sense: colours are never said of people nor ``young`` of things,
    people are only the object of :data:`PERSON_VERBS`, and the object noun
    differs from the subject's.

    Example
    -------
    >>> random_sentence(random.Random(3)).english
    'a white bird watches the dog'
    """

    def noun_phrase(nouns: Sequence[str]) -> NounPhrase:
        determiner = rng.choice(list(DETERMINERS))
        noun = rng.choice(nouns)
        fitting = [
            adjective
            for adjective in ADJECTIVES
            if not (adjective in COLOURS and noun in PEOPLE)
            and not (adjective in LIVING_ADJECTIVES and noun in THING_NOUNS)
        ]
        adjective = rng.choice(fitting) if rng.random() < ADJECTIVE_SHARE else None
        return NounPhrase(determiner, adjective, noun)

    subject = noun_phrase(list(SUBJECT_NOUNS))
    verb = rng.choice(list(VERBS))
    obj = noun_phrase(
        [
            noun
            for noun in NOUNS
            if noun != subject.noun and (noun not in PEOPLE or verb in PERSON_VERBS)
        ]
    )
    place = rng.choice(list(PLACES)) if rng.random() < PLACE_SHARE else None
    time = rng.choice(list(TIMES)) if rng.random() < TIME_SHARE else None
    return Sentence(subject, verb, obj, place, time)


def english_words() -> List[str]:
    """Every word the English side of the grammar can use.

    Example
    -------
    >>> len(english_words()), "an" in english_words()
    (53, True)
    """
    phrases = [*DETERMINERS, "an", *ADJECTIVES, *NOUNS, *VERBS, *PLACES, *TIMES]
    return list(dict.fromkeys(word for phrase in phrases for word in phrase.split()))


def german_words() -> List[str]:
    """Every word form the German side of the grammar can use.

    Example
    -------
    >>> words = german_words()
    >>> [w for w in words if w.startswith("rot")]
    ['rote', 'roten', 'roter', 'rotes']
    """
    determiners = [
        form for forms, _ in DETERMINERS.values() for by_case in forms.values() for form in by_case
    ]
    endings = sorted(
        {e for _, ends in DETERMINERS.values() for by_case in ends.values() for e in by_case}
    )
    adjectives = [stem + ending for stem in ADJECTIVES.values() for ending in endings]
    nouns = [noun for noun, _ in NOUNS.values()]
    phrases = [*determiners, *adjectives, *nouns, *VERBS.values(), *PLACES.values()]
    phrases.extend(TIMES.values())
    return list(dict.fromkeys(word for phrase in phrases for word in phrase.split()))


# --- Speech ------------------------------------------------------------------

ESPEAK_SAMPLE_RATE = 22050
#: eSpeak NG English voices (accents).
ACCENTS = ("en-us", "en-us-nyc", "en", "en-gb-x-rp", "en-gb-scotland")
#: eSpeak NG voice variants per speaker sex.
VARIANTS = {
    "man": ("m1", "m2", "m3", "m4", "m5", "m6", "m7"),
    "woman": ("f1", "f2", "f3", "f4", "f5"),
}
#: Where a waveform may peak at most: just under full scale.
MAX_PEAK = 0.99

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


def limit_peak(wav: torch.Tensor, peak: float = MAX_PEAK) -> torch.Tensor:
    """``wav`` scaled down to peak at ``peak`` if it goes beyond it, else unchanged.

    Example
    -------
    >>> limit_peak(torch.tensor([0.5, -1.2])).tolist()
    [0.4124999940395355, -0.9900000095367432]
    >>> limit_peak(torch.tensor([0.5, -0.2])).tolist()
    [0.5, -0.20000000298023224]
    """
    top = wav.abs().max()
    return wav * (peak / top) if top > peak else wav


# --- Sound scenes ------------------------------------------------------------

#: (kind, detail) of every event -> paraphrases naming it; the first is the canonical one.
EVENT_PHRASES = {
    ("tone", "high"): ("a high tone", "a high-pitched tone", "a high steady beep"),
    ("tone", "low"): ("a low tone", "a low-pitched tone", "a low steady hum"),
    ("chirp", "rising"): ("a rising chirp", "an upward sweep", "a rising whistle"),
    ("chirp", "falling"): ("a falling chirp", "a downward sweep", "a falling whistle"),
    ("noise", None): ("a burst of noise", "a short noise burst", "a hiss of noise"),
    ("clicks", 1): ("one click", "a single click", "a click"),
    ("clicks", 2): ("two clicks", "a pair of clicks", "two short clicks"),
    ("clicks", 3): ("three clicks", "three short clicks", "a series of three clicks"),
}
#: Caption templates per number of events; the first is the canonical one.
CONNECTORS = {
    1: ("{0}", "just {0}", "{0} over faint background noise", "{0} against a quiet background"),
    2: ("{0} followed by {1}", "{0} and then {1}", "first {0}, then {1}", "{0}, after that {1}"),
    3: (
        "{0} followed by {1} and then {2}",
        "{0}, then {1}, then {2}",
        "first {0}, then {1}, and finally {2}",
        "{0}, {1} and then {2}",
    ),
}
MAX_EVENTS = max(CONNECTORS)
NUM_CAPTIONS = 5


@dataclass(frozen=True)
class Event:
    """A sound event: its ``kind`` and ``detail`` (a key of :data:`EVENT_PHRASES`).

    Kinds and details: ``tone`` (``high``, ``low``), ``chirp`` (``rising``,
    ``falling``), ``noise`` (None) and ``clicks`` (their number, 1 to 3).
    """

    kind: str
    detail: Union[str, int, None] = None

    def __post_init__(self):
        if (self.kind, self.detail) not in EVENT_PHRASES:
            known = ", ".join(f"{k}/{d}" for k, d in EVENT_PHRASES)
            raise ValueError(f"Unknown event {self.kind}/{self.detail}; the events are {known}")

    def __str__(self) -> str:
        return EVENT_PHRASES[self.kind, self.detail][0]


def random_scene(rng: random.Random) -> Tuple[Event, ...]:
    """One to three events; two in a row are never of the same kind.

    Example
    -------
    >>> [str(event) for event in random_scene(random.Random(0))]
    ['two clicks', 'a high tone']
    """
    events: List[Event] = []
    for _ in range(rng.randint(1, MAX_EVENTS)):
        allowed = [key for key in EVENT_PHRASES if not events or key[0] != events[-1].kind]
        events.append(Event(*rng.choice(allowed)))
    return tuple(events)


def caption(events: Sequence[Event]) -> str:
    """The canonical caption: the events' first phrases in the first template.

    Example
    -------
    >>> caption([Event("tone", "low"), Event("clicks", 2)])
    'a low tone followed by two clicks'
    """
    return CONNECTORS[len(events)][0].format(*map(str, events))


def captions(events: Sequence[Event], rng: random.Random, count: int = NUM_CAPTIONS) -> List[str]:
    """:func:`caption` and ``count - 1`` other distinct paraphrases drawn with ``rng``.

    Example
    -------
    >>> captions([Event("clicks", 3)], random.Random(0), count=2)
    ['three clicks', 'three short clicks over faint background noise']
    """
    phrases = [EVENT_PHRASES[event.kind, event.detail] for event in events]
    every = [
        template.format(*choice)
        for template in CONNECTORS[len(events)]
        for choice in itertools.product(*phrases)
    ]
    others = list(dict.fromkeys(every[1:]))
    return [every[0], *rng.sample(others, count - 1)]


def _fade(wav: np.ndarray, seconds: float = 0.015) -> np.ndarray:
    """Raised-cosine fade in and out, so an onset never sounds like a click."""
    n = min(round(seconds * SAMPLE_RATE), len(wav) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, n))
    wav[:n] *= ramp
    wav[len(wav) - n :] *= ramp[::-1]
    return wav


def _render_event(event: Event, rng: random.Random, noise: np.random.Generator) -> np.ndarray:
    """One event at peak 1."""
    if event.kind == "clicks":
        spacing = rng.uniform(0.15, 0.3)
        click_t = np.arange(round(0.004 * SAMPLE_RATE)) / SAMPLE_RATE
        click = np.sin(2 * math.pi * rng.uniform(2000, 4000) * click_t) * np.exp(-click_t / 6e-4)
        wav = np.zeros(round((event.detail - 1) * spacing * SAMPLE_RATE) + len(click))
        for k in range(event.detail):
            start = round(k * spacing * SAMPLE_RATE)
            wav[start : start + len(click)] += click
    else:
        seconds = {"tone": (0.4, 1.0), "chirp": (0.4, 0.9), "noise": (0.2, 0.6)}[event.kind]
        t = np.arange(round(rng.uniform(*seconds) * SAMPLE_RATE)) / SAMPLE_RATE
        if event.kind == "tone":
            low, high = (900, 2000) if event.detail == "high" else (120, 300)
            wav = np.sin(2 * math.pi * rng.uniform(low, high) * t)
        elif event.kind == "chirp":
            start, end = rng.uniform(300, 500), rng.uniform(1500, 3000)
            if event.detail == "falling":
                start, end = end, start
            growth = math.log(end / start) / t[-1]
            wav = np.sin(2 * math.pi * start * np.expm1(growth * t) / growth)
        else:
            wav = noise.standard_normal(len(t))
        wav = _fade(wav)
    return wav / np.abs(wav).max()


def render_scene(events: Sequence[Event], rng: random.Random) -> torch.Tensor:
    """The events in order, with random timing, frequencies and levels.

    Each event peaks between -18 and -6 dBFS; silences of 0.2 to 0.6 s
    separate them and frame the scene; white noise at -55 to -45 dBFS RMS
    runs underneath.

    Arguments
    ---------
    events : sequence of Event
        What happens, in order.
    rng : random.Random
        Draws every random choice; the same state gives the same samples.

    Returns
    -------
    torch.Tensor
        ``[s]`` samples at 16 kHz.

    Example
    -------
    >>> wav = render_scene([Event("chirp", "rising"), Event("clicks", 2)], random.Random(0))
    >>> 1.0 < len(wav) / 16000 < 3.5, bool(wav.abs().max() < 0.6)
    (True, True)
    """
    noise = np.random.default_rng(rng.getrandbits(64))

    def silence() -> np.ndarray:
        return np.zeros(round(rng.uniform(0.2, 0.6) * SAMPLE_RATE))

    pieces = [silence()]
    for event in events:
        level = 10 ** (rng.uniform(-18, -6) / 20)
        pieces.extend([level * _render_event(event, rng, noise), silence()])
    wav = np.concatenate(pieces)
    wav += 10 ** (rng.uniform(-55, -45) / 20) * noise.standard_normal(len(wav))
    return torch.from_numpy(wav.astype(np.float32))


def scene_description(events: Sequence[Event]) -> str:
    """The events as ``kind:detail`` words, for a manifest column.

    Example
    -------
    >>> scene_description([Event("noise"), Event("clicks", 3)])
    'noise clicks:3'
    """
    return " ".join(e.kind if e.detail is None else f"{e.kind}:{e.detail}" for e in events)


def all_captions() -> Dict[int, List[str]]:
    """Every template per number of events, filled with canonical phrases, for tokenizers.

    Example
    -------
    >>> all_captions()[2][0]
    'a high tone followed by a low tone'
    """
    canonical = [phrases[0] for phrases in EVENT_PHRASES.values()]
    return {
        n: [template.format(*canonical[:n]) for template in templates]
        for n, templates in CONNECTORS.items()
    }
