"""The whole audio LLM: MoWE encoder, projector and language model in one module.

::

    wavs --MoWEEncoder--> fused feats (+ router aux loss, routing)
         --projector----> audio embeddings [b, t, d]
         --LanguageModel: [prefix | audio | suffix | answer] -> answer cross-entropy
                          or, left-padded with the KV cache, generated answers

:class:`MoWEAudioLLM` is what a model family builds
(:func:`speechbrain_mowe.families.load_family`), what
:class:`~speechbrain_mowe.training.MoWEBrain` trains and what
:class:`~speechbrain_mowe.inference.PretrainedAudioLLM` serves; it is a plain
``nn.Module``, so it also fits any other SpeechBrain pipeline. Its checkpoint
holds the trainable parameters only (:class:`TrainableStateMixin`).

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` LLM width.
"""

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from speechbrain_mowe.checkpointing import TrainableStateMixin
from speechbrain_mowe.lobes.language_model import (
    LanguageModel,
    Tokens,
    answer_token_losses,
)
from speechbrain_mowe.lobes.mowe import MoWEEncoder, MoWEOutput


@dataclass(frozen=True)
class Decoding:
    """How answers are generated (evaluation and inference).

    Arguments
    ---------
    max_new_tokens : int
        Longest answer, in tokens.
    num_beams : int
        1 for greedy search, more for beam search.
    """

    max_new_tokens: int = 128
    num_beams: int = 1


class AudioEmbeddings(NamedTuple):
    """The audio half of the model: the encoder's output and its projection.

    encoded : MoWEOutput
        Fused features, router loss and routing decisions.
    embeds : torch.Tensor
        ``[b, t, d]`` embeddings for the language model, zero past each length.
    lens : torch.Tensor
        ``[b]`` relative lengths.
    """

    encoded: MoWEOutput
    embeds: torch.Tensor
    lens: torch.Tensor


class ModelOutput(NamedTuple):
    """What :meth:`MoWEAudioLLM.forward` returns (losses in float32).

    loss : torch.Tensor
        The training objective: ``answer_loss + aux_weight * aux_loss``.
    answer_loss : torch.Tensor
        Mean next-token cross-entropy of the answers: over the batch's answer
        tokens, or as ``loss_normalisation`` says (:func:`answer_loss`).
    answer_sums : torch.Tensor
        ``[b]`` summed answer cross-entropy of each example.
    answer_tokens : torch.Tensor
        ``[b]`` answer tokens (with the end token) of each example.
    aux_loss : torch.Tensor
        The router's load-balancing loss (0 without a router).
    audio : AudioEmbeddings
        The encoded audio, e.g. to generate from without encoding again.
    """

    loss: torch.Tensor
    answer_loss: torch.Tensor
    answer_sums: torch.Tensor
    answer_tokens: torch.Tensor
    aux_loss: torch.Tensor
    audio: AudioEmbeddings


#: How :func:`answer_loss` averages the answer tokens' cross-entropy.
LOSS_NORMALISATIONS = ("token", "example", "task")


def check_loss_normalisation(normalisation: str) -> None:
    """Refuses a name that is not one of :data:`LOSS_NORMALISATIONS`.

    Example
    -------
    >>> check_loss_normalisation("tokens")
    Traceback (most recent call last):
     ...
    ValueError: loss_normalisation must be one of token, example, task, got 'tokens'
    """
    if normalisation not in LOSS_NORMALISATIONS:
        raise ValueError(
            f"loss_normalisation must be one of {', '.join(LOSS_NORMALISATIONS)}, "
            f"got {normalisation!r}"
        )


