"""Sampling responses from a policy for PPO rollouts and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import GenerationConfig


@dataclass(frozen=True)
class SamplingSettings:
    """How responses are sampled during PPO.

    ``top_k=0`` and ``top_p=1.0`` sample from the full distribution (what PPO's
    log-probs assume; the StackLLaMA recipe). ``temperature`` also divides the
    logits of every log-prob PPO computes, so the ratio is taken against the
    distribution that was actually sampled.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.temperature <= 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"invalid sampling settings {self}: need max_new_tokens >= 1, temperature > 0, "
                             "top_k >= 0, 0 < top_p <= 1")


@dataclass
class Responses:
    """Prompts with their sampled responses; every response starts at column ``start``.

    ``response_mask`` [B, R] is 1 on the response tokens up to and including the first
    EOS; ``attention_mask`` [B, start + R] covers the prompt and those tokens only.
    """

    sequences: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    ended: Tensor  # [B] bool: the response stopped with EOS (not at max_new_tokens)
    start: int

    @property
    def tokens(self) -> Tensor:
        return self.sequences[:, self.start:]

    @property
    def lengths(self) -> Tensor:
        return self.response_mask.sum(-1)


@torch.no_grad()
def sample_responses(
    policy: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    settings: SamplingSettings,
    eos_token_id: int,
    pad_token_id: int,
    greedy: bool = False,
) -> Responses:
    """Generate one response per left-padded prompt (sampling, or greedy decoding for evaluation)."""
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=not greedy,
        temperature=settings.temperature if not greedy else None,
        top_k=settings.top_k if not greedy else None, top_p=settings.top_p if not greedy else None,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    sequences = policy.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    start = input_ids.shape[1]
    response = sequences[:, start:]
    is_eos = response == eos_token_id
    ended = is_eos.any(-1)
    # Everything after the first EOS is padding from generate(), whatever its id.
    first_eos = torch.where(ended, is_eos.long().argmax(-1), response.shape[1])
    columns = torch.arange(response.shape[1], device=response.device)
    response_mask = (columns.unsqueeze(0) <= first_eos.unsqueeze(1)).long()
    full_mask = torch.cat([attention_mask.long(), response_mask], dim=1)
    return Responses(sequences, full_mask, response_mask, ended, start)
