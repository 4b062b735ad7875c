"""A Hugging Face causal LM that reads audio embeddings, adapted with LoRA.

A prompt is built with the tokenizer's chat template around an audio
placeholder and split there into a prefix and a suffix; the audio embeddings
are spliced between them::

    [prefix tokens | audio embeddings | suffix tokens | answer tokens + end]
    labels: -100 everywhere but the answer tokens and the end token

Batches are right-padded for training and left-padded for generation, with
position ids counted from each example's first real token, so an example's
logits and generated tokens do not depend on the rest of its batch. All
batch assembly is vectorised (one scatter per segment).

Shape legend: ``b`` batch, ``t`` time, ``d`` LLM embedding width, ``v`` vocabulary.
"""

import inspect
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from speechbrain.utils.data_utils import batch_pad_right
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechbrain_mowe.checkpointing import TrainableStateMixin
from speechbrain_mowe.lobes.prompt_aware import BranchScaler, PromptAwareLoRAWeights
from speechbrain_mowe.lobes.sequence import length_mask, splice, to_absolute

IGNORE_INDEX = -100
#: Token ids with SpeechBrain relative lengths: ``(ids [b, t], lens [b])``.
Tokens = Tuple[torch.Tensor, torch.Tensor]


class LanguageModelOutput(NamedTuple):
    """Training forward result (its answer losses: :func:`answer_token_losses`).

    logits : torch.Tensor
        ``[b, t, v]``: of every position, or of the last ``t`` (the answers and
        the position before the longest) with ``answer_logits_only``.
    labels : torch.Tensor
        ``[b, t]`` targets aligned with ``logits`` inputs (-100 = ignored).
    """

    logits: torch.Tensor
    labels: torch.Tensor


def embedding_width(source: str) -> int:
    """The embedding width of the causal LM at ``source``, from its config alone
    (for YAML that sizes a module before the LLM is built).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.tiny import make_tiny_llm
    >>> embedding_width(make_tiny_llm(tempfile.mkdtemp(), hidden_size=48))
    48
    """
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source).hidden_size


