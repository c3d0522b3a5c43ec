"""Batched, padding-safe forward passes under a token budget.

Rows are grouped longest first so that rows × longest length stays within a
token budget, padded, run, and the per-row values come back in input order.
``run_prompts`` + ``run_continuations`` share each prompt's key/value cache
between its continuations (:mod:`seam_lightning.models.prefix`), and their
``_sharing`` forms also share the bottom blocks two models compute alike
(:mod:`seam_lightning.models.frozen_blocks`);
``run_sequences`` runs whole sequences. SEAM scoring, the perplexity baseline
and the adversarial source's reward wrapper all use them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from seam_lightning.models.padding import IGNORE_INDEX, pad
from seam_lightning.models.frozen_blocks import FrozenBlocks
from seam_lightning.models.prefix import (
    PromptStates,
    concat_prompt_states,
    continuation_below,
    encode_prompts,
    encode_prompts_sharing,
)


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id (EOS when the tokenizer has none; masks make its value irrelevant)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def run_prompts(model: nn.Module, prompts: list[list[int]], pad_id: int, token_budget: int
                ) -> tuple[PromptStates, list[int]]:
    """Key/value states of every prompt (left-padded, token-budget batches) and, per prompt, its row in them."""
    states, rows = _prompt_batches(model, prompts, pad_id, token_budget,
                                   lambda ids, mask: [encode_prompts(model, ids, mask)])
    return states[0], rows


def run_prompts_sharing(models: list[tuple[nn.Module, FrozenBlocks]], prompts: list[list[int]], pad_id: int,
                        token_budget: int) -> tuple[list[PromptStates], list[int]]:
    """:func:`run_prompts` for models whose bottom blocks compute alike (each with its FrozenBlocks from
    :func:`~seam_lightning.models.frozen_blocks.shared_frozen_blocks`): those blocks run once per batch."""
    return _prompt_batches(models[0][0], prompts, pad_id, token_budget,
                           lambda ids, mask: encode_prompts_sharing(models, ids, mask))


def _prompt_batches(model: nn.Module, prompts: list[list[int]], pad_id: int, token_budget: int,
                    encode: Callable[[Tensor, Tensor], list[PromptStates]]) -> tuple[list[PromptStates], list[int]]:
    device = next(model.parameters()).device
    parts, row_of = [], [0] * len(prompts)
    row = 0
    for batch in token_budget_batches([len(p) for p in prompts], token_budget):
        ids, mask = pad([prompts[i] for i in batch], pad_id, "left")
        parts.append(encode(ids.to(device), mask.to(device)))
        for i in batch:
            row_of[i], row = row, row + 1
    return [concat_prompt_states([part[m] for part in parts]) for m in range(len(parts[0]))], row_of


def run_continuations(model: nn.Module, fn: Callable[..., Tensor], states: PromptStates, rows: list[int],
                      continuations: list[list[int]], pad_id: int, token_budget: int) -> list[float]:
    """``fn(model, states, rows, ids, mask)`` over right-padded continuations in token-budget batches.

    Continuation i reads the cache of prompt ``rows[i]``; values come back in input order.
    """
    device = next(model.parameters()).device
    out = [math.nan] * len(continuations)
    for batch in token_budget_batches([len(c) for c in continuations], token_budget):
        ids, mask = pad([continuations[i] for i in batch], pad_id, "right")
        batch_rows = torch.tensor([rows[i] for i in batch], device=device)
        for i, value in zip(batch, fn(model, states, batch_rows, ids.to(device), mask.to(device)).tolist()):
            out[i] = value
    return out


@dataclass
class SharingModel:
    """One of the models :func:`run_continuations_sharing` runs: ``fn(model, states, rows, ids, mask) -> [rows]``
    on the continuations ``wanted`` marks (all when None), its blocks above ``frozen.index`` its own."""

    model: nn.Module
    frozen: FrozenBlocks
    fn: Callable[..., Tensor]
    states: PromptStates
    wanted: list[bool] | None = None


def run_continuations_sharing(models: list[SharingModel], rows: list[int], continuations: list[list[int]],
                              pad_id: int, token_budget: int) -> list[list[float]]:
    """:func:`run_continuations` for models whose bottom blocks compute alike, over one set of continuations.

    Per batch the shared blocks run once, for every row and column any model needs (the
    first model's blocks, reading the prompts' lower layers, the same for all); then each
    model runs its own blocks above on its rows, starting from their output. Values per
    model in input order, NaN where it was not wanted.
    """
    first = models[0]
    device = next(first.model.parameters()).device
    out = [[math.nan] * len(continuations) for _ in models]
    for batch in token_budget_batches([len(c) for c in continuations], token_budget):
        ids, mask = (t.to(device) for t in pad([continuations[i] for i in batch], pad_id, "right"))
        batch_rows = torch.tensor([rows[i] for i in batch], device=device)
        below = continuation_below(first.model, first.frozen, first.states, batch_rows, ids, mask)
        for values, sharing in zip(out, models):
            picked = [j for j, i in enumerate(batch) if sharing.wanted is None or sharing.wanted[i]]
            if not picked:
                continue
            index = torch.tensor(picked, device=device)
            width = int(mask[index].sum(-1).max())  # the batch's longest row may not be one of these
            with sharing.frozen.replay(below[index], leading_columns=True):
                result = sharing.fn(sharing.model, sharing.states, batch_rows[index], ids[index, :width],
                                    mask[index, :width])
            for j, value in zip(picked, result.tolist()):
                values[batch[j]] = value
    return out


def run_sequences(model: nn.Module, fn: Callable[..., Tensor], sequences: list[list[int]], pad_id: int,
                  padding_side: str, token_budget: int, labels: list[list[int]] | None = None) -> list[float]:
    """``fn(model, ids, mask[, labels]) -> [rows]`` over whole sequences in token-budget batches; input order."""
    device = next(model.parameters()).device
    out = [math.nan] * len(sequences)
    for batch in token_budget_batches([len(s) for s in sequences], token_budget):
        ids, mask = pad([sequences[i] for i in batch], pad_id, padding_side)
        args = [ids.to(device), mask.to(device)]
        if labels is not None:
            args.append(pad([labels[i] for i in batch], IGNORE_INDEX, padding_side)[0].to(device))
        for i, value in zip(batch, fn(model, *args).tolist()):
            out[i] = value
    return out


def default_token_budget(device: torch.device) -> int:
    """Tokens per forward pass: large batches feed a GPU; a CPU is fastest with batches that stay in cache.

    Measured with ``python scripts/bench_seam.py --sweep --repeats 3`` (default 135M model,
    bf16 weights, 4 prompts x 30 candidates, 2 AVX-512 cores; medians): 512 tokens per pass
    score in 4.96 s, 256 in 5.75 s, 1024 in 5.69 s, 2048 in 6.92 s.
    """
    return 16384 if device.type == "cuda" else 512


def token_budget_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices grouped longest first so that rows × longest length <= token_budget (at least one row each).

    Sorting by length keeps padding small; ties keep input order, so batches are deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        # Lengths only decrease, so the first row of a batch sets its padded width.
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put models in eval mode and restore each submodule's own previous mode afterwards.

    Restoring per submodule (not ``model.train(previous)``) keeps mixed states intact,
    e.g. a frozen part a training module deliberately keeps in eval.
    """
    previous = {m: m.training for model in models for m in model.modules()}
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, training in previous.items():
            module.training = training
