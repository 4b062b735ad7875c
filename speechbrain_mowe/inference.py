"""Answering questions about audio with a trained MoWE audio LLM.

:class:`MoWEAudioLLM` loads the folder that training leaves in its
``output_folder`` (``inference.yaml`` and three ``.ckpt`` files, see
:mod:`speechbrain_mowe.export`) and runs the lobe chain of
:class:`~speechbrain_mowe.brain.MoWEBrain`: MoWE encoder, projector, then
batched generation. An example's answer does not depend on the rest of its
batch, so batched and one-at-a-time answers are the same, and the answers to
the test sets are those the trainer wrote.

Long audio
----------
A model reads at most ``max_audio_seconds`` at once: its encoders' window
(30 s for Whisper), or the longest training clip when no encoder has one.
Longer audio is refused (``long_audio="refuse"``, the default) or answered
in pieces (``long_audio="chunk"``): the audio is cut into consecutive pieces
no longer than the window, each cut at the quietest 20 ms frame of the last
fifth of its window so that words are not cut in two
(:func:`chunk_boundaries`); all pieces are answered in one batch and their
answers joined per task (:data:`CHUNK_JOINS`): transcripts and translations
with a space, captions with ``"; "``, and for emotions the answer that covers
the most seconds. Nothing is ever truncated silently.
"""

import functools
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from ruamel.yaml import YAML
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.data_utils import batch_pad_right

from speechbrain_mowe.brain import encode_audio, generate_answers
from speechbrain_mowe.dataio import SAMPLE_RATE, load_audio
from speechbrain_mowe.experiment import MODEL_PARTS
from speechbrain_mowe.export import INFERENCE_YAML
from speechbrain_mowe.lobes.routers import DataIndependentRouter

LONG_AUDIO_MODES = ("refuse", "chunk")
#: Samples of the frames whose energy places a cut (20 ms).
CUT_FRAME = 320
#: Share of the window, at its end, in which a cut is placed.
CUT_SEARCH = 0.2

#: Joins the answers of a long file's pieces, given each piece's seconds.
Join = Callable[[Sequence[str], Sequence[float]], str]


class LongAudioError(ValueError):
    """Audio longer than the model reads at once, under ``long_audio="refuse"``.

    Example
    -------
    >>> str(LongAudioError("talk.wav", 70.0, 30.0))  # doctest: +ELLIPSIS
    "'talk.wav' is 70.0 s long, longer than the 30 s this model reads at once; ..."
    """

    def __init__(self, path, seconds: float, max_seconds: float):
        self.path = str(path)
        self.seconds = seconds
        self.max_seconds = max_seconds
        super().__init__(
            f"'{path}' is {seconds:.1f} s long, longer than the {max_seconds:g} s this model "
            "reads at once; pass long_audio='chunk' to answer it in pieces cut at pauses"
        )


def chunk_boundaries(
    wav: torch.Tensor, window: int, frame: int = CUT_FRAME, search: float = CUT_SEARCH
) -> List[Tuple[int, int]]:
    """Where to cut audio into consecutive pieces of at most ``window`` samples.

    Each cut is placed in the middle of the quietest ``frame`` (lowest
    energy; the first one on ties) within the last ``search`` share of the
    window that starts at the previous cut.

    Arguments
    ---------
    wav : torch.Tensor
        ``[s]`` samples.
    window : int
        Longest piece, in samples.
    frame : int
        Samples per frame whose energy is compared.
    search : float
        Share of the window, at its end, where cuts may fall.

    Returns
    -------
    list of (int, int)
        ``(start, end)`` of each piece; they follow each other and cover ``wav``.

    Example
    -------
    >>> wav = torch.ones(10_000)
    >>> wav[3_400:3_600] = 0.0  # a pause
    >>> chunk_boundaries(wav, window=4_000, frame=100)
    [(0, 3450), (3450, 6700), (6700, 10000)]
    """
    total = wav.shape[-1]
    bounds = []
    start = 0
    while total - start > window:
        end = start + window
        low = start + int(window * (1 - search))
        frames = (end - low) // frame
        cut = end
        if frames > 0:
            energy = wav[low : low + frames * frame].double().reshape(frames, frame).pow(2).sum(1)
            cut = low + int(energy.argmin()) * frame + frame // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, total))
    return bounds


