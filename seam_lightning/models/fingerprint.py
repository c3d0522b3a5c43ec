"""Short digests of a model's weights: to tell whether two runs hold the same model.

``model_fingerprint`` covers every weight (the SEAM scorer keys its saved progress on
it); ``frozen_fingerprint`` covers only the frozen ones, which is what a checkpoint
of trainable weights depends on without containing it (see
:mod:`seam_lightning.modules.base`).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

_SAMPLE = 4096  # elements hashed per frozen tensor


def model_fingerprint(model: nn.Module) -> str:
    """A digest of a model's weights: every trainable tensor in full, a strided sample of frozen ones.

    Frozen weights only change when a different model is loaded, which the sample
    and the names/shapes catch; trained weights (LoRA adapters, heads) change a little
    at every step, so they are hashed whole.
    """
    digest = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        for name, p in model.named_parameters(remove_duplicate=False):
            _update(digest, name, p)
    return digest.hexdigest()


def frozen_fingerprint(model: nn.Module, with_replaced_originals: bool = True) -> str | None:
    """A digest of the frozen weights of ``model`` alone (a strided sample of each); None when none is frozen.

    It stays the same while a run trains, so a checkpoint can record it and a resumed
    run can tell whether it rebuilt the same base. ``with_replaced_originals=False``
    leaves out the frozen originals of modules peft trains a full copy of
    (``modules_to_save``, e.g. a reward model's score head): a run that only reads the
    trained copy does not depend on them, and a head that is new (a policy loaded as
    a reward model) is drawn at random each time the model is built.
    """
    skipped = () if with_replaced_originals else _replaced_original_prefixes(model)
    digest = hashlib.blake2b(digest_size=16)
    frozen = 0
    with torch.no_grad():
        for name, p in model.named_parameters(remove_duplicate=False):
            if p.requires_grad or name.startswith(skipped):
                continue
            _update(digest, name, p)
            frozen += 1
    return digest.hexdigest() if frozen else None


def _update(digest, name: str, p: torch.Tensor) -> None:
    """Hash a parameter's name, shape, dtype and trainability, then its values (a strided sample if frozen)."""
    digest.update(f"{name}:{tuple(p.shape)}:{p.dtype}:{p.requires_grad}".encode())
    flat = p.detach().reshape(-1)
    if not p.requires_grad:
        flat = flat[:: max(1, flat.numel() // _SAMPLE)]
    digest.update(flat.float().cpu().numpy().tobytes())


def _replaced_original_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Name prefixes of the frozen originals inside peft's ``ModulesToSaveWrapper`` modules."""
    from peft.utils import ModulesToSaveWrapper  # here: importing peft is slow and most callers never get here

    return tuple(f"{name}.original_module." for name, module in model.named_modules()
                 if isinstance(module, ModulesToSaveWrapper))
