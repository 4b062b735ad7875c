"""Audio reading in ``DynamicItemDataset`` pipelines, skipping unusable clips.

A clip that cannot be used (missing, undecodable, empty, too short, NaN) must
not kill a long run, and must not vanish silently either. The audio pipeline
returns an :class:`UnreadableAudio` record in its place and logs a warning
naming the id, the file and the reason; :func:`collate_audio` leaves such
examples out of the batch and lists them in ``batch.skipped`` so the training
loop can count them (:class:`SkippedClips`) in its epoch log. A batch whose
clips are all unusable comes out as an :class:`EmptyBatch` (``batchsize`` 0).
"""

import logging
from collections import Counter
from typing import Callable, Dict, List, NamedTuple, Sequence, Union

import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.data_pipeline import provides, takes

from speechbrain_mowe.dataio.audio import SAMPLE_RATE, AudioError, load_audio
from speechbrain_mowe.dataio.preparation import summarize_reasons

logger = logging.getLogger(__name__)


class UnreadableAudio(NamedTuple):
    """Stands in for the samples of a clip that could not be used."""

    id: str
    path: str
    reason: str


def audio_pipeline(
    sample_rate: int = SAMPLE_RATE,
    min_duration: float = 0.0,
    wav_key: str = "wav",
    sig_key: str = "sig",
) -> Callable:
    """A dynamic item reading ``wav_key`` into ``sig_key`` (mono, ``sample_rate``).

    Example
    -------
    >>> import torch
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> from speechbrain_mowe.dataio.audio import save_audio
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> save_audio(path, torch.zeros(8000), 8000)
    >>> data = DynamicItemDataset({"a": {"wav": str(path)}, "b": {"wav": "missing.wav"}})
    >>> data.add_dynamic_item(audio_pipeline())
    >>> data.set_output_keys(["id", "sig"])
    >>> data[0]["sig"].shape
    torch.Size([16000])
    >>> data[1]["sig"]
    UnreadableAudio(id='b', path='missing.wav', reason='file not found')
    """

    @takes("id", wav_key)
    @provides(sig_key)
    def read(utt_id, path):
        try:
            return load_audio(
                path, utt_id=utt_id, sample_rate=sample_rate, min_duration=min_duration
            )
        except AudioError as err:
            logger.warning("Skipping an example: %s", err)
            return UnreadableAudio(utt_id, err.path, err.reason)

    return read


class EmptyBatch:
    """A batch none of whose clips could be used; ``skipped`` says why."""

    batchsize = 0

    def __init__(self, skipped: List[UnreadableAudio]):
        self.skipped = skipped

    def __len__(self) -> int:
        return 0

    def to(self, *args, **kwargs) -> "EmptyBatch":
        """Nothing to move."""
        return self

    def pin_memory(self) -> "EmptyBatch":
        """Nothing to pin."""
        return self


def collate_audio(examples, sig_key: str = "sig", **kwargs) -> Union[PaddedBatch, EmptyBatch]:
    """``PaddedBatch`` of the examples whose audio was read, with ``skipped``
    listing the :class:`UnreadableAudio` of the others.

    Keyword arguments go to ``PaddedBatch``.

    Example
    -------
    >>> import torch
    >>> ok = {"id": "a", "sig": torch.ones(3)}
    >>> bad = {"id": "b", "sig": UnreadableAudio("b", "b.wav", "file not found")}
    >>> batch = collate_audio([ok, bad])
    >>> batch.id, batch.sig.data.shape, [s.id for s in batch.skipped]
    (['a'], torch.Size([1, 3]), ['b'])
    >>> collate_audio([bad]).batchsize
    0
    """
    skipped = [ex[sig_key] for ex in examples if isinstance(ex[sig_key], UnreadableAudio)]
    kept = [ex for ex in examples if not isinstance(ex[sig_key], UnreadableAudio)]
    if not kept:
        return EmptyBatch(skipped)
    batch = PaddedBatch(kept, **kwargs)
    batch.skipped = skipped
    return batch


