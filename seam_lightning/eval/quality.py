"""Model-side evaluation: a policy's responses, a reward model's scores, and the quality measures built on them.

- Q_RM, `preference_accuracy`: the share of held-out preference pairs the RM orders
  like the labels, P[R(I∘r⁺) > R(I∘r⁻)] (ties count as errors, as in training).
- `match_rate` (paper §4.2, Fig. 4): for responses a and b of two policies to the
  same prompt, how often the RM prefers the one a reference (an LLM judge or a
  gold RM) prefers: the RM and PM fit each other where this is high.

Prompts and responses are tokenized exactly as training tokenizes them
(`PromptFormatter`: chat template, per-field limits, EOS after a response), so a
score here is the score the RM gave during training.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from seam_lightning.data.collate import pad
from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.models.forward import sequence_rewards
from seam_lightning.rl.generation import SamplingSettings, sample_responses
from seam_lightning.models.batching import eval_mode, pad_id_of


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(n: int, batch_size: int, progress: bool, desc: str):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    return tqdm(starts, total=len(starts), desc=desc, unit="batch", disable=not progress)


def _check_texts(**columns: Sequence[str]) -> int:
    """The common length of the text columns; ValueError/TypeError naming the column and index otherwise."""
    lengths = {name: len(texts) for name, texts in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("text lists differ in length: " + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    for name, texts in columns.items():
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"{name}[{bad}] must be a string, got {type(texts[bad]).__name__}")
    return next(iter(lengths.values()), 0)


def generate_responses(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    instructions: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    greedy: bool = True,
    max_instruction_tokens: int = 128,
    progress: bool = True,
    template: str | None = None,
    system_prompt: str | None = None,
) -> list[str]:
    """One response per instruction, decoded up to its first EOS (special tokens skipped).

    Prompts are formatted as in training and left-padded; greedy decoding by default
    (sampling at temperature 1 over the full distribution otherwise, as PPO samples).
    """
    n = _check_texts(instructions=instructions)
    formatter = PromptFormatter(tokenizer, max_instruction_tokens, max_new_tokens, template, system_prompt)
    settings = SamplingSettings(max_new_tokens=max_new_tokens)
    device, out = _device(policy), []
    with eval_mode(policy):
        for start in _batches(n, batch_size, progress, "generate"):
            prompts = [formatter.prompt_ids(text).ids for text in instructions[start:start + batch_size]]
            ids, mask = pad(prompts, pad_id_of(tokenizer), "left")
            rollout = sample_responses(policy, ids.to(device), mask.to(device), settings,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id_of(tokenizer),
                                       greedy=greedy)
            # The response mask covers the tokens up to and including the first EOS; the EOS is not text.
            lengths = rollout.lengths - rollout.ended.long()
            out += [tokenizer.decode(tokens[:length].tolist(), skip_special_tokens=True)
                    for tokens, length in zip(rollout.tokens.cpu(), lengths.tolist())]
    return out


@torch.no_grad()
def reward_scores(
    reward_model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    instructions: list[str],
    responses: list[str],
    batch_size: int = 8,
    max_instruction_tokens: int = 128,
    max_response_tokens: int = 192,
    progress: bool = True,
    template: str | None = None,
    system_prompt: str | None = None,
) -> Tensor:
    """R(I∘r) per (instruction, response) pair, float32 on the CPU, in input order.

    Raises FloatingPointError naming the example index where a reward is NaN or infinite.
    """
    n = _check_texts(instructions=instructions, responses=responses)
    formatter = PromptFormatter(tokenizer, max_instruction_tokens, max_response_tokens, template, system_prompt)
    device, parts = _device(reward_model), []
    with eval_mode(reward_model):
        for start in _batches(n, batch_size, progress, "reward"):
            pairs = zip(instructions[start:start + batch_size], responses[start:start + batch_size])
            sequences = [formatter.prompt_ids(i).ids + formatter.response_ids(r).ids for i, r in pairs]
            ids, mask = pad(sequences, pad_id_of(tokenizer), "right")
            parts.append(sequence_rewards(reward_model, ids.to(device), mask.to(device)).float().cpu())
    rewards = torch.cat(parts) if parts else torch.empty(0)
    bad = torch.nonzero(~torch.isfinite(rewards)).flatten().tolist()
    if bad:
        raise FloatingPointError(f"non-finite reward {rewards[bad[0]].item()} for example index {bad[0]} "
                                 f"({len(bad)} non-finite in all; first indices {bad[:10]})")
    return rewards


def preference_accuracy(
    reward_model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    instructions: list[str],
    chosen: list[str],
    rejected: list[str],
    batch_size: int = 8,
    max_instruction_tokens: int = 128,
    max_response_tokens: int = 192,
    progress: bool = True,
    template: str | None = None,
    system_prompt: str | None = None,
) -> float:
    """Q_RM: the share of pairs with R(I∘chosen) > R(I∘rejected); a tie counts as an error."""
    n = _check_texts(instructions=instructions, chosen=chosen, rejected=rejected)
    if n == 0:
        raise ValueError("preference_accuracy needs at least one pair")
    limits = dict(batch_size=batch_size, max_instruction_tokens=max_instruction_tokens,
                  max_response_tokens=max_response_tokens, progress=progress, template=template,
                  system_prompt=system_prompt)
    r_chosen = reward_scores(reward_model, tokenizer, instructions, chosen, **limits)
    r_rejected = reward_scores(reward_model, tokenizer, instructions, rejected, **limits)
    accuracy = MeanMetric()
    accuracy.update((r_chosen > r_rejected).float())
    return float(accuracy.compute())


def reference_preferences(reference_a: Sequence[float | None], reference_b: Sequence[float | None]) -> list[bool | None]:
    """Which of a and b a reference prefers, per pair: True (a), False (b), None (a tie, or a score missing).

    ``reference_a``/``reference_b`` are the reference's scores of the two responses:
    a judge's ratings (None where unparsable) or a gold RM's rewards.
    """
    if len(reference_a) != len(reference_b):
        raise ValueError(f"got {len(reference_a)} reference scores for a but {len(reference_b)} for b")
    return [None if a is None or b is None or a == b else a > b for a, b in zip(reference_a, reference_b)]


def match_rate(
    rewards_a: Sequence[float] | Tensor,
    rewards_b: Sequence[float] | Tensor,
    reference_prefers_a: Sequence[bool | None],
) -> float:
    """The share of pairs where the RM prefers the response the reference prefers (paper §4.2, Fig. 4).

    Pair i holds response a (policy A) and b (policy B) to the same prompt; the RM
    prefers a when rewards_a[i] > rewards_b[i]. Pairs the reference calls a tie
    (``reference_prefers_a[i] is None``, see `reference_preferences`) are excluded;
    an RM tie on a pair the reference decides counts as a mismatch. Raises
    ValueError when no pair is left to compare.
    """
    a = torch.as_tensor(rewards_a, dtype=torch.float64).flatten()
    b = torch.as_tensor(rewards_b, dtype=torch.float64).flatten()
    if not len(a) == len(b) == len(reference_prefers_a):
        raise ValueError(f"got {len(a)} rewards for a, {len(b)} for b and {len(reference_prefers_a)} reference labels")
    kept = [i for i, p in enumerate(reference_prefers_a) if p is not None]
    if not kept:
        raise ValueError(f"no pair to compare: the reference ties all {len(a)} pairs")
    reference = torch.tensor([bool(reference_prefers_a[i]) for i in kept])
    a, b = a[kept], b[kept]
    agree = torch.where(reference, a > b, b > a)
    return float(agree.double().mean())
