"""Tasks and their instruction templates.

A :class:`Task` holds the instructions a model is given for one task: several
paraphrases for training, picked per example with a seeded random generator so
the model does not learn one fixed wording, and one fixed instruction for
evaluation so scores are comparable. Templates may name fields
(``{target_language}``) that preparation scripts fill per example.

Manifests store the instruction text itself, so training reads no templates.
A new task therefore needs no change to this package: build a :class:`Task` in
your own preparation script (and :func:`register_task` it if other code should
find it by name), then write rows with :func:`speechbrain_mowe.dataio.manifest.manifest_row`.

Example
-------
>>> import random
>>> speaker_sex = Task(
...     "speaker_sex",
...     instructions=("Is the speaker male or female?", "Say whether a man or a woman speaks."),
... )
>>> speaker_sex.instruction()
'Is the speaker male or female?'
>>> speaker_sex.instruction(random.Random(0)) in speaker_sex.instructions
True
>>> TASKS["ast"].instruction(source_language="en", target_language="ja")
'Translate the English speech into Japanese.'
"""

import random
import string
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

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


@dataclass(frozen=True)
class Task:
    """A task's name and the instructions that ask for it.

    Arguments
    ---------
    name : str
        Written in the ``task`` column of manifests.
    instructions : tuple of str
        Paraphrases drawn at random for training. Fields in braces are filled
        from the keyword arguments of :meth:`instruction`.
    eval_instruction : str, optional
        The fixed instruction for evaluation (default: the first paraphrase).
    """

    name: str
    instructions: Tuple[str, ...]
    eval_instruction: Optional[str] = None
    fields: Tuple[str, ...] = field(init=False)

    def __post_init__(self):
        if not self.instructions:
            raise ValueError(f"Task '{self.name}' needs at least one instruction")
        object.__setattr__(self, "instructions", tuple(self.instructions))
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


TASKS: Dict[str, Task] = {}


def register_task(task: Task, replace: bool = False) -> Task:
    """Makes ``task`` findable as ``TASKS[task.name]`` and returns it."""
    if task.name in TASKS and not replace and TASKS[task.name] != task:
        raise ValueError(f"A different task named '{task.name}' is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called ``name``; the error lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"Unknown task '{name}'. Known tasks: {', '.join(sorted(TASKS))}") from None


def example_rng(seed: int, utt_id: str) -> random.Random:
    """A generator that depends only on ``seed`` and the example id.

    Instructions drawn from it are the same whatever order, subset or number
    of processes a preparation runs with.
    """
    return random.Random(f"{seed}/{utt_id}")


ASR = register_task(
    Task(
        "asr",
        instructions=(
            "Transcribe the speech.",
            "Write down what is said in the audio.",
            "What does the speaker say? Give the exact words.",
            "Convert the spoken words into text.",
            "Provide a verbatim transcript of the recording.",
        ),
    )
)

AST = register_task(
    Task(
        "ast",
        instructions=(
            "Translate the {source_language} speech into {target_language}.",
            "Listen to the {source_language} audio and write its translation in {target_language}.",
            "What is said in the recording? Answer in {target_language}.",
            "Give the {target_language} translation of what the speaker says.",
            "Render the spoken {source_language} as {target_language} text.",
        ),
    )
)

ER = register_task(
    Task(
        "er",
        instructions=(
            "Which emotion does the speaker express? Answer with one of: {labels}.",
            "Classify the emotion in the voice as one of: {labels}.",
            "How does the speaker feel? Choose from: {labels}.",
            "Listen to the tone of voice and name the emotion ({labels}).",
        ),
    )
)

AAC = register_task(
    Task(
        "aac",
        instructions=(
            "Describe the audio in one sentence.",
            "Write a caption for the sounds in this recording.",
            "What can be heard in this audio? Answer in one sentence.",
            "Summarise the sound scene in a short sentence.",
        ),
    )
)