def join_texts(answers: Sequence[str], seconds: Sequence[float], separator: str = " ") -> str:
    """The non-empty answers in order, with ``separator`` between them.

    Example
    -------
    >>> join_texts(["hello there", "", "how are you"], [30.0, 30.0, 10.0])
    'hello there how are you'
    """
    del seconds
    return separator.join(answer for answer in answers if answer)


def longest_label(answers: Sequence[str], seconds: Sequence[float]) -> str:
    """The non-empty answer given for the most seconds in total (the first on ties).

    Example
    -------
    >>> longest_label(["happy", "sad", "happy"], [10.0, 20.0, 15.0])
    'happy'
    """
    totals = defaultdict(float)
    for answer, duration in zip(answers, seconds):
        if answer:
            totals[answer] += duration
    return max(totals, key=totals.get, default="")


#: How each task joins the answers of a long file's pieces; other tasks and
#: free-form instructions use :func:`join_texts`.
CHUNK_JOINS: Dict[str, Join] = {
    "asr": join_texts,
    "ast": join_texts,
    "aac": functools.partial(join_texts, separator="; "),
    "er": longest_label,
}


def chunk_join(task: Optional[str]) -> Join:
    """How the pieces' answers of a long file are joined for ``task`` (None:
    a free-form instruction).

    Example
    -------
    >>> chunk_join("aac")(["a dog barks", "rain"], [30.0, 10.0])
    'a dog barks; rain'
    """
    return CHUNK_JOINS.get(task, join_texts)


def _per_example(values, count: int, name: str) -> List:
    """``values`` as a list of ``count`` (a single string is repeated)."""
    if isinstance(values, str):
        return [values] * count
    values = list(values)
    if len(values) != count:
        raise ValueError(f"got {len(values)} {name} for {count} examples")
    return values


