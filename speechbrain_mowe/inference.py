"""Answering questions about audio with a trained MoWE audio LLM.

:class:`PretrainedAudioLLM` loads the folder that training leaves in its
``output_folder`` (``inference.yaml`` and ``model.ckpt``, see
:mod:`speechbrain_mowe.export`) and answers with its
:class:`~speechbrain_mowe.model.MoWEAudioLLM`, the model the trainer tested.
An example's answer does not depend on the rest of its batch, so batched and
one-at-a-time answers are the same, and the answers to the test sets are
those the trainer wrote. Nothing here imports the training code.

Long audio
----------
A model reads at most ``max_audio_seconds`` at once: the window of its
encoders that refuse longer audio (30 s for Whisper), or the longest
training clip when every encoder takes any length. Longer audio is refused
(``long_audio="refuse"``) or answered in pieces (``long_audio="chunk"``; the
default when the model's encoders chunk long audio themselves, see
``inference.yaml``): the audio is cut into consecutive pieces
no longer than the window, each cut at the quietest 20 ms frame of the last
fifth of its window so that words are not cut in two
(:func:`chunk_boundaries`); all pieces are answered in one batch and their
answers joined the way the task says (:attr:`speechbrain_mowe.tasks.Task.join`):
transcripts and translations with a space, captions with ``"; "``, and for
emotions the answer that covers the most seconds. Nothing is ever truncated
silently.
"""

import functools
import json
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from ruamel.yaml import YAML
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.data_utils import batch_pad_right

from speechbrain_mowe.dataio import SAMPLE_RATE, load_audio
from speechbrain_mowe.export import (
    FOLDER_FORMAT,
    INFERENCE_YAML,
    MODEL_CHECKPOINT,
    READ_FORMATS,
)
from speechbrain_mowe.lobes.encoders import LONG_AUDIO_MODES
from speechbrain_mowe.lobes.routers import DataIndependentRouter
from speechbrain_mowe.model import Decoding
from speechbrain_mowe.tasks import join_answers, registered_tasks

logger = logging.getLogger(__name__)

#: Samples of the frames whose energy places a cut (20 ms).
CUT_FRAME = 320
#: Share of the window, at its end, in which a cut is placed.
CUT_SEARCH = 0.2


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


def _check_folder(folder: Path, hparams_file: str, overrides) -> int:
    """Clear errors for a folder that lacks files, has another layout, or
    names missing sources; returns its layout."""
    yaml_path = folder / hparams_file
    if not yaml_path.is_file():
        raise FileNotFoundError(
            f"'{folder}' has no {hparams_file}. Training writes it, with {MODEL_CHECKPOINT}, "
            "into its output_folder once the test sets are scored "
            "(speechbrain_mowe.training.train_and_evaluate); is this the folder of a "
            "finished run?"
        )
    with open(yaml_path, encoding="utf-8") as f:
        settings = YAML().load(f) or {}
    found = settings.get("format")
    if found not in READ_FORMATS:
        raise ValueError(
            f"'{folder}' holds an inference folder of layout {found or 1} (mowe_encoder.ckpt, "
            f"projector.ckpt, llm.ckpt), written by an earlier speechbrain-mowe; this version "
            f"reads layouts {', '.join(map(str, READ_FORMATS))} ({MODEL_CHECKPOINT}). Train "
            "again, or load it with the version that wrote it"
        )
    if not (folder / MODEL_CHECKPOINT).is_file():
        raise FileNotFoundError(f"'{folder}' lacks {MODEL_CHECKPOINT} next to {hparams_file}")
    sources = dict(settings.get("model_sources") or {})
    if isinstance(overrides, dict):
        sources.update(overrides.get("model_sources") or {})
    for key, value in sources.items():
        if isinstance(value, str) and Path(value).is_absolute() and not Path(value).exists():
            raise FileNotFoundError(
                f"{yaml_path} reads {key} from '{value}', which does not exist (moved?); "
                f"give its new place with overrides={{'model_sources': {{'{key}': ...}}}}"
            )
    if found != FOLDER_FORMAT:
        logger.warning(
            "%s is of layout %s: its sources (%s) are read where they were when it was "
            "trained, unchecked; if one was made again since, its answers differ from its "
            "tests. Models trained by this version keep their sources inside their folder",
            yaml_path,
            found,
            ", ".join(f"{key}: {value}" for key, value in sources.items()),
        )
    return found


