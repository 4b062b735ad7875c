"""Tasks: everything the package knows about one task, registered once.

A :class:`Task` holds

- the instructions that ask for it: several paraphrases for training, picked
  per example with a seeded generator so the model does not learn one fixed
  wording, and one fixed instruction for evaluation so scores are comparable
  (templates may name fields, ``{target_language}``, that preparation fills);
- how it is scored: the scorer, its fixed options, the manifest columns whose
  values are options too (each value is scored apart, e.g. one BLEU per target
  language), whether an example has several references, and the metrics a
  comparison reports;
- how inference answers it: how the answers to the pieces of a long file are
  joined, and the name of the inference shortcut (``transcribe_file``).

The built-in ``asr``, ``ast``, ``er`` and ``aac`` are registered here. A recipe
adds its own task with one :func:`register_task` call (registering the same
task again is harmless) and its scorer needs no change to this package::

    register_task(Task(
        "speaker_sex",
        ("Is the speaker a man or a woman?", "Who is talking, a man or a woman?"),
        scorer=LabelScorer,
        scorer_options={"labels": ["man", "woman"]},
        join=None,                       # a long file: the label of most seconds
        shortcut="classify_speaker_sex_file",
        metrics=(Metric("WA", higher_is_better=True, label="accuracy %"),),
    ))

Scorers are named as ``"module:attribute"`` (or given as callables) and only
imported when something is scored, so loading a model for inference never
imports the metrics' dependencies.

Example
-------
>>> import random
>>> TASKS["ast"].instruction(source_language="en", target_language="ja")
'Translate the English speech into Japanese.'
>>> TASKS["asr"].instruction(random.Random(0)) in TASKS["asr"].instructions
True
>>> TASKS["aac"].join, TASKS["er"].join, TASKS["asr"].shortcut
('; ', None, 'transcribe_file')
"""

import dataclasses
import functools
import importlib
import inspect
import logging
import random
import string
from collections import defaultdict
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from speechbrain_mowe.registry import load_entry_points

logger = logging.getLogger(__name__)

#: Names of the languages of CoVoST 2 (Common Voice codes).
LANGUAGE_NAMES = {
    "ar": "Arabic",
    "ca": "Catalan",
    "cy": "Welsh",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fa": "Persian",
    "fr": "French",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "lv": "Latvian",
    "mn": "Mongolian",
    "nl": "Dutch",
    "pt": "Portuguese",
    "ru": "Russian",
    "sl": "Slovenian",
    "sv-SE": "Swedish",
    "ta": "Tamil",
    "tr": "Turkish",
    "zh-CN": "Chinese",
}

#: Entry-point group through which other packages add tasks (each entry a :class:`Task`).
ENTRY_POINT_GROUP = "speechbrain_mowe.tasks"


@dataclass(frozen=True)
class Metric:
    """A metric a comparison reports for a task.

    Arguments
    ---------
    name : str
        Its key in the scorer's summary (``WER``, ``BLEU``, ``CIDEr_D``).
    higher_is_better : bool
        Which way is better.
    label : str, optional
        How tables name it (default: ``name``).
    """

    name: str
    higher_is_better: bool
    label: Optional[str] = None

    @property
    def reading(self) -> str:
        """The label with the direction that is better.

        Example
        -------
        >>> Metric("WER", higher_is_better=False, label="WER %").reading
        'WER % (lower is better)'
        """
        better = "higher" if self.higher_is_better else "lower"
        return f"{self.label or self.name} ({better} is better)"