class SkippedClips:
    """Tally of the clips used and left out of batches, for the epoch log and
    for refusing an epoch that read (almost) nothing.

    Example
    -------
    >>> tally = SkippedClips()
    >>> tally.add(EmptyBatch([UnreadableAudio("a", "a.wav", "file not found"),
    ...                       UnreadableAudio("b", "b.wav", "unreadable audio (Error)")]))
    >>> tally.count, tally.share
    (2, 1.0)
    >>> tally.summary()
    '2 clips skipped (1 x file not found, 1 x unreadable audio)'
    >>> tally.examples
    ['a.wav (file not found)', 'b.wav (unreadable audio (Error))']
    >>> tally.reset()
    >>> tally.summary()
    'no clip skipped'
    """

    #: How many skipped paths are kept to name in an error.
    EXAMPLES = 3

    def __init__(self):
        self.reasons: Counter = Counter()
        self.used = 0
        self.examples: List[str] = []

    @property
    def count(self) -> int:
        """Clips skipped since the last :meth:`reset`."""
        return sum(self.reasons.values())

    @property
    def share(self) -> float:
        """The skipped share of the clips seen (0 before any)."""
        seen = self.count + self.used
        return self.count / seen if seen else 0.0

    def add(self, batch) -> None:
        """Counts the used and the ``skipped`` clips of a batch made by
        :func:`collate_audio`."""
        skipped = getattr(batch, "skipped", ())
        self.reasons.update(clip.reason for clip in skipped)
        self.used += batch.batchsize
        room = self.EXAMPLES - len(self.examples)
        self.examples += [f"{clip.path} ({clip.reason})" for clip in skipped[:room]]

    def merge(self, state: Dict) -> None:
        """Adds a :meth:`state_dict` (another rank's, or a checkpoint's)."""
        self.reasons.update(state["reasons"])
        self.used += state["used"]
        self.examples += state["examples"][: self.EXAMPLES - len(self.examples)]

    def state_dict(self) -> Dict:
        """The tally, as plain values."""
        return {"reasons": dict(self.reasons), "used": self.used, "examples": list(self.examples)}

    def reset(self) -> None:
        """Starts a new tally (at each epoch)."""
        self.reasons.clear()
        self.used = 0
        self.examples = []

    def summary(self) -> str:
        """One line for the log."""
        if not self.reasons:
            return "no clip skipped"
        return f"{self.count} clips skipped ({summarize_reasons(self.reasons.elements())})"


def prompt_pipeline(llm, tasks: Sequence[str]) -> Callable:
    """A dynamic item tokenizing each example's prompt and answer for ``llm``.

    Provides ``prefix`` and ``suffix`` (the prompt around the audio),
    ``answer_tokens`` (the answer and the end token) and ``task_id`` (the
    task's position in ``tasks``, for task-conditioned routers). Prompts are
    tokenized once per distinct instruction.

    Arguments
    ---------
    llm : speechbrain_mowe.lobes.LanguageModel
        Provides ``tokenize_prompt`` and ``tokenize_answer``.
    tasks : sequence of str
        Every task the model knows, in router order.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> from speechbrain_mowe.lobes import LanguageModel
    >>> from speechbrain_mowe.tiny import make_tiny_llm
    >>> llm = LanguageModel(make_tiny_llm(tempfile.mkdtemp()), lora_rank=0)
    >>> data = DynamicItemDataset({"a": {"task": "aac", "instruction": "Describe.",
    ...                                  "answer": "rain"}})
    >>> data.add_dynamic_item(prompt_pipeline(llm, ["asr", "aac"]))
    >>> data.set_output_keys(["task_id", "answer_tokens"])
    >>> example = data[0]
    >>> example["task_id"], llm.decode([example["answer_tokens"].tolist()])
    (1, ['rain'])
    """
    task_ids = {name: index for index, name in enumerate(tasks)}
    prompts = {}

    @takes("id", "task", "instruction", "answer")
    @provides("task_id", "prefix", "suffix", "answer_tokens")
    def tokenize(utt_id, task, instruction, answer):
        if task not in task_ids:
            raise KeyError(
                f"Example '{utt_id}' has task '{task}', which is not among the model's "
                f"tasks {list(tasks)}; add it to the `tasks` hyperparameter"
            )
        if instruction not in prompts:
            prompts[instruction] = [
                torch.tensor(ids, dtype=torch.long) for ids in llm.tokenize_prompt(instruction)
            ]
        yield task_ids[task]
        yield prompts[instruction][0]
        yield prompts[instruction][1]
        yield torch.tensor(llm.tokenize_answer(answer), dtype=torch.long)

    return tokenize