def _with_folder(overrides, folder: Path):
    """The loader's overrides plus ``model_folder`` (where the sources are sealed)."""
    if overrides is None or isinstance(overrides, dict):
        return {**(overrides or {}), "model_folder": str(folder)}
    return f"{overrides}\nmodel_folder: {json.dumps(str(folder))}"


class PretrainedAudioLLM(Pretrained):
    """A trained MoWE audio LLM that answers instructions about audio.

    Load the folder a training run wrote with :meth:`from_hparams`. The
    hyperparameters it reads (see :mod:`speechbrain_mowe.export`): ``tasks``
    (the router's task ids), ``answers`` (per tested task: the evaluation
    instruction, how a long file's answers join, the shortcut's name),
    ``max_new_tokens``, ``num_beams``, ``max_audio_seconds`` and
    ``long_audio``; ``precision`` sets the autocast of inference
    (``run_opts={"precision": ...}`` overrides it, as
    ``run_opts={"device": "cuda"}`` picks the device).

    Each tested task has a shortcut answering a file with the instruction it
    was tested with: ``transcribe_file`` (asr), ``translate_file`` (ast),
    ``classify_emotion_file`` (er), ``caption_file`` (aac), and those of the
    tasks a recipe registered (:attr:`speechbrain_mowe.tasks.Task.shortcut`).

    Arguments
    ---------
    *args, **kwargs
        Forwarded to SpeechBrain's ``Pretrained``.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.dataio import save_audio
    >>> from speechbrain_mowe.export import write_inference_folder
    >>> from speechbrain_mowe.families import load_family
    >>> from speechbrain_mowe.tiny import make_tiny_llm, make_tiny_whisper
    >>> tmp = Path(tempfile.mkdtemp())
    >>> sources = {"whisper_source": make_tiny_whisper(tmp / "whisper"),
    ...            "llm_source": make_tiny_llm(tmp / "llm")}
    >>> model = load_family("tiny_mowe", sources, tasks=["asr", "aac"])
    >>> _ = write_inference_folder(  # what training does at its end
    ...     tmp / "run", model, decoding=Decoding(max_new_tokens=5),
    ...     instructions={"asr": "Transcribe the speech.", "aac": "Describe the audio."})
    >>> llm = PretrainedAudioLLM.from_hparams(source=tmp / "run")
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
        "answers",
        "max_new_tokens",
        "num_beams",
        "max_audio_seconds",
        "long_audio",
    ]
    MODULES_NEEDED = ["model"]

    @classmethod
    def from_hparams(
        cls, source, hparams_file: str = INFERENCE_YAML, savedir=None, **kwargs
    ) -> "PretrainedAudioLLM":
        """Loads a trained model from its folder (or a hub repository).

        A local folder is read in place: nothing is copied, linked or written
        (it may be read-only), unless ``savedir`` asks for links to its files
        there. The model's frozen parts are read from the sources sealed in
        the folder, each file checked against the SHA-256 its
        ``inference.yaml`` pins (:func:`speechbrain_mowe.sealing.open_sources`):
        a missing or changed one is a :class:`~speechbrain_mowe.sealing.SealError`
        naming it. A hub repository is downloaded whole (or read from the hub
        cache) first.

        Arguments
        ---------
        source : str or Path
            The ``output_folder`` of a training run (or a copy of it, or its
            portable export), or a hub repository holding the same files.
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
        PretrainedAudioLLM
        """
        folder = _local_folder(source)
        if folder is None:  # a hub repository: its files, sources included, are needed
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(source), revision=kwargs.pop("revision", None)))
        if _check_folder(folder, hparams_file, kwargs.get("overrides")) == FOLDER_FORMAT:
            kwargs["overrides"] = _with_folder(kwargs.get("overrides"), folder)
        source = str(folder)
        model = super().from_hparams(source, hparams_file=hparams_file, savedir=savedir, **kwargs)
        model.lora_scale = getattr(model.hparams, "lora_scale", 1.0)
        return model

    @property
    def lora_scale(self) -> float:
        """The factor of the LLM's LoRA scale (``inference.yaml``'s, the one the
        model was tested with): 1 as trained, 0 the bare LLM; SALMONN lowers it
        to restore the LLM's instruction following. Settable."""
        return self.mods.model.llm.lora_scale

    @lora_scale.setter
    def lora_scale(self, scale: float):
        self.mods.model.llm.lora_scale = scale

    @property
    def task_conditioned(self) -> bool:
        """Whether the router picks experts per task (then tasks must be given)."""
        router = self.mods.model.mowe_encoder.router
        return router is not None and any(
            isinstance(module, DataIndependentRouter) and module.num_tasks > 1
            for module in router.modules()
        )

    @property
    def decoding(self) -> Decoding:
        """The decoding settings of ``inference.yaml``."""
        return Decoding(self.hparams.max_new_tokens, self.hparams.num_beams)

    def instruction(self, task: str) -> str:
        """The evaluation instruction the model was tested with for ``task``."""
        answers = self.hparams.answers
        if task not in answers:
            raise ValueError(
                f"This model was not trained on task '{task}'; its tasks are: "
                f"{', '.join(answers) or 'none'}. Ask with generate_file(path, instruction, "
                "task=...) instead"
            )
        return answers[task]["instruction"]

    def join(self, task: Optional[str]) -> Optional[str]:
        """How the answers to a long file's pieces are joined for ``task``
        (see :func:`~speechbrain_mowe.tasks.join_answers`); a space for a
        free-form instruction (None)."""
        return self.hparams.answers[task]["join"] if task in self.hparams.answers else " "

    def __getattr__(self, name: str):
        """The tasks' shortcuts (``transcribe_file``, ...), after the module's own
        attributes."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            hparams = self.__dict__.get("hparams")
            answers = getattr(hparams, "answers", None) or {}
            tasks = {spec["shortcut"]: task for task, spec in answers.items()}
            tasks.update(
                (task.shortcut, task.name)
                for task in registered_tasks().values()
                if task.shortcut and task.shortcut not in tasks
            )
            if name not in tasks:
                raise
            return functools.partial(self.task_file, task=tasks[name])

    def __dir__(self):
        answers = getattr(self.__dict__.get("hparams"), "answers", None) or {}
        shortcuts = [spec["shortcut"] for spec in answers.values()]
        return sorted(set(super().__dir__()) | {name for name in shortcuts if name})

    def _task_ids(self, tasks, count: int) -> Optional[torch.Tensor]:
        if tasks is None:
            if self.task_conditioned:
                raise ValueError(
                    "This model's router chooses its experts per task: pass tasks, one of "
                    f"{', '.join(self.hparams.tasks)} per example"
                )
            return None
        return self.mods.model.task_ids(_per_example(tasks, count, "tasks")).to(self.device)

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
        model = self.mods.model.eval()
        with torch.no_grad(), self.inference_ctx:
            return model.answer(
                wavs.to(self.device, torch.float32),
                wav_lens.to(self.device),
                instructions,
                task_ids,
                self.decoding,
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
        joins: Optional[Sequence[Optional[str]]] = None,
    ) -> List[str]:
        """Answers several clips, each given as its pieces, in one batch.

        Arguments
        ---------
        clips : sequence of sequence of torch.Tensor
            The pieces of each clip (see :meth:`load_pieces`).
        instructions, tasks
            Per clip, as in :meth:`generate_batch`.
        joins : sequence, optional
            How each clip's piece answers are joined (a separator, or None for
            the answer of most seconds; see
            :func:`~speechbrain_mowe.tasks.join_answers`); default: a space.

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

        joins = _per_example(joins or [" "] * len(clips), len(clips), "joins")
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
            joined.append(join_answers(own, [p.shape[0] / SAMPLE_RATE for p in pieces], join))
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

        The pieces of a long file are joined the task's way (:meth:`join`).
        """
        instruction = self.instruction(task)
        pieces = self.load_pieces(path, long_audio)
        return self.generate_clips([pieces], [instruction], [task], [self.join(task)])[0]
