"""What the SFT and reward-model modules share: optimiser, small checkpoints, export.

Checkpoints keep only trainable weights; the frozen bases they were trained on top
of are reloaded from their sources. So that a resumed run cannot silently continue
on other bases (e.g. ``runs/sft/export`` rebuilt in the meantime), a checkpoint
records a fingerprint of each (``checkpoint["provenance"]``), compared on load,
and its trainable keys must be exactly the module's own (see
:func:`check_trainable_keys`). PPOModule uses the same helpers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from seam_lightning.models.fingerprint import frozen_fingerprint
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

    Resuming checks that the rebuilt base is the one the checkpoint was trained on
    (a ValueError otherwise; ``allow_changed_bases=True`` makes it a warning) and
    that the checkpoint holds exactly this module's trainable weights.
    """

    def __init__(self, load_model: Callable[[], torch.nn.Module], learning_rate: float, weight_decay: float,
                 warmup_steps: int, export_dir: str | None, allow_changed_bases: bool = False):
        super().__init__()
        self.load_model = load_model
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.export_dir = export_dir
        self.allow_changed_bases = allow_changed_bases
        self.model: torch.nn.Module | None = None
        # Frozen base weights are not in our checkpoints, so Lightning's strict loading would
        # miss them; on_load_checkpoint checks the trainable keys strictly instead.
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

    def frozen_bases(self) -> dict[str, FrozenBase]:
        """The models whose frozen weights this module's checkpoints depend on: the model's base.

        Its trained copies of fully trained modules (e.g. a reward model's head) are what
        the run reads, so peft's frozen originals of those are left out.
        """
        source = str(self.hparams.get("model", type(self).__name__))
        return {"model": FrozenBase(source, self.model, with_replaced_originals=False)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = drop_frozen_parameters(checkpoint["state_dict"], self)
        checkpoint["provenance"] = record_provenance(self.frozen_bases())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs after configure_model (in the Trainer and in load_from_checkpoint), so the bases are built.
        check_trainable_keys(self, checkpoint["state_dict"])
        check_provenance(type(self).__name__, checkpoint.get("provenance"), record_provenance(self.frozen_bases()),
                         self.allow_changed_bases)

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


def check_trainable_keys(module: nn.Module, state_dict: dict[str, Any]) -> None:
    """Raise unless ``state_dict`` has exactly the keys ``module`` would checkpoint (its own minus frozen ones).

    Modules load with ``strict_loading=False`` because frozen weights are not in their
    checkpoints; without this check a checkpoint of other LoRA settings would load
    without a word, leaving the module's own adapters as freshly initialised.
    """
    expected = set(drop_frozen_parameters(module.state_dict(), module))
    missing, unexpected = sorted(expected - state_dict.keys()), sorted(state_dict.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"{type(module).__name__}: the checkpoint's trainable weights are not this module's: "
            f"missing: {_some(missing)}; unexpected: {_some(unexpected)}. The LoRA settings (r, target modules, "
            "layers) or the models (e.g. full fine-tuning against LoRA) differ from the run that wrote it.")


def _some(keys: list[str], shown: int = 5) -> str:
    """``keys`` for a message: how many, and the first few."""
    if not keys:
        return "none"
    more = f", … ({len(keys) - shown} more)" if len(keys) > shown else ""
    return f"{len(keys)} ({', '.join(keys[:shown])}{more})"


@dataclass(frozen=True)
class FrozenBase:
    """A model whose frozen weights a checkpoint depends on without holding them.

    ``source`` is the name it was loaded from (for messages); ``with_replaced_originals``:
    see :func:`seam_lightning.models.fingerprint.frozen_fingerprint`.
    """

    source: str
    model: nn.Module
    with_replaced_originals: bool = True


def record_provenance(bases: dict[str, FrozenBase]) -> dict[str, dict[str, str]]:
    """name → {"source", "fingerprint"} of each base's frozen weights; a model without frozen weights is left out."""
    provenance = {}
    for name, base in bases.items():
        fingerprint = frozen_fingerprint(base.model, with_replaced_originals=base.with_replaced_originals)
        if fingerprint is not None:
            provenance[name] = {"source": base.source, "fingerprint": fingerprint}
    return provenance


def check_provenance(owner: str, saved: dict[str, dict[str, str]] | None, current: dict[str, dict[str, str]],
                     allow_changed: bool) -> None:
    """Raise (warn, with ``allow_changed``) when the frozen bases differ from those a checkpoint recorded.

    A checkpoint from before provenance was recorded loads with a warning.
    """
    if saved is None:
        rank_zero_warn(f"{owner}: this checkpoint records no fingerprints of the frozen models it was trained on "
                       "(it predates them), so they cannot be checked; resuming anyway")
        return
    changed = [name for name in sorted(saved.keys() | current.keys())
               if _fingerprint(saved, name) != _fingerprint(current, name)]
    if not changed:
        return
    lines = "\n".join(f"  {name}: checkpoint {_describe(saved.get(name))}, now {_describe(current.get(name))}"
                      for name in changed)
    message = (
        f"{owner}: the frozen weights of {', '.join(changed)} differ from those the checkpoint was trained on:\n"
        f"{lines}\nThe checkpoint holds only the weights trained on top of them (adapters, heads); a base rebuilt "
        "since (e.g. runs/sft/export exported again), another model at that source, or other dtype/quantization "
        "settings give this.")
    if allow_changed:
        rank_zero_warn(f"{message} Resuming anyway (allow_changed_bases=True).")
        return
    raise ValueError(f"{message}\nTo resume on the new weights anyway, pass allow_changed_bases=True "
                     "(in the CLI: --model.allow_changed_bases true).")


def _fingerprint(provenance: dict[str, dict[str, str]], name: str) -> str | None:
    entry = provenance.get(name)
    return None if entry is None else entry["fingerprint"]


def _describe(entry: dict[str, str] | None) -> str:
    if entry is None:
        return "none (no frozen weights)"
    return f"{entry['source']!r} (fingerprint {entry['fingerprint'][:12]})"


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
