"""The losses of the SFT and reward-model stages, as plain tensor functions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pairwise_ranking_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Mean of −log σ(R(I∘r⁺) − R(I∘r⁻)) over pairs (paper Eq. 6; Bradley–Terry)."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def preference_correct(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """1.0 where the chosen response gets the strictly higher reward (ties count as errors)."""
    return (chosen_rewards > rejected_rewards).float()
