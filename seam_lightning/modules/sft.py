"""SFTModule: supervised fine-tuning of the policy on D_p (the paper's first stage)."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
from torchmetrics import MeanMetric

from seam_lightning.models.forward import response_nll
from seam_lightning.models.loading import (
    DEFAULT_MODEL,
    Attention,
    DType,
    LoRASettings,
    Quantization,
    load_policy,
    load_tokenizer,
)
from seam_lightning.modules.base import HFModule, global_token_mean, perplexity


class SFTModule(HFModule):
    """Next-token loss on the response tokens only (the prompt is masked out).

    Args:
        model: hub name, local folder, stage export, or ``bundled:<Name>``.
        lora: LoRA settings (None trains every weight). Paper default: LoRA.
        quantization: ``"4bit"`` / ``"8bit"`` base weights (bitsandbytes), or None.
        dtype: precision of the weights (``float32``, ``bfloat16``, ``float16``); with LoRA the
            frozen base is held at this precision, which is what halves memory (``precision``
            of the Trainer only sets autocast).
        attn_implementation: ``sdpa`` (default), ``eager``, ``seam_grouped`` (grouped-query attention
            that reads the KV cache without copying it, `seam_lightning.models.attention`; the fastest
            on a CPU, see README "Speed"), or ``flash_attention_2`` where installed.
        gradient_checkpointing: recompute block activations in the backward pass (less memory, ~30% slower).
        learning_rate: AdamW learning rate (paper: 1e-4).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps (paper: 10).
        export_dir: where to write the trained model for the next stage (None: no export).
        allow_changed_bases: resume from a checkpoint although the frozen base it was trained on
            now has other weights (e.g. ``runs/sft/export`` rebuilt), with a warning instead of a
            ValueError. Not saved with the hyperparameters, so it never sticks.
    """

    data_stage: ClassVar[str] = "sft"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        lora: LoRASettings | None = LoRASettings(),
        quantization: Quantization | None = None,
        dtype: DType = "float32",
        attn_implementation: Attention = "sdpa",
        gradient_checkpointing: bool = False,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 10,
        export_dir: str | None = None,
        allow_changed_bases: bool = False,
    ):
        load_model = partial(load_policy, model, lora=lora, quantization=quantization, dtype=dtype,
                             attn_implementation=attn_implementation, gradient_checkpointing=gradient_checkpointing)
        super().__init__(load_model, learning_rate, weight_decay, warmup_steps, export_dir, allow_changed_bases)
        self.save_hyperparameters(ignore=["allow_changed_bases"])
        self.tokenizer = load_tokenizer(model)
        self.val_nll = MeanMetric()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        nll_sum, n_tokens = response_nll(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        # The mean over every response token of the global batch, also under DDP.
        loss, global_loss = global_token_mean(self, nll_sum, n_tokens)
        self.log("train/loss", global_loss, prog_bar=True, batch_size=len(batch["ids"]))
        self.log("train/perplexity", perplexity(global_loss), batch_size=len(batch["ids"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        # Reset here, not after compute: a reset inside trainer.validate()'s inference
        # mode would leave inference tensors that a later fit cannot update.
        self.val_nll.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        nll_sum, n_tokens = response_nll(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        # Token-weighted, so the epoch value is the NLL per response token of the whole split.
        self.val_nll.update(nll_sum / n_tokens.clamp(min=1), weight=n_tokens)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_nll.compute()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/perplexity", perplexity(loss))