@dataclass(frozen=True)
class Task:
    """A task: its instructions, how it is scored and how inference answers it.

    Arguments
    ---------
    name : str
        Written in the ``task`` column of manifests.
    instructions : tuple of str
        Paraphrases drawn at random for training. Fields in braces are filled
        from the keyword arguments of :meth:`instruction`.
    scorer : str or callable
        Makes the task's :class:`~speechbrain_mowe.metrics.Scorer`: a
        ``"module:attribute"`` reference (imported when first scoring) or the
        class or factory itself.
    eval_instruction : str, optional
        The fixed instruction of evaluation (default: the first paraphrase).
    scorer_options : mapping
        Keyword arguments of the scorer; a recipe's ``scorer_options`` add to
        them or override them.
    option_columns : tuple of str
        Manifest columns that are scorer options too (``target_language``):
        examples are scored per value, each group with its own scorer.
    multiple_references : bool
        Examples have several references (the ``references`` column), given
        to the scorer as a list; otherwise the answer is the reference.
    join : str or None
        How the answers to the pieces of a long file are joined: with this
        separator, or (None) by keeping the answer given for the most seconds,
        as for labels.
    shortcut : str, optional
        The name of the inference method answering a file with the
        evaluation instruction (``transcribe_file``).
    metrics : tuple of Metric
        What comparisons report, headline first.
    """

    name: str
    instructions: Tuple[str, ...]
    _: KW_ONLY
    scorer: Union[str, Callable[..., Any]]
    eval_instruction: Optional[str] = None
    scorer_options: Mapping[str, Any] = field(default_factory=dict)
    option_columns: Tuple[str, ...] = ()
    multiple_references: bool = False
    join: Optional[str] = " "
    shortcut: Optional[str] = None
    metrics: Tuple[Metric, ...] = ()
    fields: Tuple[str, ...] = field(init=False)

    def __post_init__(self):
        if not self.instructions:
            raise ValueError(f"Task '{self.name}' needs at least one instruction")
        object.__setattr__(self, "instructions", tuple(self.instructions))
        object.__setattr__(self, "option_columns", tuple(self.option_columns))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "scorer_options", dict(self.scorer_options))
        if self.eval_instruction is None:
            object.__setattr__(self, "eval_instruction", self.instructions[0])
        names = {
            name
            for template in (*self.instructions, self.eval_instruction)
            for _, name, _, _ in string.Formatter().parse(template)
            if name
        }
        object.__setattr__(self, "fields", tuple(sorted(names)))

    def instruction(self, rng: Optional[random.Random] = None, **values) -> str:
        """An instruction: a random paraphrase drawn from ``rng``, or the
        evaluation one when ``rng`` is None, with its fields filled.

        Language codes given as ``source_language`` / ``target_language`` are
        written as language names.
        """
        template = self.eval_instruction if rng is None else rng.choice(self.instructions)
        return self._fill(template, values)

    def all_instructions(self, **values) -> Tuple[str, ...]:
        """Every training paraphrase, then the evaluation instruction, filled
        as :meth:`instruction` fills them (e.g. to train a tokenizer on them)."""
        return tuple(self._fill(t, values) for t in (*self.instructions, self.eval_instruction))

    def _fill(self, template: str, values: Dict[str, str]) -> str:
        missing = [name for name in self.fields if name not in values]
        if missing:
            raise KeyError(f"Task '{self.name}' needs values for {missing}")
        values = {
            key: LANGUAGE_NAMES.get(value, value) if key.endswith("_language") else value
            for key, value in values.items()
        }
        return template.format(**values)

    def _scorer_factory(self) -> Callable[..., Any]:
        return resolve(self.scorer) if isinstance(self.scorer, str) else self.scorer

    def check_scorer_options(self, options: Mapping[str, Any]) -> None:
        """Refuses options the task's scorer does not take, before anything is scored.

        Example
        -------
        >>> TASKS["er"].check_scorer_options({"lables": ["happy"]})
        Traceback (most recent call last):
         ...
        ValueError: Task 'er': its scorer LabelScorer takes no option 'lables' (its options: labels)
        """
        factory = self._scorer_factory()
        parameters = inspect.signature(factory).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return
        for key in options:
            if key not in parameters:
                name = getattr(factory, "__name__", repr(factory))
                raise ValueError(
                    f"Task '{self.name}': its scorer {name} takes no option '{key}' "
                    f"(its options: {', '.join(parameters) or 'none'})"
                )

    def make_scorer(self, **options):
        """The task's scorer with its options, ``options`` taking precedence.

        Example
        -------
        >>> scorer = TASKS["er"].make_scorer(labels=["happy", "sad"])
        >>> scorer.append(["a", "b"], ["happy", "I am sad"], ["happy", "happy"])
        >>> scorer.summarize()["WA"]
        50.0
        """
        from speechbrain_mowe.metrics.scorers import Scorer  # the metrics load when scoring

        scorer = self._scorer_factory()(**{**self.scorer_options, **options})
        if not isinstance(scorer, Scorer):
            raise TypeError(
                f"Task '{self.name}': its scorer {self.scorer!r} made a "
                f"{type(scorer).__name__}, not a speechbrain_mowe.metrics.Scorer"
            )
        return scorer

    def reference(self, answer: str, references: Sequence[str]):
        """What the scorer is given as an example's reference: every reference
        (the answer when there are none) or the answer."""
        if self.multiple_references:
            return list(references) or [answer]
        return answer

    def describe(self) -> Tuple:
        """The task's settings, with callables by their qualified names (not by
        module: a script imported and then run as ``__main__`` defines its
        scorer twice, in two modules), so two registrations of the same task
        describe the same."""
        return tuple(_by_name(value) for value in dataclasses.astuple(self, tuple_factory=tuple))


def _by_name(value):
    """A callable as its qualified name (a partial with its arguments)."""
    if isinstance(value, functools.partial):
        return (_by_name(value.func), value.args, tuple(sorted(value.keywords.items())))
    return getattr(value, "__qualname__", value)


def resolve(reference: str) -> Any:
    """The object a ``"module:attribute"`` reference names.

    Example
    -------
    >>> resolve("speechbrain_mowe.tasks:Task") is Task
    True
    """
    module, _, attribute = reference.partition(":")
    if not attribute:
        raise ValueError(f"'{reference}' is not a 'module:attribute' reference")
    target = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


TASKS: Dict[str, Task] = {}
_discovered = []


