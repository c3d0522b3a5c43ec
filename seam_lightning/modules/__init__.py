"""LightningModules of the RLHF stages."""

from seam_lightning.modules.ppo import PPOModule
from seam_lightning.modules.reward import RewardModule
from seam_lightning.modules.sft import SFTModule

__all__ = ["PPOModule", "RewardModule", "SFTModule"]
