"""Model loading, export and padding-safe forward passes."""

from seam_lightning.models.forward import response_nll, response_token_logprobs, sequence_rewards
from seam_lightning.models.loading import (
    DEFAULT_MODEL,
    LoRASettings,
    export_pretrained,
    load_policy,
    load_reward_model,
    load_tokenizer,
)

__all__ = [
    "DEFAULT_MODEL",
    "LoRASettings",
    "export_pretrained",
    "load_policy",
    "load_reward_model",
    "load_tokenizer",
    "response_nll",
    "response_token_logprobs",
    "sequence_rewards",
]
