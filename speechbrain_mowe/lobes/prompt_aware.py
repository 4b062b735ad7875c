"""WavLLM's prompt-aware LoRA: the instruction sets how much each LoRA branch adds.

A small adapter reads the mean embedding of an example's prompt (its
instruction, in the chat template) and gives one weight per LoRA branch; the
branch's output is multiplied by it for that example only::

    h = W x + w_i(prompt) * s * B A x        s = lora_alpha / lora_rank

The adapter's last layer starts at zero, so every weight starts at 1 and the
model starts as plain LoRA (a first stage's model is unchanged by adding it).
As each weight depends on its own example's prompt only, an example's output
does not depend on its batch.

Shape legend: ``b`` batch, ``d`` LLM width, ``n`` LoRA branches.
"""

from typing import List, Optional

import torch
from torch import nn


class PromptAwareLoRAWeights(nn.Module):
    """Per-example weights of the LoRA branches from the prompt's mean embedding.

    Arguments
    ---------
    embedding_dim : int
        ``d``, the LLM's embedding width.
    num_branches : int
        ``n``, the LoRA-adapted layers.
    hidden_dim : int
        Width of the adapter's hidden layer.

    Example
    -------
    >>> adapter = PromptAwareLoRAWeights(16, num_branches=4)
    >>> adapter(torch.randn(3, 16))
    tensor([[1., 1., 1., 1.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.]], grad_fn=<MulBackward0>)
    """

    def __init__(self, embedding_dim: int, num_branches: int, hidden_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(embedding_dim),
            nn.Linear(embedding_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, num_branches),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        """``[b, d]`` mean prompt embeddings -> ``[b, n]`` weights in (0, 2)."""
        return 2 * torch.sigmoid(self.net(prompt.to(self.net[1].weight.dtype)))


class BranchScaler:
    """Multiplies each LoRA branch's output by its example's weight.

    Forward hooks on the branches' last layers (peft's ``lora_B``) read the
    weights given by :meth:`use`; a batch that generation expanded (beam
    search repeats each example) repeats them alike.

    Arguments
    ---------
    branches : list of torch.nn.Module
        The modules whose outputs are ``[b, ..., out]`` LoRA branch outputs.
    """

    def __init__(self, branches: List[nn.Module]):
        self.weights: Optional[torch.Tensor] = None
        self.handles = [
            module.register_forward_hook(self._hook(index)) for index, module in enumerate(branches)
        ]

    def use(self, weights: Optional[torch.Tensor]):
        """Sets the ``[b, n]`` weights of the next forward passes (None: none given)."""
        self.weights = weights

    def _hook(self, index: int):
        def scale(module, inputs, output):
            if self.weights is None:
                raise RuntimeError(
                    "prompt-aware LoRA needs the prompt's weights: call the LanguageModel's "
                    "forward or generate, which compute them"
                )
            weight = self.weights[:, index]
            if output.shape[0] != weight.shape[0]:  # beams of each example
                weight = weight.repeat_interleave(output.shape[0] // weight.shape[0])
            return output * weight.to(output.dtype).view(-1, *([1] * (output.dim() - 1)))

        return scale
