"""seam-lightning: PyTorch Lightning modules for RLHF (SFT, reward model, PPO) with SEAM data selection."""

from seam_lightning.data import DataError, DataSource, RLHFDataModule
from seam_lightning.models import DEFAULT_MODEL, LoRASettings, load_policy, load_reward_model, load_tokenizer
from seam_lightning.modules import RewardModule, SFTModule

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DataError",
    "DataSource",
    "LoRASettings",
    "RLHFDataModule",
    "RewardModule",
    "SFTModule",
    "load_policy",
    "load_reward_model",
    "load_tokenizer",
]
