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
from contextlib import contextmanager

import torch
from torch import nn


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes linear layers in on ``device`` right now, or None when it is off."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _castable(weight: nn.Parameter | None, embeddings: set[int]) -> bool:
    """A plain frozen fp32 parameter that is not an embedding table (a tied output head shares one)."""
    return (type(weight) is nn.Parameter and not weight.requires_grad and weight.dtype == torch.float32
            and id(weight) not in embeddings)


@contextmanager
def frozen_linear_weights_in(dtype: torch.dtype | None, *models: nn.Module) -> Iterator[int]:
    """Hold every frozen fp32 ``nn.Linear`` weight and bias of ``models`` as a ``dtype`` copy inside the block.

    Yields the number of tensors swapped, and puts the original parameters back on exit (also
    on an error). Left alone: trainable parameters (LoRA adapters, value heads), quantized
    weights (their own parameter classes), and an output head tied to the input embedding
    (the embedding lookup is not autocast, so its table must stay fp32). With ``dtype`` None
    (autocast off) nothing changes. Costs one ``dtype`` copy of the swapped weights while the
    block runs; the fp32 ones stay, for the optimizer's view of the model and for checkpoints.
    """
    if dtype is None:
        yield 0
        return
    embeddings = {id(p) for model in models for m in model.modules() if isinstance(m, nn.Embedding)
                  for p in m.parameters(recurse=False)}
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    seen: set[int] = set()
    try:
        for model in models:
            for module in model.modules():
                if not isinstance(module, nn.Linear) or id(module) in seen:
                    continue
                seen.add(id(module))
                for name in ("weight", "bias"):
                    original = getattr(module, name)
                    if _castable(original, embeddings):
                        setattr(module, name, nn.Parameter(original.detach().to(dtype), requires_grad=False))
                        swapped.append((module, name, original))
        yield len(swapped)
    finally:
        for module, name, original in reversed(swapped):
            setattr(module, name, original)
