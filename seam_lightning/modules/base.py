"""What the SFT and reward-model modules share: optimiser, small checkpoints, export."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from seam_lightning.models.loading import export_pretrained


def warmup_lambda(warmup_steps: int):
    """LR multiplier: linear warm-up from 1/(warmup_steps+1) to 1, then constant."""
    return lambda step: min(1.0, (step + 1) / (warmup_steps + 1)) if warmup_steps > 0 else 1.0


class HFModule(LightningModule):
    """A LightningModule around one `transformers` model (``self.model``) and its tokenizer.

    The model is built in :meth:`configure_model`, Lightning's hook, so the strategy
    decides where (and in which precision context) it is created; outside a Trainer,
    call ``configure_model()`` to build it. With LoRA, checkpoints keep only the
    trainable weights (the frozen base is reloaded from its source when the model is
    built), so a checkpoint of the default model is a few MB instead of half a GB.
    """

    def __init__(self, load_model: Callable[[], torch.nn.Module], learning_rate: float, weight_decay: float,
                 warmup_steps: int, export_dir: str | None):
        super().__init__()
        self.load_model = load_model
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.export_dir = export_dir
        self.model: torch.nn.Module | None = None
        # Frozen base weights are not in our checkpoints; see on_save_checkpoint.
        self.strict_loading = False

    def configure_model(self) -> None:
        if self.model is None:  # Lightning may call the hook again (a second fit, load_from_checkpoint)
            self.model = self.load_model().train()

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__}: the model has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(self.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = drop_frozen_parameters(checkpoint["state_dict"], self)

    def on_train_end(self) -> None:
        if self.export_dir and self.trainer.is_global_zero:
            path = export_pretrained(self.model, self.tokenizer, self.export_dir)
            rank_zero_info(f"[{type(self).__name__}] exported the trained model to {Path(path).resolve()}")


def drop_frozen_parameters(state_dict: dict[str, Any], module: torch.nn.Module) -> dict[str, Any]:
    """The state dict without frozen parameters: they are reloaded from their source when the module is built.

    With LoRA this keeps a checkpoint of the default model to a few MB (adapters,
    heads, buffers) instead of the whole frozen base.
    """
    frozen = {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    return {k: v for k, v in state_dict.items() if k not in frozen}


def global_token_mean(module: LightningModule, loss_sum: torch.Tensor, count: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A token-mean loss that is right under DDP: (loss to backpropagate, global mean to log).

    DDP averages gradients across ranks, so each rank's mean over its own tokens would
    weight a token by 1/(its rank's token count). Dividing each rank's sum by the
    global count and multiplying by the world size makes the averaged gradient that
    of the mean over every token of the global batch, as in one process.
    """
    trainer = module._trainer
    world = trainer.world_size if trainer is not None else 1
    if world == 1:
        mean = loss_sum / count.clamp(min=1)
        return mean, mean.detach()
    strategy = trainer.strategy
    total = strategy.reduce(count.detach().float(), reduce_op="sum").clamp(min=1)
    global_mean = strategy.reduce(loss_sum.detach(), reduce_op="sum") / total
    return loss_sum * world / total, global_mean


def perplexity(mean_nll: torch.Tensor) -> torch.Tensor:
    """exp of the token-mean NLL, capped so a diverged run logs a number, not inf."""
    return torch.exp(mean_nll.clamp(max=math.log(1e6)))