def answer_token_losses(
    logits: torch.Tensor, labels: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and token count of each example's answer.

    Computed in float32 whatever the logits' dtype, so that callers running
    the model under autocast can take the loss outside it.

    Arguments
    ---------
    logits : torch.Tensor
        ``[b, t, v]`` from :meth:`LanguageModel.forward`.
    labels : torch.Tensor
        ``[b, t]`` aligned with the inputs (-100 = ignored).

    Returns
    -------
    sums, counts : torch.Tensor
        ``[b]`` each; the mean loss of a batch is ``sums.sum() / counts.sum()``.

    Example
    -------
    >>> logits = torch.zeros(1, 3, 4)
    >>> sums, counts = answer_token_losses(logits, torch.tensor([[-100, 2, 1]]))
    >>> counts, torch.allclose(sums, 2 * torch.log(torch.tensor([4.0])))
    (tensor([2]), True)
    """
    targets = labels[:, 1:]
    token_losses = nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    return token_losses.sum(1), (targets != IGNORE_INDEX).sum(1)


class LanguageModel(TrainableStateMixin, nn.Module):
    """A causal LM with LoRA adapters that takes audio embeddings in its prompt.

    Arguments
    ---------
    source : str
        Local directory or hub name of the LLM and its tokenizer.
    lora_rank : int
        LoRA rank; 0 for no adapters.
    lora_alpha : float
        LoRA scaling numerator (scale = alpha / rank).
    lora_dropout : float
        Dropout on the LoRA branch.
    lora_target_modules : sequence of str
        Names of the linear layers that get adapters (e.g. ``q_proj``,
        ``v_proj``, or ``all-linear``).
    freeze_llm : bool
        Freeze the LLM's own weights (LoRA still trains).
    audio_placeholder : str
        Marker of the audio position in the user message; it must not occur
        in instructions.
    user_template : str
        The user message, with ``{audio}`` and ``{instruction}`` fields.
    system_prompt : str, optional
        A system message put before the user message.
    chat_template : str, optional
        A Jinja chat template overriding the tokenizer's.
    end_token : str, optional
        Token that ends an answer (and generation); the tokenizer's EOS by
        default. Chat models whose turns end with a dedicated token (e.g.
        ``<|im_end|>``) may name it here.
    dtype : torch.dtype, optional
        Dtype the LLM weights are loaded in.
    answer_logits_only : bool
        In the training forward, compute the output layer only where the answer
        is predicted (left-padded batches, transformers' ``logits_to_keep``): the
        same loss and gradients, without the logits of every prompt and audio
        position (at a 128k vocabulary, most of the loss's memory). Models whose
        forward lacks ``logits_to_keep`` compute every position.
    attn_implementation : str, optional
        transformers' attention kernel: ``sdpa`` (PyTorch's fused
        scaled-dot-product attention), ``eager``, ``flash_attention_2`` (if
        installed); None for the model's default.
    gradient_checkpointing : bool
        Recompute each decoder layer's activations in the backward pass instead
        of keeping them (transformers' gradient checkpointing, non-reentrant):
        less memory for about one more forward pass; the same loss and gradients.
    prompt_aware_lora : bool
        WavLLM's prompt-aware LoRA: an adapter (``prompt_adapter``,
        :class:`~speechbrain_mowe.lobes.prompt_aware.PromptAwareLoRAWeights`)
        reads the mean embedding of each example's prompt and weights each LoRA
        branch for that example; it starts at weight 1 (plain LoRA).
    prompt_adapter_dim : int
        Hidden width of that adapter.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.tiny import make_tiny_llm
    >>> path = make_tiny_llm(tempfile.mkdtemp())  # or a hub name
    >>> llm = LanguageModel(path, lora_rank=8).eval()
    >>> prefix, suffix = llm.tokenize_prompts(["Transcribe the audio."])
    >>> audio = torch.randn(1, 20, llm.embedding_dim)
    >>> tokens = llm.generate(audio, torch.ones(1), prefix, suffix, max_new_tokens=5, num_beams=1)
    >>> len(tokens), len(tokens[0]) <= 5
    (1, True)
    """

    def __init__(
        self,
        source: str,
        *,
        lora_rank: int = 8,
        lora_alpha: float = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: Sequence[str] = ("q_proj", "v_proj"),
        freeze_llm: bool = True,
        audio_placeholder: str = "<audio>",
        user_template: str = "{audio}\n{instruction}",
        system_prompt: Optional[str] = None,
        chat_template: Optional[str] = None,
        end_token: Optional[str] = None,
        dtype: Optional[torch.dtype] = None,
        answer_logits_only: bool = True,
        attn_implementation: Optional[str] = None,
        gradient_checkpointing: bool = False,
        prompt_aware_lora: bool = False,
        prompt_adapter_dim: int = 64,
    ):
        super().__init__()
        self.source = source
        self.answer_logits_only = answer_logits_only
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        if chat_template is not None:
            self.tokenizer.chat_template = chat_template
        if not self.tokenizer.chat_template:
            raise ValueError(
                f"the tokenizer at '{source}' has no chat template; pass chat_template="
            )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        end_token = end_token or self.tokenizer.eos_token
        self.end_token_id = self.tokenizer.convert_tokens_to_ids(end_token)
        unknown = self.end_token_id == self.tokenizer.unk_token_id
        if self.end_token_id is None or (unknown and end_token != self.tokenizer.unk_token):
            raise ValueError(f"end token {end_token!r} is not in the vocabulary of '{source}'")
        self.audio_placeholder = audio_placeholder
        self.user_template = user_template
        self.system_prompt = system_prompt

        kernel = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kernel)
        if gradient_checkpointing:
            # Non-reentrant: gradients reach LoRA and the audio embeddings even
            # though the frozen LLM's own inputs need none. (transformers 5.x
            # renamed gradient_checkpointing_enable, which now warns.)
            enable = getattr(model, "activation_checkpointing_enable", None)
            (enable or model.gradient_checkpointing_enable)({"use_reentrant": False})
        if freeze_llm:
            model.requires_grad_(False)
        if lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=lora_rank,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=(
                    lora_target_modules
                    if isinstance(lora_target_modules, str)
                    else list(lora_target_modules)
                ),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
            if not freeze_llm:
                model.requires_grad_(True)
        self.model = model
        self._lora_scale = 1.0
        self.prompt_adapter = None
        if prompt_aware_lora:
            branches = [layer.lora_B["default"] for layer in self._lora_layers()]
            if not branches:
                raise ValueError("prompt_aware_lora needs LoRA adapters (lora_rank > 0)")
            self.prompt_adapter = PromptAwareLoRAWeights(
                self.embedding_dim, len(branches), prompt_adapter_dim
            )
            self._branch_scaler = BranchScaler(branches)

    def _lora_layers(self) -> List[nn.Module]:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.model.modules() if isinstance(m, LoraLayer) and m.lora_B]

    @property
    def lora_scale(self) -> float:
        """The factor of every LoRA branch's scale ``alpha / rank`` (1 as trained).

        SALMONN lowers it at test time to restore the LLM's instruction
        following; 0 gives the bare LLM's outputs.
        """
        return self._lora_scale

    @lora_scale.setter
    def lora_scale(self, scale: float):
        layers = self._lora_layers()
        if not layers and scale != 1:
            raise ValueError(f"this LLM has no LoRA adapters to scale (lora_scale={scale})")
        for layer in layers:
            for adapter in layer.lora_B:
                layer.set_scale(adapter, float(scale))
        self._lora_scale = float(scale)

    def merge_lora(self) -> None:
        """Merges the LoRA adapters into the LLM's weights at the current
        :attr:`lora_scale` and removes them (peft's ``merge_and_unload``): the
        same outputs, without the adapters' cost at every layer.

        Example
        -------
        >>> import tempfile
        >>> from speechbrain_mowe.tiny import make_tiny_llm
        >>> llm = LanguageModel(make_tiny_llm(tempfile.mkdtemp()), lora_rank=4)
        >>> llm.merge_lora()
        >>> hasattr(llm.model, "peft_config"), llm._lora_layers()
        (False, [])
        """
        if not self._lora_layers():
            raise ValueError(f"the LLM of '{self.source}' has no LoRA adapters to merge")
        if self.prompt_adapter is not None:
            raise ValueError(
                "prompt-aware LoRA weights each example's branches by its prompt: the adapters "
                "cannot be merged into fixed weights"
            )
        self.model = self.model.merge_and_unload()
        self._lora_scale = 1.0

    def prompt_embedding(self, prefix: Tokens, suffix: Tokens) -> torch.Tensor:
        """``[b, d]`` mean input embedding of each example's prompt tokens (the
        chat-templated instruction around the audio), in float32."""
        embed = self.model.get_input_embeddings()
        total, count = 0.0, 0.0
        for ids, lens in (prefix, suffix):
            ids = ids.to(embed.weight.device)
            valid = length_mask(to_absolute(lens, ids.shape[1]).to(ids.device), ids.shape[1])
            total = total + (embed(ids).float() * valid[..., None]).sum(1)
            count = count + valid.sum(1, keepdim=True)
        return total / count.clamp(min=1)

    def _weigh_branches(self, prefix: Tokens, suffix: Tokens) -> None:
        """Gives the prompt-aware LoRA weights of these prompts to the branches."""
        if self.prompt_adapter is not None:
            self._branch_scaler.use(self.prompt_adapter(self.prompt_embedding(prefix, suffix)))

    @property
    def embedding_dim(self) -> int:
        """Width ``d`` of the LLM's input embeddings."""
        return self.model.get_input_embeddings().embedding_dim

    def tokenize_prompt(self, instruction: str) -> Tuple[List[int], List[int]]:
        """Token ids of the prompt before and after the audio.

        Arguments
        ---------
        instruction : str
            The task instruction ("Transcribe the audio.").

        Returns
        -------
        prefix, suffix : list of int
            The chat-templated user turn (with the generation prompt) cut at
            the audio placeholder.
        """
        if self.audio_placeholder in instruction:
            raise ValueError(
                f"instruction {instruction!r} contains the audio placeholder "
                f"{self.audio_placeholder!r}"
            )
        messages = (
            []
            if self.system_prompt is None
            else [{"role": "system", "content": self.system_prompt}]
        )
        user = self.user_template.format(audio=self.audio_placeholder, instruction=instruction)
        messages.append({"role": "user", "content": user})
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        parts = text.split(self.audio_placeholder)
        if len(parts) != 2:
            raise ValueError(
                f"the chat template rendered the audio placeholder {len(parts) - 1} times "
                f"(expected once): {text!r}"
            )
        encode = lambda part: self.tokenizer(part, add_special_tokens=False)["input_ids"]  # noqa: E731
        return encode(parts[0]), encode(parts[1])

    def tokenize_answer(self, answer: str) -> List[int]:
        """Token ids of an answer followed by the end token."""
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        return ids + [self.end_token_id]

    def tokenize_prompts(self, instructions: Sequence[str]) -> Tuple[Tokens, Tokens]:
        """Padded prefix and suffix tokens for a batch of instructions."""
        pairs = [self.tokenize_prompt(text) for text in instructions]
        return (
            self._pad([prefix for prefix, _ in pairs]),
            self._pad([suffix for _, suffix in pairs]),
        )

    def tokenize_answers(self, answers: Sequence[str]) -> Tokens:
        """Padded answer tokens for a batch."""
        return self._pad([self.tokenize_answer(text) for text in answers])

    def _pad(self, sequences: Sequence[List[int]]) -> Tokens:
        if not any(sequences):  # e.g. a chat template that puts nothing before the audio
            return torch.zeros(len(sequences), 0, dtype=torch.long), torch.zeros(len(sequences))
        tensors = [torch.tensor(ids, dtype=torch.long) for ids in sequences]
        return batch_pad_right(tensors, value=self.tokenizer.pad_token_id)

    def _assemble(self, audio_embeds, audio_lens, prefix, suffix, answer, left_pad):
        """Input embeddings, attention mask, positions and labels of a batch."""
        embed = self.model.get_input_embeddings()
        device = embed.weight.device

        def tokens(ids, lens):
            return ids.to(device), to_absolute(lens, ids.shape[1]).to(device)

        prefix_ids, prefix_lens = tokens(*prefix)
        suffix_ids, suffix_lens = tokens(*suffix)
        audio_lens = to_absolute(audio_lens, audio_embeds.shape[1]).to(device)
        segments = [
            (embed(prefix_ids), prefix_lens),
            (audio_embeds.to(device=device, dtype=embed.weight.dtype), audio_lens),
            (embed(suffix_ids), suffix_lens),
        ]
        labels = None
        if answer is not None:
            answer_ids, answer_lens = tokens(*answer)
            segments.append((embed(answer_ids), answer_lens))
            prompt_lens = prefix_lens + audio_lens + suffix_lens
            ignored = torch.full(
                (len(prompt_lens), int(prompt_lens.max())), IGNORE_INDEX, device=device
            )
            labels, _, _ = splice(
                [(ignored, prompt_lens), (answer_ids, answer_lens)],
                left_pad=left_pad,
                fill=IGNORE_INDEX,
            )
        embeds, mask, _ = splice(segments, left_pad=left_pad)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        return embeds, mask.long(), positions, labels

    def forward(
        self,
        audio_embeds: torch.Tensor,
        audio_lens: torch.Tensor,
        prefix: Tokens,
        suffix: Tokens,
        answer: Tokens,
    ) -> LanguageModelOutput:
        """Teacher-forced logits and the labels of the answer tokens.

        Arguments
        ---------
        audio_embeds : torch.Tensor
            ``[b, t, d]`` projected audio.
        audio_lens : torch.Tensor
            ``[b]`` relative lengths.
        prefix, suffix, answer : (torch.Tensor, torch.Tensor)
            Token ids ``[b, t]`` with relative lengths, as made by
            :meth:`tokenize_prompts` and :meth:`tokenize_answers` (or
            SpeechBrain's ``PaddedBatch``).
        """
        # The weights stay set after the forward: gradient checkpointing runs
        # the layers again in the backward.
        self._weigh_branches(prefix, suffix)
        if not (self.answer_logits_only and self._keeps_some_logits):
            embeds, mask, positions, labels = self._assemble(
                audio_embeds, audio_lens, prefix, suffix, answer, left_pad=False
            )
            logits = self.model(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions
            ).logits
            return LanguageModelOutput(logits, labels)
        # Left-padded, every answer ends the sequence: only the last positions
        # (the one before the longest answer, and the answers) need the output
        # layer, whose float32 logits at a large vocabulary are most of the
        # loss's memory. The loss and its gradients are those of all positions.
        embeds, mask, positions, labels = self._assemble(
            audio_embeds, audio_lens, prefix, suffix, answer, left_pad=True
        )
        keep = int(to_absolute(answer[1], answer[0].shape[1]).max()) + 1
        logits = self.model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=keep
        ).logits
        return LanguageModelOutput(logits, labels[:, -keep:])

    @property
    def _keeps_some_logits(self) -> bool:
        """Whether the causal LM computes logits for its last positions only on
        request (transformers' ``logits_to_keep``)."""
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return "logits_to_keep" in inspect.signature(model.forward).parameters

    @torch.no_grad()
    def generate(
        self,
        audio_embeds: torch.Tensor,
        audio_lens: torch.Tensor,
        prefix: Tokens,
        suffix: Tokens,
        *,
        max_new_tokens: int,
        num_beams: int,
        **generate_kwargs,
    ) -> List[List[int]]:
        """Batched decoding with left padding and the KV cache.

        Arguments
        ---------
        audio_embeds, audio_lens, prefix, suffix
            As in :meth:`forward`.
        max_new_tokens, num_beams : int
            Longest answer; 1 for greedy search, more for beam search (see
            :class:`speechbrain_mowe.model.Decoding` for their defaults).
        **generate_kwargs
            Passed to ``transformers``' ``generate``.

        Returns
        -------
        list of list of int
            The answer tokens of each example, without the end token.
        """
        self._weigh_branches(prefix, suffix)
        embeds, mask, _, _ = self._assemble(
            audio_embeds, audio_lens, prefix, suffix, None, left_pad=True
        )
        out = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=self.end_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            **generate_kwargs,
        )
        hypotheses = []
        for row in out.tolist():
            if self.end_token_id in row:
                row = row[: row.index(self.end_token_id)]
            hypotheses.append(row)
        return hypotheses

    def decode(self, hypotheses: Sequence[Sequence[int]]) -> List[str]:
        """Token ids to text, special tokens dropped."""
        return self.tokenizer.batch_decode(hypotheses, skip_special_tokens=True)
