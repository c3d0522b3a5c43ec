"""ScoringModule: the frozen policy and reward model of a scoring job, for ``Trainer.predict``.

``seam-lightning score`` runs SeamCallback under ``Trainer.predict`` with this module,
so the strategy (DDP on any number of devices and nodes) places and shards the work
exactly as during training. Nothing here trains; ``predict_step`` does nothing, since
the callback scores the whole RL set when prediction starts.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule

from seam_lightning.models.loading import (
    Attention,
    DType,
    Quantization,
    load_policy,
    load_reward_model,
    load_tokenizer,
)


class ScoringModule(LightningModule):
    """π (whose log-likelihoods weight the candidates) and the reward model, frozen.

    Args:
        policy: path, hub name or ``bundled:`` name of the policy (π_SFT in the paper's setup).
        reward_model: path or hub name of the reward model (a sequence classifier with one label).
        dtype: weight precision of both models.
        quantization: ``"4bit"``/``"8bit"`` weights (bitsandbytes, on a GPU), or None.
        attn_implementation: attention of both models.
    """

    data_stage = "rl"  # RLHFDataModule serves the RL prompts

    def __init__(self, policy: str, reward_model: str, dtype: DType = "float32",
                 quantization: Quantization | None = None, attn_implementation: Attention = "sdpa"):
        super().__init__()
        self.save_hyperparameters()
        self.tokenizer = load_tokenizer(policy)
        self.reference_policy = None  # SeamCallback reads the models under these names
        self.reward_model = None

    def configure_model(self) -> None:
        if self.reference_policy is not None:
            return  # Lightning may call the hook again
        settings = dict(dtype=self.hparams.dtype, quantization=self.hparams.quantization,
                        attn_implementation=self.hparams.attn_implementation)
        self.reference_policy = load_policy(self.hparams.policy, **settings).eval().requires_grad_(False)
        self.reward_model = load_reward_model(self.hparams.reward_model, **settings).eval().requires_grad_(False)

    def predict_step(self, batch: Any, batch_idx: int) -> dict:
        return {}  # the scoring happened in SeamCallback.on_predict_start (None would draw a warning)
