"""Routers choosing weak experts per example.

A router turns logits over ``E`` experts into sparse gates: the top-``k``
experts of each example are kept and their gates renormalised to sum to one.
It also returns the Switch-Transformer load-balancing loss
``E * sum_e f_e * P_e``, where ``f_e`` is the share of (example, slot)
assignments sent to expert ``e`` and ``P_e`` its mean router probability:
1.0 for a uniform assignment, up to ``E`` when every example picks the same
expert.

Note
----
With ``top_k=1`` and ``renormalize=True`` the single gate is always 1, so
only the auxiliary loss trains the router. Use ``renormalize=False`` (the
gate is the expert's probability, as in the Switch Transformer) or
``top_k > 1`` to let the task loss shape the routing.

Shape legend: ``b`` batch, ``d`` summary channels, ``e`` experts.
"""

import abc
from typing import NamedTuple, Optional

import torch
from torch import nn


class Routing(NamedTuple):
    """Per-example routing decisions.

    gates : torch.Tensor
        ``[b, e]`` gate of each expert, zero for unselected ones.
    experts : torch.Tensor
        ``[b, k]`` indices of the selected experts, best first.
    probs : torch.Tensor
        ``[b, e]`` router probabilities before selection.
    aux_loss : torch.Tensor
        Scalar load-balancing loss.
    """

    gates: torch.Tensor
    experts: torch.Tensor
    probs: torch.Tensor
    aux_loss: torch.Tensor


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer auxiliary loss ``E * sum_e f_e * P_e``.

    Arguments
    ---------
    probs : torch.Tensor
        Router probabilities ``[b, e]``.
    experts : torch.Tensor
        Selected experts ``[b, k]``.

    Example
    -------
    >>> probs = torch.full((4, 2), 0.5)
    >>> load_balancing_loss(probs, torch.tensor([[0], [1], [0], [1]]))
    tensor(1.)
    >>> load_balancing_loss(torch.tensor([[1.0, 0.0]] * 4), torch.zeros(4, 1, dtype=torch.long))
    tensor(2.)
    """
    num_experts = probs.shape[-1]
    counts = torch.zeros_like(probs).scatter_add_(
        1, experts, torch.ones_like(experts, dtype=probs.dtype)
    )
    share = counts.sum(0) / experts.numel()
    return num_experts * (share * probs.mean(0)).sum()


class Router(nn.Module, abc.ABC):
    """Shared top-k selection; subclasses say how logits are made.

    Arguments
    ---------
    num_experts : int
        Size of the weak-encoder pool.
    top_k : int
        Experts kept per example.
    noise_std : float
        Std of Gaussian noise added to the logits during training (exploration);
        none at evaluation.
    renormalize : bool
        Renormalise the kept probabilities to sum to one.
    """

    def __init__(
        self, num_experts: int, top_k: int = 1, noise_std: float = 0.0, renormalize: bool = True
    ):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, {num_experts}], got {top_k}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.noise_std = noise_std
        self.renormalize = renormalize

    @abc.abstractmethod
    def logits(
        self, summary: Optional[torch.Tensor], task_ids: Optional[torch.Tensor], batch: int
    ) -> torch.Tensor:
        """Router logits ``[b, e]``."""

    #: Whether the router reads the instruction's embedding (``logits`` then
    #: takes it as a fourth argument).
    reads_instruction = False

    def forward(
        self,
        summary: Optional[torch.Tensor] = None,
        task_ids: Optional[torch.Tensor] = None,
        batch: Optional[int] = None,
        instruction: Optional[torch.Tensor] = None,
    ) -> Routing:
        """Routes a batch.

        Arguments
        ---------
        summary : torch.Tensor, optional
            ``[b, d]`` pooled base features (data-dependent routers).
        task_ids : torch.Tensor, optional
            ``[b]`` task indices (task-conditioned routers).
        batch : int, optional
            Batch size when no tensor is given.
        instruction : torch.Tensor, optional
            ``[b, d_llm]`` embedding of each example's instruction (routers
            that read it: :attr:`reads_instruction`).
        """
        if batch is None:
            given = next((t for t in (summary, task_ids, instruction) if t is not None), None)
            if given is None:
                raise ValueError("pass summary, task_ids, instruction or batch to the router")
            batch = given.shape[0]
        if self.reads_instruction:
            logits = self.logits(summary, task_ids, batch, instruction).float()
        else:
            logits = self.logits(summary, task_ids, batch).float()
        probs = logits.softmax(-1)
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        top_logits, experts = logits.topk(self.top_k, dim=-1)
        if self.renormalize:
            top_gates = top_logits.softmax(-1)
        else:
            top_gates = logits.softmax(-1).gather(1, experts)
        gates = torch.zeros_like(probs).scatter(1, experts, top_gates)
        return Routing(gates, experts, probs, load_balancing_loss(probs, experts))


class DataIndependentRouter(Router):
    """Learned logits shared by all inputs, optionally one row per task.

    Arguments
    ---------
    num_experts : int
        Size of the pool.
    num_tasks : int
        Rows of logits; with more than one, ``task_ids`` picks the row.
    **kwargs
        See :class:`Router`.

    Example
    -------
    >>> router = DataIndependentRouter(3, num_tasks=2)
    >>> routing = router(task_ids=torch.tensor([0, 1, 1]))
    >>> routing.gates.shape, routing.gates.sum(-1)
    (torch.Size([3, 3]), tensor([1., 1., 1.], grad_fn=<SumBackward1>))
    """

    def __init__(self, num_experts: int, num_tasks: int = 1, **kwargs):
        super().__init__(num_experts, **kwargs)
        self.num_tasks = num_tasks
        self.task_logits = nn.Parameter(torch.randn(num_tasks, num_experts) * 0.01)

    def logits(self, summary, task_ids, batch):
        """The task's row of logits, repeated over the batch."""
        if task_ids is None:
            if self.num_tasks > 1:
                raise ValueError(f"this router has {self.num_tasks} tasks: pass task_ids")
            task_ids = torch.zeros(batch, dtype=torch.long, device=self.task_logits.device)
        return self.task_logits[task_ids]


