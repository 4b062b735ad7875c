"""The synthetic corpus's sentences: a small English grammar and its exact German translation.

``determiner [adjective] noun verb determiner [adjective] noun [place] [time]``
over a few dozen words, with gender and case agreement of determiners and
adjective endings, nouns capitalised and the time adverb moved after the
verb: ``the small dog sees a red ball today`` is ``der kleine Hund sieht
heute einen roten Ball``. Both sides are lowercase apart from German nouns
and carry no punctuation.
"""

import random
from dataclasses import dataclass
from typing import List, Optional, Sequence

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
