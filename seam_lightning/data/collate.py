"""Batching: padding with an explicit side, loss masks and the metadata each stage needs.

Training batches are right-padded; RL prompt batches are left-padded so that
generation appends after the last real token. Rewards and log-probs never
depend on the side (see :mod:`seam_lightning.models.forward`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seam_lightning.models.padding import IGNORE_INDEX, pad  # noqa: F401  (also imported from here)


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
