"""Checkpoints that are either the old file or the complete new one, never half of one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seam_lightning.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write a checkpoint to a temporary file beside its final path, fsync it, then rename it into place.

    A process killed while saving leaves the previous ``last.ckpt`` intact (Lightning's
    default writes through a temporary file elsewhere and copies it when that is another
    file system). Remote paths (``s3://`` …) fall back to Lightning's own writer.

    The ``seam-lightning`` command uses it by default; in your own Trainer:
    ``Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local paths, got {storage_options!r}")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