def _local_folder(source) -> Optional[Path]:
    """``source`` as a local folder, or None when it names a hub repository.

    A path that cannot be a hub id (absolute, relative with ``.`` or ``~``,
    several levels deep) and is no folder raises ``FileNotFoundError``.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    text = os.fspath(source)
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or path.exists():
        raise FileNotFoundError(
            f"Model folder '{source}' does not exist or is not a folder (was it moved?); "
            f"give the output_folder of a training run, which holds {INFERENCE_YAML}"
        )
    return None


def _check_folder(folder: Path, hparams_file: str, overrides) -> None:
    """Clear errors for a folder that lacks files or names missing sources."""
    yaml_path = folder / hparams_file
    if not yaml_path.is_file():
        raise FileNotFoundError(
            f"'{folder}' has no {hparams_file}. Training writes it, with the model's .ckpt "
            "files, into its output_folder once the test sets are scored "
            "(speechbrain_mowe.experiment.train_and_evaluate); is this the folder of a "
            "finished run?"
        )
    missing = [f"{name}.ckpt" for name in MODEL_PARTS if not (folder / f"{name}.ckpt").is_file()]
    if missing:
        raise FileNotFoundError(f"'{folder}' lacks {', '.join(missing)} next to {hparams_file}")
    with open(yaml_path, encoding="utf-8") as f:
        sources = dict(YAML().load(f).get("model_sources") or {})
    if isinstance(overrides, dict):
        sources.update(overrides.get("model_sources") or {})
    for key, value in sources.items():
        if isinstance(value, str) and Path(value).is_absolute() and not Path(value).exists():
            raise FileNotFoundError(
                f"{yaml_path} reads {key} from '{value}', which does not exist (moved?); "
                f"give its new place with overrides={{'model_sources': {{'{key}': ...}}}}"
            )


class MoWEAudioLLM(Pretrained):
    """A trained MoWE audio LLM that answers instructions about audio.

    Load the folder a training run wrote with :meth:`from_hparams`. The
    hyperparameters it reads (see :mod:`speechbrain_mowe.export`): ``tasks``
    (the router's task ids), ``instructions`` (the evaluation instruction of
    each task it was tested on), ``max_new_tokens``, ``num_beams``,
    ``max_audio_seconds`` and ``long_audio``; ``precision`` sets the
    autocast of inference (``run_opts={"precision": ...}`` overrides it, as
    ``run_opts={"device": "cuda"}`` picks the device).

    Arguments
    ---------
    *args, **kwargs
        Forwarded to SpeechBrain's ``Pretrained``.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.dataio import save_audio
    >>> from speechbrain_mowe.experiment import load_family
    >>> from speechbrain_mowe.export import write_inference_folder
    >>> from speechbrain_mowe.tiny import make_tiny_llm, make_tiny_whisper
    >>> tmp = Path(tempfile.mkdtemp())
    >>> sources = {"whisper_source": make_tiny_whisper(tmp / "whisper"),
    ...            "llm_source": make_tiny_llm(tmp / "llm")}
    >>> model = load_family("tiny_mowe", sources, num_tasks=2)
    >>> _ = write_inference_folder(  # what training does at its end
    ...     tmp / "run", {name: model[name] for name in MODEL_PARTS},
    ...     model_family="tiny_mowe", model_sources=sources, tasks=["asr", "aac"],
    ...     instructions={"asr": "Transcribe the speech.", "aac": "Describe the audio."},
    ...     max_new_tokens=5)
    >>> llm = MoWEAudioLLM.from_hparams(source=tmp / "run")
    >>> save_audio(tmp / "a.wav", 0.1 * torch.randn(24000), 16000)
    >>> isinstance(llm.transcribe_file(tmp / "a.wav"), str)
    True
    >>> llm.classify_emotion_file(tmp / "a.wav")
    Traceback (most recent call last):
     ...
    ValueError: This model was not trained on task 'er'; its tasks are: asr, aac. ...
    """

    HPARAMS_NEEDED = [
        "tasks",
        "instructions",
        "max_new_tokens",
        "num_beams",
        "max_audio_seconds",
        "long_audio",
    ]
    MODULES_NEEDED = list(MODEL_PARTS)

    @classmethod
    def from_hparams(
        cls, source, hparams_file: str = INFERENCE_YAML, savedir=None, **kwargs
    ) -> "MoWEAudioLLM":
        """Loads a trained model from its folder (or a hub repository).

        A local folder is read in place: nothing is copied, linked or written
        (it may be read-only), unless ``savedir`` asks for links to its files
        there. The model's frozen parts are read from the ``model_sources``
        of its ``inference.yaml``.

        Arguments
        ---------
        source : str or Path
            The ``output_folder`` of a training run, or a hub repository
            holding the same files.
        hparams_file : str
            The YAML file in ``source``.
        savedir : str or Path, optional
            Where SpeechBrain links (or, from a hub, downloads) the files;
            None reads them where they are (hub files from the hub's cache).
        **kwargs
            Passed to SpeechBrain's ``pretrained_from_hparams`` (e.g.
            ``run_opts={"device": "cuda:0"}``, ``overrides``).

        Returns
        -------
        MoWEAudioLLM
        """
        folder = _local_folder(source)
        if folder is not None:
            _check_folder(folder, hparams_file, kwargs.get("overrides"))
            source = str(folder)
        return super().from_hparams(source, hparams_file=hparams_file, savedir=savedir, **kwargs)

    @property
    def task_conditioned(self) -> bool:
        """Whether the router picks experts per task (then tasks must be given)."""
        router = self.mods.mowe_encoder.router
        return router is not None and any(
            isinstance(module, DataIndependentRouter) and module.num_tasks > 1
            for module in router.modules()
        )

    def instruction(self, task: str) -> str:
        """The evaluation instruction the model was tested with for ``task``."""
        instructions = self.hparams.instructions
        if task not in instructions:
            raise ValueError(
                f"This model was not trained on task '{task}'; its tasks are: "
                f"{', '.join(instructions) or 'none'}. Ask with generate_file(path, instruction, "
                "task=...) instead"
            )
        return instructions[task]

    def _task_ids(self, tasks, count: int) -> Optional[torch.Tensor]:
        if tasks is None:
            if self.task_conditioned:
                raise ValueError(
                    "This model's router chooses its experts per task: pass tasks, one of "
                    f"{', '.join(self.hparams.tasks)} per example"
                )
            return None
        names = _per_example(tasks, count, "tasks")
        unknown = sorted(set(names) - set(self.hparams.tasks))
        if unknown:
            raise ValueError(
                f"Unknown task(s) {', '.join(unknown)}: this model's tasks are "
                f"{', '.join(self.hparams.tasks)}"
            )
        return torch.tensor([self.hparams.tasks.index(name) for name in names], device=self.device)

    def generate_batch(
        self,
        wavs: torch.Tensor,
        wav_lens: Optional[torch.Tensor],
        instructions: Union[str, Sequence[str]],
        tasks: Union[None, str, Sequence[str]] = None,
    ) -> List[str]:
        """Answers a padded batch of 16 kHz audio.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[b, s]`` mono 16 kHz waveforms, right-padded.
        wav_lens : torch.Tensor, optional
            ``[b]`` relative lengths (SpeechBrain's convention); None: all full.
        instructions : str or sequence of str
            One instruction per example (a string is asked of every example).
        tasks : str or sequence of str, optional
            The task of each example, from ``hparams.tasks``, which the router
            reads; required when the router is task-conditioned.

        Returns
        -------
        list of str
            The answer to each example.
        """
        count = wavs.shape[0]
        instructions = _per_example(instructions, count, "instructions")
        task_ids = self._task_ids(tasks, count)
        if wav_lens is None:
            wav_lens = torch.ones(count)
        llm = self.mods.llm
        prefix, suffix = llm.tokenize_prompts(instructions)
        self.mods.eval()
        with torch.no_grad(), self.inference_ctx:
            _, audio, audio_lens = encode_audio(
                self.mods.mowe_encoder,
                self.mods.projector,
                wavs.to(self.device, torch.float32),
                wav_lens.to(self.device),
                task_ids,
            )
            return generate_answers(
                llm,
                audio,
                audio_lens,
                prefix,
                suffix,
                max_new_tokens=self.hparams.max_new_tokens,
                num_beams=self.hparams.num_beams,
            )

    def forward(self, wavs, wav_lens, instructions, tasks=None) -> List[str]:
        """See :meth:`generate_batch`."""
        return self.generate_batch(wavs, wav_lens, instructions, tasks)

    def load_pieces(self, path, long_audio: Optional[str] = None) -> List[torch.Tensor]:
        """Reads a file and cuts it into the pieces the model reads at once.

        Arguments
        ---------
        path : str or Path
            Any file :func:`~speechbrain_mowe.dataio.load_audio` reads.
        long_audio : str, optional
            ``"refuse"`` or ``"chunk"`` for audio longer than
            ``max_audio_seconds``; default: ``hparams.long_audio``.

        Returns
        -------
        list of torch.Tensor
            One piece unless the file is longer than the model's window.

        Raises
        ------
        AudioError
            The file cannot be read (the message names it).
        LongAudioError
            The file is too long and ``long_audio`` is ``"refuse"``.
        """
        mode = long_audio or self.hparams.long_audio
        if mode not in LONG_AUDIO_MODES:
            raise ValueError(f"long_audio must be one of {LONG_AUDIO_MODES}, got '{mode}'")
        wav = load_audio(path)
        window = int(round(self.hparams.max_audio_seconds * SAMPLE_RATE))
        if wav.shape[0] <= window:
            return [wav]
        if mode == "refuse":
            raise LongAudioError(path, wav.shape[0] / SAMPLE_RATE, self.hparams.max_audio_seconds)
        return [wav[start:end] for start, end in chunk_boundaries(wav, window)]

    def generate_clips(
        self,
        clips: Sequence[Sequence[torch.Tensor]],
        instructions: Union[str, Sequence[str]],
        tasks: Union[None, str, Sequence[str]] = None,
        joins: Optional[Sequence[Join]] = None,
    ) -> List[str]:
        """Answers several clips, each given as its pieces, in one batch.

        Arguments
        ---------
        clips : sequence of sequence of torch.Tensor
            The pieces of each clip (see :meth:`load_pieces`).
        instructions, tasks
            Per clip, as in :meth:`generate_batch`.
        joins : sequence of callables, optional
            How each clip's piece answers are joined (see
            :data:`CHUNK_JOINS`); default :func:`join_texts`.

        Returns
        -------
        list of str
            One answer per clip.
        """
        if not clips:
            return []
        counts = [len(pieces) for pieces in clips]

        def per_piece(values, name):
            values = _per_example(values, len(clips), name)
            return [value for value, n in zip(values, counts) for _ in range(n)]

        joins = _per_example(joins or [join_texts] * len(clips), len(clips), "joins")
        wavs, wav_lens = batch_pad_right([piece for pieces in clips for piece in pieces])
        answers = self.generate_batch(
            wavs,
            wav_lens,
            per_piece(instructions, "instructions"),
            None if tasks is None else per_piece(tasks, "tasks"),
        )
        joined = []
        for pieces, join in zip(clips, joins):
            own, answers = answers[: len(pieces)], answers[len(pieces) :]
            joined.append(join(own, [piece.shape[0] / SAMPLE_RATE for piece in pieces]))
        return joined

    def generate_file(
        self,
        path,
        instruction: str,
        task: Optional[str] = None,
        long_audio: Optional[str] = None,
    ) -> str:
        """Answers ``instruction`` about an audio file.

        Arguments
        ---------
        path : str or Path
            Any file :func:`~speechbrain_mowe.dataio.load_audio` reads (mono
            16 kHz after conversion).
        instruction : str
            What to do.
        task : str, optional
            The task the router is told (required by task-conditioned routers).
        long_audio : str, optional
            ``"refuse"`` or ``"chunk"`` (pieces' answers joined with a space).
        """
        pieces = self.load_pieces(path, long_audio)
        return self.generate_clips([pieces], [instruction], None if task is None else [task])[0]

    def task_file(self, path, task: str, long_audio: Optional[str] = None) -> str:
        """Answers the evaluation instruction of ``task`` about an audio file.

        The pieces of a long file are joined the task's way (:data:`CHUNK_JOINS`).
        """
        instruction = self.instruction(task)
        pieces = self.load_pieces(path, long_audio)
        return self.generate_clips([pieces], [instruction], [task], [chunk_join(task)])[0]

    def transcribe_file(self, path, long_audio: Optional[str] = None) -> str:
        """Transcribes speech (``asr``)."""
        return self.task_file(path, "asr", long_audio)

    def translate_file(self, path, long_audio: Optional[str] = None) -> str:
        """Translates speech (``ast``) into the language the model was tested on."""
        return self.task_file(path, "ast", long_audio)

    def caption_file(self, path, long_audio: Optional[str] = None) -> str:
        """Describes the sounds (``aac``)."""
        return self.task_file(path, "aac", long_audio)

    def classify_emotion_file(self, path, long_audio: Optional[str] = None) -> str:
        """Names the speaker's emotion (``er``)."""
        return self.task_file(path, "er", long_audio)