def register_task(task: Task, replace: bool = False) -> Task:
    """Makes ``task`` findable as ``TASKS[task.name]`` and returns the registered task.

    Registering a task that describes the same as the registered one returns
    the registered one; a different task of the same name is refused unless
    ``replace``.
    """
    known = TASKS.get(task.name)
    if known is not None and not replace:
        if known.describe() == task.describe():
            return known
        raise ValueError(
            f"A different task named '{task.name}' is already registered; pass replace=True "
            "to replace it"
        )
    TASKS[task.name] = task
    return task


def registered_tasks() -> Dict[str, Task]:
    """Every task: the package's, the recipes' and (found once, through the
    ``speechbrain_mowe.tasks`` entry-point group) other packages'. An entry
    point that is not a :class:`Task`, or clashes with a registered task, is
    skipped with a warning."""
    if not _discovered:
        _discovered.append(True)
        for name, task in load_entry_points(ENTRY_POINT_GROUP, "task"):
            try:
                if not isinstance(task, Task):
                    raise TypeError(f"it is a {type(task).__name__}, not a Task")
                register_task(task)
            except (TypeError, ValueError) as error:
                logger.warning("Skipping task extension '%s': %s", name, error)
    return TASKS


def get_task(name: str) -> Task:
    """The registered task called ``name``; the error lists the known ones.

    Example
    -------
    >>> get_task("kws")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    KeyError: "Unknown task 'kws'. Known tasks: aac, asr, ast, er..."
    """
    try:
        return registered_tasks()[name]
    except KeyError:
        raise KeyError(f"Unknown task '{name}'. Known tasks: {', '.join(sorted(TASKS))}") from None


def example_rng(seed: int, utt_id: str) -> random.Random:
    """A generator that depends only on ``seed`` and the example id.

    Instructions drawn from it are the same whatever order, subset or number
    of processes a preparation runs with.
    """
    return random.Random(f"{seed}/{utt_id}")


def join_answers(answers: Sequence[str], seconds: Sequence[float], join: Optional[str]) -> str:
    """Joins the answers to the pieces of a long file, as :attr:`Task.join` says.

    Empty answers are left out. With a separator the answers are joined in
    order; with None the answer given for the most seconds in total is kept
    (the first on ties).

    Example
    -------
    >>> join_answers(["hello there", "", "how are you"], [30.0, 30.0, 10.0], " ")
    'hello there how are you'
    >>> join_answers(["happy", "sad", "happy"], [10.0, 20.0, 15.0], None)
    'happy'
    """
    if join is not None:
        return join.join(answer for answer in answers if answer)
    totals = defaultdict(float)
    for answer, duration in zip(answers, seconds):
        if answer:
            totals[answer] += duration
    return max(totals, key=totals.get, default="")


ASR = register_task(
    Task(
        "asr",
        (
            "Transcribe the speech.",
            "Write down what is said in the audio.",
            "What does the speaker say? Give the exact words.",
            "Convert the spoken words into text.",
            "Provide a verbatim transcript of the recording.",
        ),
        scorer="speechbrain_mowe.metrics.asr:ASRScorer",
        shortcut="transcribe_file",
        metrics=(
            Metric("WER", higher_is_better=False, label="WER %"),
            Metric("CER", higher_is_better=False, label="CER %"),
        ),
    )
)

AST = register_task(
    Task(
        "ast",
        (
            "Translate the {source_language} speech into {target_language}.",
            "Listen to the {source_language} audio and write its translation in {target_language}.",
            "What is said in the recording? Answer in {target_language}.",
            "Give the {target_language} translation of what the speaker says.",
            "Render the spoken {source_language} as {target_language} text.",
        ),
        scorer="speechbrain_mowe.metrics.translation:TranslationScorer",
        option_columns=("target_language",),
        shortcut="translate_file",
        metrics=(Metric("BLEU", higher_is_better=True),),
    )
)

ER = register_task(
    Task(
        "er",
        (
            "Which emotion does the speaker express? Answer with one of: {labels}.",
            "Classify the emotion in the voice as one of: {labels}.",
            "How does the speaker feel? Choose from: {labels}.",
            "Listen to the tone of voice and name the emotion ({labels}).",
        ),
        scorer="speechbrain_mowe.metrics.classification:LabelScorer",
        join=None,
        shortcut="classify_emotion_file",
        metrics=(
            Metric("WA", higher_is_better=True, label="accuracy %"),
            Metric("UA", higher_is_better=True, label="unweighted accuracy %"),
        ),
    )
)

AAC = register_task(
    Task(
        "aac",
        (
            "Describe the audio in one sentence.",
            "Write a caption for the sounds in this recording.",
            "What can be heard in this audio? Answer in one sentence.",
            "Summarise the sound scene in a short sentence.",
        ),
        scorer="speechbrain_mowe.metrics.captioning:CaptionScorer",
        multiple_references=True,
        join="; ",
        shortcut="caption_file",
        metrics=(
            Metric("CIDEr_D", higher_is_better=True, label="CIDEr-D"),
            Metric("BLEU_4", higher_is_better=True, label="BLEU-4"),
        ),
    )
)
