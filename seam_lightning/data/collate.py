"""Batching: padding with an explicit side, loss masks and the metadata each stage needs.

Training batches are right-padded; RL prompt batches are left-padded so that
generation appends after the last real token. Rewards and log-probs never
depend on the side (see :mod:`seam_lightning.models.forward`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

IGNORE_INDEX = -100


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


def collate_sft(examples: list[dict[str, Any]], pad_id: int) -> dict[str, Tensor]:
    """Prompt+response sequences, right-padded, with labels only on response tokens."""
    input_ids, attention_mask = pad([e["prompt_ids"] + e["response_ids"] for e in examples], pad_id, "right")
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    for row, e in enumerate(examples):
        labels[row, : len(e["prompt_ids"])] = IGNORE_INDEX
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "ids": _ids(examples)}


def collate_preference(examples: list[dict[str, Any]], pad_id: int) -> dict[str, Tensor]:
    """Chosen then rejected sequences in one right-padded [2B, T] batch (one forward pass for both)."""
    chosen = [e["prompt_ids"] + e["chosen_ids"] for e in examples]
    rejected = [e["prompt_ids"] + e["rejected_ids"] for e in examples]
    input_ids, attention_mask = pad(chosen + rejected, pad_id, "right")
    return {"input_ids": input_ids, "attention_mask": attention_mask, "ids": _ids(examples)}


def collate_rl(examples: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Left-padded prompts for generation, with ids and texts (the golden response is for SEAM)."""
    input_ids, attention_mask = pad([e["prompt_ids"] for e in examples], pad_id, "left")
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "ids": _ids(examples),
        "instruction": [e["instruction"] for e in examples],
        "response": [e["response"] for e in examples],
    }


def _ids(examples: list[dict[str, Any]]) -> Tensor:
    return torch.tensor([e["id"] for e in examples], dtype=torch.long)
