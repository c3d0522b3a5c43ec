"""Frozen weights held in autocast's compute dtype for the length of a block.

Under autocast every linear layer casts its weight to the compute dtype (bf16, fp16)
on each call. Autocast caches that cast only for weights that need a gradient, so a
frozen fp32 weight is cast again at every forward: in generation that is once per
decoded token, and on a CPU those casts took half of the decoding time of a 135M
model. Casting the frozen linear weights once per block instead changes no number:
a linear layer under autocast computes with the rounded weight either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes linear layers in on ``device`` right now, or None when it is off."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _castable(weight: nn.Parameter | None) -> bool:
    """A plain frozen fp32 parameter (not a trainable one, not a quantized weight class)."""
    return type(weight) is nn.Parameter and not weight.requires_grad and weight.dtype == torch.float32


@contextmanager
def frozen_linear_weights_in(dtype: torch.dtype | None, *models: nn.Module) -> Iterator[int]:
    """Hold every frozen fp32 ``nn.Linear`` weight and bias of ``models`` as a ``dtype`` copy inside the block.

    Yields the number of tensors swapped, and puts the original parameters back on exit (also
    on an error). Left alone: trainable parameters (LoRA adapters, value heads) and quantized
    weights (their own parameter classes). An output head tied to the input embedding gets
    its own copy on the head only: the embedding lookup is not autocast, so its table stays
    the fp32 original, and the tie is whole again on exit. (Left tied, the head's 49k × 576
    table was cast again at every decoded token: a fifth of SmolLM2's bf16 decoding time.)
    With ``dtype`` None (autocast off) nothing changes. Costs one ``dtype`` copy of the
    swapped weights while the block runs; the fp32 ones stay, for the optimizer's view of the
    model and for checkpoints.
    """
    if dtype is None:
        yield 0
        return
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    seen: set[int] = set()
    copies: dict[int, nn.Parameter] = {}  # a weight shared by several layers is copied once
    try:
        for model in models:
            for module in model.modules():
                if not isinstance(module, nn.Linear) or id(module) in seen:
                    continue
                seen.add(id(module))
                for name in ("weight", "bias"):
                    original = getattr(module, name)
                    if _castable(original):
                        if id(original) not in copies:
                            copies[id(original)] = nn.Parameter(original.detach().to(dtype), requires_grad=False)
                        setattr(module, name, copies[id(original)])
                        swapped.append((module, name, original))
        yield len(swapped)
    finally:
        for module, name, original in reversed(swapped):
            setattr(module, name, original)


def frozen_weights_in_trainer_dtype(trainer: Trainer, *models: nn.Module, enabled: bool = True
                                    ) -> AbstractContextManager[int]:
    """:func:`frozen_linear_weights_in` the dtype the Trainer's autocast computes in right now.

    Call it inside the precision plugin's ``forward_context()`` (a ``training_step`` is).
    Nothing is swapped when ``enabled`` is False, when autocast is off (fp32, or bf16
    weights without autocast), or under FSDP, which owns its parameters' storage: a swap
    would be undone at the next unshard.
    """
    dtype = autocast_dtype(trainer.strategy.root_device)
    if not enabled or isinstance(trainer.strategy, FSDPStrategy):
        dtype = None
    return frozen_linear_weights_in(dtype, *models)