def answer_loss(
    sums: torch.Tensor,
    tokens: torch.Tensor,
    task_ids: Optional[torch.Tensor] = None,
    normalisation: str = "token",
) -> torch.Tensor:
    """A batch's answer loss from each example's summed cross-entropy.

    - ``token``: the mean over every answer token of the batch (each token
      weighs the same, so a task with long answers, e.g. transcripts, takes
      most of the gradient from one with one-word labels);
    - ``example``: the mean over examples of each example's mean token loss;
    - ``task``: the mean over the batch's tasks of each task's mean token loss
      (needs ``task_ids``).

    Arguments
    ---------
    sums, tokens : torch.Tensor
        ``[b]`` summed answer cross-entropy and answer tokens of each example
        (:func:`~speechbrain_mowe.lobes.language_model.answer_token_losses`).
    task_ids : torch.Tensor, optional
        ``[b]`` task of each example.
    normalisation : str
        One of :data:`LOSS_NORMALISATIONS`.

    Example
    -------
    >>> sums, tokens = torch.tensor([8.0, 1.0, 3.0]), torch.tensor([8, 1, 1])
    >>> [round(float(answer_loss(sums, tokens, torch.tensor([0, 1, 1]), n)), 4)
    ...  for n in LOSS_NORMALISATIONS]
    [1.2, 1.6667, 1.5]
    >>> answer_loss(sums, tokens, normalisation="task")
    Traceback (most recent call last):
     ...
    ValueError: normalisation='task' needs the task_ids of the examples
    """
    check_loss_normalisation(normalisation)
    tokens = tokens.to(sums.dtype)
    if normalisation == "token":
        return sums.sum() / tokens.sum().clamp(min=1)
    if normalisation == "example":
        return (sums / tokens.clamp(min=1)).mean()
    if task_ids is None:
        raise ValueError("normalisation='task' needs the task_ids of the examples")
    task_ids = task_ids.to(sums.device)
    present, index = torch.unique(task_ids, return_inverse=True)
    task_sums = sums.new_zeros(len(present)).index_add_(0, index, sums)
    task_tokens = tokens.new_zeros(len(present)).index_add_(0, index, tokens)
    return (task_sums / task_tokens.clamp(min=1)).mean()


