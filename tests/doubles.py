"""Test doubles with real behaviour: a fixed-table candidate source and a minimal RL module."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule

from seam_lightning.models import load_tokenizer
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats


class ListSource(CandidateSource):
    """Candidates from a fixed table: instruction -> answers."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table
        self.calls = 0

    def candidates(self, instructions, responses, num_candidates):
        self.calls += 1
        out = [self.table.get(i, [])[:num_candidates] for i in instructions]
        self.last_stats = CandidateStats.of(out, num_candidates)
        return out

    def config(self):
        return {"class": "ListSource", "table": self.table}  # its candidates are the table


class RLConsumer(LightningModule):
    """A user's own RL module: trains on RL prompt batches and records which ids it saw per epoch."""

    data_stage = "rl"

    def __init__(self, model_dir):
        super().__init__()
        self.tokenizer = load_tokenizer(model_dir)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch["ids"].tolist())
        return (self.weight ** 2).sum() + 0 * batch["input_ids"].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def record_frozen_weight_swaps(monkeypatch) -> list[int]:
    """Record how many tensors each ``frozen_linear_weights_in`` block swaps (the real one still runs)."""
    import contextlib

    import seam_lightning.models.mixed_precision as mixed_precision

    swapped, original = [], mixed_precision.frozen_linear_weights_in

    @contextlib.contextmanager
    def recording(dtype, *models):
        with original(dtype, *models) as n:
            swapped.append(n)
            yield n

    monkeypatch.setattr(mixed_precision, "frozen_linear_weights_in", recording)
    return swapped
