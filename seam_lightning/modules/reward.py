"""RewardModule: the pairwise reward model on D_r (the paper's second stage)."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
from torchmetrics import MeanMetric

from seam_lightning.models.forward import sequence_rewards
from seam_lightning.models.loading import (
    Attention,
    DType,
    LoRASettings,
    Quantization,
    check_reward_family,
    load_reward_model,
    load_tokenizer,
)
from seam_lightning.modules.base import HFModule
from seam_lightning.modules.losses import pairwise_ranking_loss, preference_correct


class RewardModule(HFModule):
    """R(I∘r): a scalar head on the last real token, trained with −log σ(R(I∘r⁺) − R(I∘r⁻)) (Eq. 6).

    Args:
        model: the SFT policy to initialise from (its export folder), as in the paper; or any
            hub name / folder / ``bundled:<Name>``. A policy gets a new scalar head.
        lora: LoRA settings (None trains every weight); the head is always trained in full.
        quantization: ``"4bit"`` / ``"8bit"`` base weights (bitsandbytes), or None.
        dtype: precision of the weights (``float32``, ``bfloat16``, ``float16``); with LoRA the
            frozen base is held at this precision, which is what halves memory (``precision``
            of the Trainer only sets autocast).
        attn_implementation: ``sdpa`` (default), ``eager``, ``seam_grouped`` (grouped-query attention
            that reads the KV cache without copying it, `seam_lightning.models.attention`; the fastest
            on a CPU, see README "Speed"), or ``flash_attention_2`` where installed.
        gradient_checkpointing: recompute block activations in the backward pass (less memory, ~30% slower).
        learning_rate: AdamW learning rate (paper: 2e-5).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        export_dir: where to write the trained reward model (None: no export).
        allow_changed_bases: resume from a checkpoint although the frozen base it was trained on
            now has other weights (e.g. ``runs/sft/export`` rebuilt), with a warning instead of a
            ValueError. Not saved with the hyperparameters, so it never sticks.
    """

    data_stage: ClassVar[str] = "preference"

    def __init__(
        self,
        model: str = "runs/sft/export",
        lora: LoRASettings | None = LoRASettings(),
        quantization: Quantization | None = None,
        dtype: DType = "float32",
        attn_implementation: Attention = "sdpa",
        gradient_checkpointing: bool = False,
        learning_rate: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 10,
        export_dir: str | None = None,
        allow_changed_bases: bool = False,
    ):
        load_model = partial(load_reward_model, model, lora=lora, quantization=quantization, dtype=dtype,
                             attn_implementation=attn_implementation, gradient_checkpointing=gradient_checkpointing)
        super().__init__(load_model, learning_rate, weight_decay, warmup_steps, export_dir, allow_changed_bases)
        self.save_hyperparameters(ignore=["allow_changed_bases"])
        check_reward_family(model)  # refuse a family without a scalar-head class now, not at fit
        self.tokenizer = load_tokenizer(model)
        self.val_accuracy = MeanMetric()
        self.val_loss = MeanMetric()

    def pair_rewards(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards of the chosen and the rejected responses of a preference batch."""
        rewards = sequence_rewards(self.model, batch["input_ids"], batch["attention_mask"])
        return rewards.chunk(2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        chosen, rejected = self.pair_rewards(batch)
        loss = pairwise_ranking_loss(chosen, rejected)
        n = len(batch["ids"])
        # Every rank holds the same number of pairs (the sampler pads), so the mean over
        # ranks of these means is the global batch's mean, as DDP's gradient average is.
        self.log("train/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("train/accuracy", preference_correct(chosen, rejected).mean(), prog_bar=True, batch_size=n,
                 sync_dist=True)
        self.log("train/margin", (chosen - rejected).mean().detach(), batch_size=n, sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        # Reset here, not after compute: a reset inside trainer.validate()'s inference
        # mode would leave inference tensors that a later fit cannot update.
        self.val_loss.reset()
        self.val_accuracy.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        chosen, rejected = self.pair_rewards(batch)
        self.val_loss.update(pairwise_ranking_loss(chosen, rejected), weight=len(chosen))
        self.val_accuracy.update(preference_correct(chosen, rejected))

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss.compute())
        self.log("val/accuracy", self.val_accuracy.compute(), prog_bar=True)