class MoWEAudioLLM(TrainableStateMixin, nn.Module):
    """A MoWE encoder, a projector and a language model, trained as one.

    Arguments
    ---------
    mowe_encoder : MoWEEncoder
        Base encoder, weak-encoder pool and router.
    projector : torch.nn.Module
        Maps ``(feats, lens)`` to ``(embeddings [b, t, d], lens)`` at the
        language model's width.
    llm : LanguageModel
        The causal LM (with its LoRA adapters and tokenizer).
    tasks : sequence of str
        The task names, in the order of the router's task ids.
    aux_weight : float
        Weight of the router's load-balancing loss in :attr:`ModelOutput.loss`.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.lobes import DataDependentRouter, SequenceCNNProjector
    >>> from speechbrain_mowe.lobes import TinyConvEncoder
    >>> from speechbrain_mowe.tiny import make_tiny_llm
    >>> llm = LanguageModel(make_tiny_llm(tempfile.mkdtemp()), lora_rank=4)
    >>> mowe = MoWEEncoder(TinyConvEncoder(), [TinyConvEncoder()],
    ...                    DataDependentRouter(64, 1), weak_dim=16)
    >>> model = MoWEAudioLLM(mowe, SequenceCNNProjector(80, llm.embedding_dim, 4), llm,
    ...                      tasks=["asr", "aac"])
    >>> prefix, suffix = llm.tokenize_prompts(["transcribe the audio .", "describe the sound ."])
    >>> wavs, lens = torch.randn(2, 16000) * 0.1, torch.tensor([1.0, 0.5])
    >>> out = model(wavs, lens, prefix, suffix, llm.tokenize_answers(["one two", "a bird"]))
    >>> out.answer_tokens.tolist(), bool(out.loss > 0)
    ([6, 5], True)
    >>> answers = model.eval().answer(wavs, lens, ["transcribe the audio ."] * 2,
    ...                               decoding=Decoding(max_new_tokens=3))
    >>> len(answers)
    2
    """

    def __init__(
        self,
        mowe_encoder: MoWEEncoder,
        projector: nn.Module,
        llm: LanguageModel,
        *,
        tasks: Sequence[str],
        aux_weight: float = 0.1,
    ):
        super().__init__()
        if len(set(tasks)) != len(tasks) or not tasks:
            raise ValueError(f"tasks must be distinct names, at least one, got {list(tasks)}")
        self.mowe_encoder = mowe_encoder
        self.projector = projector
        self.llm = llm
        self.tasks = list(tasks)
        self.aux_weight = aux_weight
        #: How :func:`speechbrain_mowe.families.load_family` built the model
        #: (None when it was built otherwise); the inference folder rebuilds it so.
        self.built_from = None

    @property
    def experts(self) -> List[str]:
        """A name for each weak encoder: ``<index>:<class>``."""
        return [f"{i}:{type(e).__name__}" for i, e in enumerate(self.mowe_encoder.weak_pool)]

    def task_ids(self, names: Sequence[str]) -> torch.Tensor:
        """The router's task id of each task name.

        Example
        -------
        >>> model = MoWEAudioLLM.__new__(MoWEAudioLLM)
        >>> model.tasks = ["asr", "er"]
        >>> MoWEAudioLLM.task_ids(model, ["er", "asr", "er"])
        tensor([1, 0, 1])
        >>> MoWEAudioLLM.task_ids(model, ["kws"])
        Traceback (most recent call last):
         ...
        ValueError: Unknown task(s) kws: this model's tasks are asr, er
        """
        unknown = sorted(set(names) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"Unknown task(s) {', '.join(unknown)}: this model's tasks are "
                f"{', '.join(self.tasks)}"
            )
        return torch.tensor([self.tasks.index(name) for name in names], dtype=torch.long)

    def encode_audio(
        self,
        wavs: torch.Tensor,
        wav_lens: Optional[torch.Tensor] = None,
        task_ids: Optional[torch.Tensor] = None,
        base_output: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        weak_outputs: Optional[Sequence[Optional[Tuple[torch.Tensor, torch.Tensor]]]] = None,
        prompt: Optional[Tuple[Tokens, Tokens]] = None,
    ) -> AudioEmbeddings:
        """The MoWE encoder, then the projector.

        The arguments are those of :meth:`MoWEEncoder.forward
        <speechbrain_mowe.lobes.MoWEEncoder.forward>`; ``task_ids`` come from
        :meth:`task_ids`; ``prompt``, the ``(prefix, suffix)`` tokens, gives a
        router that reads the instruction its embedding.
        """
        if task_ids is not None:
            task_ids = task_ids.to(wavs.device)
        instruction = None
        if self.mowe_encoder.reads_instruction:
            if prompt is None:
                raise ValueError("this model's router reads the instruction: pass prompt=")
            instruction = self.llm.prompt_embedding(*prompt).to(wavs.device)
        encoded = self.mowe_encoder(
            wavs, wav_lens, task_ids, base_output, weak_outputs, instruction
        )
        embeds, lens = self.projector(encoded.feats, encoded.lens)
        return AudioEmbeddings(encoded, embeds, lens)

    def forward(
        self,
        wavs: torch.Tensor,
        wav_lens: Optional[torch.Tensor],
        prefix: Tokens,
        suffix: Tokens,
        answer: Tokens,
        task_ids: Optional[torch.Tensor] = None,
        base_output: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        weak_outputs: Optional[Sequence[Optional[Tuple[torch.Tensor, torch.Tensor]]]] = None,
        *,
        loss_normalisation: str = "token",
    ) -> ModelOutput:
        """Teacher-forced losses of a batch.

        The losses are computed in float32 outside autocast, so a caller may
        run the forward under bf16 or fp16 autocast.

        Arguments
        ---------
        wavs, wav_lens, task_ids, base_output, weak_outputs
            As in :meth:`encode_audio`.
        prefix, suffix, answer : (torch.Tensor, torch.Tensor)
            Token ids with relative lengths (see
            :meth:`~speechbrain_mowe.lobes.LanguageModel.tokenize_prompts`).
        loss_normalisation : str
            How :attr:`ModelOutput.answer_loss` averages the answer tokens:
            ``token``, ``example`` or ``task`` (see :func:`answer_loss`).
        """
        audio = self.encode_audio(
            wavs, wav_lens, task_ids, base_output, weak_outputs, (prefix, suffix)
        )
        out = self.llm(audio.embeds, audio.lens, prefix, suffix, answer)
        with torch.autocast(out.logits.device.type, enabled=False):
            sums, tokens = answer_token_losses(out.logits, out.labels)
            loss_of_answers = answer_loss(sums, tokens, task_ids, loss_normalisation)
            aux_loss = audio.encoded.aux_loss.float()
            loss = loss_of_answers + self.aux_weight * aux_loss
        return ModelOutput(loss, loss_of_answers, sums, tokens, aux_loss, audio)

    @torch.no_grad()
    def generate(
        self,
        audio: AudioEmbeddings,
        prefix: Tokens,
        suffix: Tokens,
        decoding: Decoding = Decoding(),
    ) -> List[str]:
        """Batched generation of the answers to prompts around encoded audio.

        Returns one answer per example, as text without surrounding whitespace.
        """
        tokens = self.llm.generate(
            audio.embeds,
            audio.lens,
            prefix,
            suffix,
            max_new_tokens=decoding.max_new_tokens,
            num_beams=decoding.num_beams,
        )
        return [text.strip() for text in self.llm.decode(tokens)]

    @torch.no_grad()
    def answer(
        self,
        wavs: torch.Tensor,
        wav_lens: Optional[torch.Tensor],
        instructions: Sequence[str],
        task_ids: Optional[torch.Tensor] = None,
        decoding: Decoding = Decoding(),
    ) -> List[str]:
        """Answers one instruction per example about a padded batch of audio.

        An example's answer does not depend on the rest of its batch.
        """
        prefix, suffix = self.llm.tokenize_prompts(instructions)
        audio = self.encode_audio(wavs, wav_lens, task_ids, prompt=(prefix, suffix))
        return self.generate(audio, prefix, suffix, decoding)
