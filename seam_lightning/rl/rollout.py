"""What one PPO step knows about its samples before the updates."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from seam_lightning.rl.generation import Responses


@dataclass
class Rollout:
    """One PPO step's samples and everything computed about them before the updates.

    Per-token tensors are [B, R] over the response tokens (``mask`` marks the real
    ones); ``raw_scores`` are the rewards as given, ``scores`` after the EOS penalty,
    normalisation and clipping; ``sequence_kl`` is Σ_t log π/π_ref per response.
    ``policy_prefix`` / ``value_prefix`` [B, T, H] are the input states of the policy's /
    value model's lowest trained block (None where nothing is reused), which every update
    pass starts from instead of running the frozen blocks below it again.
    """

    responses: Responses
    logprobs: Tensor
    values: Tensor
    raw_scores: Tensor
    scores: Tensor
    rewards: Tensor
    advantages: Tensor
    returns: Tensor
    sequence_kl: Tensor
    generation_time: float
    policy_prefix: Tensor | None = None
    value_prefix: Tensor | None = None

    @property
    def mask(self) -> Tensor:
        return self.responses.response_mask

    @property
    def ended(self) -> Tensor:
        return self.responses.ended
