"""Padding token lists into a batch, and the label value that marks a token as not scored."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

IGNORE_INDEX = -100  # a label the losses and log-prob sums skip (prompt tokens, padding)


def pad(sequences: list[list[int]], pad_id: int, side: Literal["left", "right"]) -> tuple[Tensor, Tensor]:
    """Pad token lists to one length: returns ``(input_ids, attention_mask)``, both [B, T] long."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask
