"""Sound scenes for the synthetic corpus, and their captions.

One to three sound events in a row (a high or low steady tone, a rising or
falling chirp, a noise burst, one to three clicks) over faint background
noise, and paraphrased captions naming the events in order and the number
of clicks.
"""

import itertools
import math
import random
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

from speechbrain_mowe.dataio import SAMPLE_RATE

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
