"""Reinforcement learning pieces of the PPO stage: the math, sampling, the KL controller, reward statistics."""

from seam_lightning.rl.functional import (
    entropy_from_logits,
    gae,
    kl_penalty,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from seam_lightning.rl.generation import Responses, SamplingSettings, sample_responses
from seam_lightning.rl.kl_controller import AdaptiveKLController, KLController, kl_controller
from seam_lightning.rl.normalization import RunningMoments
from seam_lightning.rl.rollout import Rollout

__all__ = [
    "AdaptiveKLController", "KLController", "Responses", "Rollout", "RunningMoments", "SamplingSettings", "sample_responses", "entropy_from_logits", "gae", "kl_controller",
    "kl_penalty", "masked_mean", "masked_whiten", "policy_loss", "token_rewards", "value_loss",
]