class DataDependentRouter(Router):
    """Logits from a pooled summary of the base encoder's features.

    Arguments
    ---------
    input_dim : int
        Channels of the summary.
    num_experts : int
        Size of the pool.
    hidden_dim : int, optional
        Hidden width of a two-layer MLP; a single linear layer when None.
    **kwargs
        See :class:`Router`.

    Example
    -------
    >>> router = DataDependentRouter(8, 4, top_k=2)
    >>> router(torch.randn(5, 8)).experts.shape
    torch.Size([5, 2])
    """

    def __init__(
        self, input_dim: int, num_experts: int, hidden_dim: Optional[int] = None, **kwargs
    ):
        super().__init__(num_experts, **kwargs)
        if hidden_dim is None:
            self.net = nn.Linear(input_dim, num_experts)
        else:
            self.net = nn.Sequential(
                nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_experts)
            )

    def logits(self, summary, task_ids, batch):
        """MLP of the summary."""
        if summary is None:
            raise ValueError("DataDependentRouter needs the pooled base features (summary)")
        return self.net(summary.to(next(self.net.parameters()).dtype))


class HybridRouter(Router):
    """Sum of data-independent and data-dependent logits (MoWE's combination).

    Example
    -------
    >>> router = HybridRouter(8, 3, num_tasks=2, top_k=1)
    >>> router(torch.randn(2, 8), task_ids=torch.tensor([0, 1])).gates.shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        input_dim: int,
        num_experts: int,
        num_tasks: int = 1,
        hidden_dim: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(num_experts, **kwargs)
        self.independent = DataIndependentRouter(num_experts, num_tasks=num_tasks)
        self.dependent = DataDependentRouter(input_dim, num_experts, hidden_dim=hidden_dim)

    def logits(self, summary, task_ids, batch):
        """Both logits, summed."""
        return self.independent.logits(summary, task_ids, batch) + self.dependent.logits(
            summary, task_ids, batch
        )


class InstructionRouter(Router):
    """Logits from the embedding of the instruction, optionally plus the audio's.

    The prompt-aware choice of encoders of PaM (arXiv 2502.15178): the router
    reads what is asked (the mean input embedding of the chat-templated
    instruction, :meth:`~speechbrain_mowe.lobes.LanguageModel.prompt_embedding`)
    instead of a task id, so a free-form instruction needs no task at
    inference, and paraphrases of an instruction, whose embeddings are close,
    route like it.

    Arguments
    ---------
    instruction_dim : int
        Width of the instruction embedding (the LLM's).
    num_experts : int
        Size of the pool.
    audio_dim : int, optional
        With it, a data-dependent term on the pooled base features is added
        (:class:`DataDependentRouter`).
    hidden_dim : int, optional
        Hidden width of two-layer MLPs; single linear layers when None.
    **kwargs
        See :class:`Router`.

    Example
    -------
    >>> router = InstructionRouter(16, 3, audio_dim=8, top_k=1)
    >>> router(torch.randn(2, 8), instruction=torch.randn(2, 16)).experts.shape
    torch.Size([2, 1])
    """

    reads_instruction = True

    def __init__(
        self,
        instruction_dim: int,
        num_experts: int,
        audio_dim: Optional[int] = None,
        hidden_dim: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(num_experts, **kwargs)
        self.norm = nn.LayerNorm(instruction_dim)
        self.instruction = DataDependentRouter(instruction_dim, num_experts, hidden_dim=hidden_dim)
        self.dependent = (
            None if audio_dim is None
            else DataDependentRouter(audio_dim, num_experts, hidden_dim=hidden_dim)
        )  # fmt: skip

    def logits(self, summary, task_ids, batch, instruction=None):
        """Of the instruction (and of the audio summary)."""
        if instruction is None:
            raise ValueError("InstructionRouter needs the instruction's embedding (instruction=)")
        instruction = self.norm(instruction.to(self.norm.weight.dtype))
        logits = self.instruction.logits(instruction, task_ids, batch)
        if self.dependent is not None:
            logits = logits + self.dependent.logits(summary, task_ids, batch)
        return logits


#: The routers :func:`build_router` makes, by name (``none``: every expert, gate 1).
ROUTER_KINDS = ("none", "independent", "dependent", "hybrid", "instruction",
                "instruction_dependent")  # fmt: skip


def build_router(
    kind: str,
    input_dim: int,
    num_experts: int,
    num_tasks: int = 1,
    hidden_dim: Optional[int] = None,
    instruction_dim: Optional[int] = None,
    **kwargs,
) -> Optional[Router]:
    """A router chosen by name, for YAML that compares routers with one setting.

    Arguments
    ---------
    kind : str
        ``independent`` (per task), ``dependent`` (on the base features),
        ``hybrid`` (both), ``instruction`` (on the instruction's embedding),
        ``instruction_dependent`` (on both the instruction and the base
        features) or ``none`` (None: every expert runs with gate 1).
    input_dim, num_experts, num_tasks, hidden_dim
        As the routers take them (each uses those it needs).
    instruction_dim : int, optional
        Width of the instruction embedding (the LLM's; see
        :func:`~speechbrain_mowe.lobes.language_model.embedding_width`), for
        the ``instruction`` kinds.
    **kwargs
        See :class:`Router`.

    Example
    -------
    >>> type(build_router("hybrid", 8, 3, num_tasks=2)).__name__
    'HybridRouter'
    >>> build_router("none", 8, 3) is None
    True
    >>> build_router("learned", 8, 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    ValueError: Unknown router 'learned'; the routers are none, independent, dependent, hybrid, ...
    """
    if kind == "none":
        return None
    if kind == "independent":
        return DataIndependentRouter(num_experts, num_tasks=num_tasks, **kwargs)
    if kind == "dependent":
        return DataDependentRouter(input_dim, num_experts, hidden_dim=hidden_dim, **kwargs)
    if kind == "hybrid":
        return HybridRouter(input_dim, num_experts, num_tasks, hidden_dim=hidden_dim, **kwargs)
    if kind in ("instruction", "instruction_dependent"):
        if instruction_dim is None:
            raise ValueError(f"router '{kind}' needs instruction_dim (the LLM's width)")
        audio_dim = input_dim if kind == "instruction_dependent" else None
        return InstructionRouter(instruction_dim, num_experts, audio_dim, hidden_dim, **kwargs)
    raise ValueError(f"Unknown router '{kind}'; the routers are {', '.join(ROUTER_KINDS)}")
