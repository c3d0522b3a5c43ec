"""seam-lightning: PyTorch Lightning modules for RLHF (SFT, reward model, PPO) with SEAM data selection."""

import torch

from seam_lightning.data import DataError, DataSource, RLHFDataModule
from seam_lightning.models import DEFAULT_MODEL, LoRASettings, load_policy, load_reward_model, load_tokenizer
from seam_lightning.modules import PPOModule, RewardModule, SFTModule
from seam_lightning.rl import SamplingSettings
from seam_lightning.seam import ContrastSource, PromptFilter, SeamCallback

__version__ = "0.1.0"

# Checkpoints store the modules' and data module's init arguments; let these
# plain config types through torch.load(weights_only=True), so checkpoints load
# without trusting arbitrary pickles.
torch.serialization.add_safe_globals([DataSource, LoRASettings, SamplingSettings])

__all__ = [
    "DEFAULT_MODEL",
    "DataError",
    "ContrastSource",
    "DataSource",
    "LoRASettings",
    "PPOModule",
    "PromptFilter",
    "RLHFDataModule",
    "RewardModule",
    "SFTModule",
    "SamplingSettings",
    "SeamCallback",
    "load_policy",
    "load_reward_model",
    "load_tokenizer",
]
