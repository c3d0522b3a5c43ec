"""Scoring RL prompts with SEAM: the models' side of the formula in :mod:`seam_lightning.seam.score`.

For each prompt (I, r) and its candidates r*_1..r*_N the scorer needs the PM's
summed log-prob and token count of every r* and the RM's reward of every I∘r*
and of I∘r. Sequences are built exactly as training builds them (prompt ids +
response ids, EOS included), packed into batches by a token budget, and run
under inference mode with padding-safe forwards, so the numbers do not depend
on batch size, padding side or candidate order.

With a decoder-only model each prompt runs once and its key/value cache serves
all its candidates (:mod:`seam_lightning.models.prefix`); other models run every
prompt∘candidate in full. Both give the same numbers.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from seam_lightning.data.collate import IGNORE_INDEX
from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.models.attention import attention_implementation, scoring_attention
from seam_lightning.models.batching import (
    SharingModel,
    default_token_budget,
    eval_mode,
    pad_id_of,
    run_continuations,
    run_continuations_sharing,
    run_prompts,
    run_prompts_sharing,
    run_sequences,
)
from seam_lightning.models.forward import response_logprob_sums, sequence_rewards
from seam_lightning.models.frozen_blocks import FrozenBlocks, shared_frozen_blocks
from seam_lightning.models.prefix import continuation_logprob_sums, continuation_rewards, supports_prefix_sharing
from seam_lightning.seam.score import seam_score

log = logging.getLogger(__name__)

GOLDEN = -1
"""Candidate index used internally for the golden response."""


@dataclass(frozen=True)
class SeamExample:
    """One RL prompt to score: instruction, golden response r and candidates r*_1..r*_N (may be empty)."""

    id: int
    instruction: str
    response: str
    candidates: list[str]


@dataclass(frozen=True)
class SeamResult:
    """SEAM of one prompt (larger = worse PM–RM fit) and the per-candidate numbers, in input order."""

    id: int
    seam: float
    golden_reward: float
    candidate_rewards: list[float]
    candidate_logprob_sums: list[float]
    candidate_lengths: list[int]
    candidates: list[str] = field(default_factory=list)  # the texts r*, for reports and the scores file


@dataclass(frozen=True)
class _Encoded:
    """Token ids of one example under one tokenizer."""

    prompt: list[int]
    golden: list[int]
    candidates: list[list[int]]


class SeamScorer:
    """Scores RL prompts with SEAM: PM log-likelihood and RM reward of each candidate, RM reward of the golden response.

    ``policy`` is a causal LM and ``reward_model`` a scalar-head model (either may
    be peft-wrapped); each runs on its own device. ``reward_tokenizer`` defaults
    to ``tokenizer``. Sequences are padded on each tokenizer's ``padding_side``.
    A batch holds at most ``token_budget`` tokens (rows × padded length, at least
    one row; a shared prompt's cache comes on top); the default suits the policy's
    device (see :func:`default_token_budget`);
    ``prompts_per_chunk`` prompts are tokenized and scored together, so memory
    does not grow with the dataset. ``share_prompts=False`` forces full
    prompt∘response forwards (for comparison; the results are the same).
    When PM and RM share their bottom blocks (the same frozen weights below their
    adapters, e.g. both LoRA-tuned on the top blocks of one base, or merged exports of
    such; checked on the weights and bitwise on a forward), those blocks run once for
    both; ``share_frozen_blocks=False`` runs each model in full (same numbers up to rounding).
    ``attn_implementation`` is the attention both models compute with while scoring
    (their own before and after): ``"auto"`` picks by device (:func:`scoring_attention`:
    seam_grouped on a CPU, the model's own on a GPU), ``None`` keeps the model's own,
    or a name (``"sdpa"``, ``"eager"``, ``"seam_grouped"``). All give the same numbers
    up to rounding.
    """

    def __init__(
        self,
        policy: nn.Module,
        reward_model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        reward_tokenizer: PreTrainedTokenizerBase | None = None,
        max_instruction_tokens: int = 128,
        max_response_tokens: int = 192,
        token_budget: int | None = None,
        prompts_per_chunk: int = 64,
        progress: bool = True,
        share_prompts: bool = True,
        share_frozen_blocks: bool = True,
        template: str | None = None,
        system_prompt: str | None = None,
        attn_implementation: str | None = "auto",
    ):
        if token_budget is None:
            token_budget = default_token_budget(next(policy.parameters()).device)
        for name, value in (("max_instruction_tokens", max_instruction_tokens), ("max_response_tokens", max_response_tokens),
                            ("token_budget", token_budget), ("prompts_per_chunk", prompts_per_chunk)):
            if value < 1:
                raise ValueError(f"SeamScorer: {name} must be >= 1, got {value}")
        self.policy = policy
        self.reward_model = reward_model
        self.policy_format = PromptFormatter(tokenizer, max_instruction_tokens, max_response_tokens,
                                             template, system_prompt)
        same = reward_tokenizer is None or reward_tokenizer is tokenizer
        # One formatter for both models when they share a tokenizer: each text is tokenized once.
        self.reward_format = self.policy_format if same else PromptFormatter(
            reward_tokenizer, max_instruction_tokens, max_response_tokens, template, system_prompt
        )
        self.token_budget = token_budget
        self.prompts_per_chunk = prompts_per_chunk
        self.progress = progress
        self.share_prompts = share_prompts
        self.share_frozen_blocks = share_frozen_blocks
        self.attn_implementation = attn_implementation

    def score(self, examples: Iterable[SeamExample], total: int | None = None) -> Iterator[SeamResult]:
        """Stream results in input order.

        Models are in eval mode (and inference mode) only while a chunk is being
        scored; their previous modes are restored before its results are yielded.
        Which bottom blocks PM and RM share is found at the first chunk: the weights
        do not change while one call scores.
        """
        if total is None and hasattr(examples, "__len__"):
            total = len(examples)
        bar = tqdm(total=total, disable=not self.progress, desc="SEAM", unit="prompt")
        iterator = iter(examples)
        found: dict[str, tuple[FrozenBlocks, FrozenBlocks] | None] = {}
        try:
            while chunk := list(islice(iterator, self.prompts_per_chunk)):
                results = self._score_chunk(chunk, found)
                bar.update(len(chunk))
                yield from results
        finally:
            bar.close()

    def _score_chunk(self, chunk: list[SeamExample], found: dict) -> list[SeamResult]:
        pm = [_encode(self.policy_format, ex) for ex in chunk]
        rm = pm if self.reward_format is self.policy_format else [_encode(self.reward_format, ex) for ex in chunk]
        with torch.inference_mode(), eval_mode(self.policy, self.reward_model), \
                self._attention(self.policy), self._attention(self.reward_model):
            if "blocks" not in found:  # checked with the attention and modes the scoring uses
                found["blocks"] = self._shared_blocks()
            shared = found["blocks"]
            if shared is not None:
                logprobs, rewards = self._scores_sharing_blocks(pm, *shared)
            else:
                logprobs, rewards = self._policy_logprob_sums(pm), self._rewards(rm)
        results = []
        for ex, enc, lp, rw in zip(chunk, pm, logprobs, rewards):
            _check_finite_scores(ex.id, "policy log-prob", lp)
            _check_finite_scores(ex.id, "reward", rw)
            lengths = [len(c) for c in enc.candidates]
            candidate_rewards = [rw[c] for c in range(len(ex.candidates))]
            results.append(SeamResult(
                id=ex.id, seam=_seam(lp, lengths, candidate_rewards, rw[GOLDEN]), golden_reward=rw[GOLDEN],
                candidate_rewards=candidate_rewards, candidate_logprob_sums=[lp[c] for c in range(len(lengths))],
                candidate_lengths=lengths, candidates=list(ex.candidates),
            ))
        return results

    def _attention(self, model: nn.Module) -> AbstractContextManager:
        name = scoring_attention(model) if self.attn_implementation == "auto" else self.attn_implementation
        return attention_implementation(model, name)

    def _shared_blocks(self) -> tuple[FrozenBlocks, FrozenBlocks] | None:
        """The bottom blocks PM and RM compute alike, when the same token ids go through both with shared prompts."""
        if not (self.share_frozen_blocks and self.share_prompts and self.reward_format is self.policy_format
                and supports_prefix_sharing(self.policy) and supports_prefix_sharing(self.reward_model)):
            return None
        shared = shared_frozen_blocks(self.policy, self.reward_model)
        if shared is not None:
            log.info("SEAM: the PM and the RM share their bottom %d of %d blocks (the same weights); "
                        "they run once for both", shared[0].index, len(shared[0].blocks))
        return shared

    def _scores_sharing_blocks(self, encoded: list[_Encoded], policy_blocks: FrozenBlocks,
                               reward_blocks: FrozenBlocks) -> tuple[list[dict[int, float]], list[dict[int, float]]]:
        """The PM's log-prob sums and the RM's rewards, the bottom blocks they share run once for both."""
        pad_id = pad_id_of(self.policy_format.tokenizer)
        (policy_states, reward_states), row_of = run_prompts_sharing(
            [(self.policy, policy_blocks), (self.reward_model, reward_blocks)], [enc.prompt for enc in encoded],
            pad_id, self.token_budget)
        owners, continuations = [], []
        for e, enc in enumerate(encoded):
            for c, ids in [(GOLDEN, enc.golden), *enumerate(enc.candidates)]:
                owners.append((e, c))
                continuations.append(ids)
        logprobs, rewards = run_continuations_sharing(
            [SharingModel(self.policy, policy_blocks, continuation_logprob_sums, policy_states,
                          wanted=[c != GOLDEN for _, c in owners]),
             SharingModel(self.reward_model, reward_blocks, continuation_rewards, reward_states)],
            [row_of[e] for e, _ in owners], continuations, pad_id, self.token_budget)
        candidates = [i for i, (_, c) in enumerate(owners) if c != GOLDEN]
        return (_regroup(len(encoded), [owners[i] for i in candidates], [logprobs[i] for i in candidates]),
                _regroup(len(encoded), owners, rewards))

    def _policy_logprob_sums(self, encoded: list[_Encoded]) -> list[dict[int, float]]:
        """Per example: candidate index -> summed response-token log-prob under the PM."""
        if self.share_prompts and supports_prefix_sharing(self.policy):
            continuations = [list(enumerate(enc.candidates)) for enc in encoded]
            return self._run_shared(self.policy, self.policy_format.tokenizer, continuation_logprob_sums,
                                    encoded, continuations)
        owners, sequences, labels = [], [], []
        for e, enc in enumerate(encoded):
            for c, response in enumerate(enc.candidates):
                owners.append((e, c))
                sequences.append(enc.prompt + response)
                labels.append([IGNORE_INDEX] * len(enc.prompt) + response)
        values = self._run(self.policy, self.policy_format.tokenizer, response_logprob_sums, sequences, labels)
        return _regroup(len(encoded), owners, values)

    def _rewards(self, encoded: list[_Encoded]) -> list[dict[int, float]]:
        """Per example: candidate index (GOLDEN for r) -> RM reward of prompt∘response."""
        # The golden response is scored once per prompt, by the RM only.
        continuations = [[(GOLDEN, enc.golden), *enumerate(enc.candidates)] for enc in encoded]
        if self.share_prompts and supports_prefix_sharing(self.reward_model):
            return self._run_shared(self.reward_model, self.reward_format.tokenizer, continuation_rewards,
                                    encoded, continuations)
        owners = [(e, c) for e, conts in enumerate(continuations) for c, _ in conts]
        sequences = [encoded[e].prompt + ids for e, conts in enumerate(continuations) for _, ids in conts]
        values = self._run(self.reward_model, self.reward_format.tokenizer, sequence_rewards, sequences)
        return _regroup(len(encoded), owners, values)

    def _run_shared(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, fn: Callable[..., Tensor],
                    encoded: list[_Encoded], continuations: list[list[tuple[int, list[int]]]]) -> list[dict[int, float]]:
        """``fn(model, prompt_states, rows, ids, mask) -> [rows]`` with each prompt run once for all its continuations.

        The chunk's prompts run first, in token-budget batches; then all continuations,
        sorted by length across prompts and batched by the same budget, each row
        reading its own prompt's cache, so padding stays as small as without sharing.
        """
        prompts = [e for e, conts in enumerate(continuations) if conts]
        out: list[dict[int, float]] = [{} for _ in encoded]
        if not prompts:
            return out
        states, rows = run_prompts(model, [encoded[e].prompt for e in prompts], pad_id_of(tokenizer), self.token_budget)
        row_of = dict(zip(prompts, rows))
        owners = [(e, c) for e in prompts for c, _ in continuations[e]]
        values = run_continuations(model, fn, states, [row_of[e] for e, _ in owners],
                                   [ids for e in prompts for _, ids in continuations[e]],
                                   pad_id_of(tokenizer), self.token_budget)
        for (e, c), value in zip(owners, values):
            out[e][c] = value
        return out

    def _run(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, fn: Callable[..., Tensor],
             sequences: list[list[int]], labels: list[list[int]] | None = None) -> list[float]:
        return run_sequences(model, fn, sequences, pad_id_of(tokenizer), getattr(tokenizer, "padding_side", "right"),
                             self.token_budget, labels)


def _encode(formatter: PromptFormatter, example: SeamExample) -> _Encoded:
    return _Encoded(
        prompt=formatter.prompt_ids(example.instruction).ids,
        golden=formatter.response_ids(example.response).ids,
        candidates=[formatter.response_ids(c).ids for c in example.candidates],
    )


def _regroup(n: int, owners: list[tuple[int, int]], values: list[float]) -> list[dict[int, float]]:
    grouped: list[dict[int, float]] = [{} for _ in range(n)]
    for (e, c), value in zip(owners, values):
        grouped[e][c] = value
    return grouped


def _check_finite_scores(example_id: int, what: str, values: dict[int, float]) -> None:
    # Golden first: a broken RM shows up there on every prompt.
    for c in sorted(values):
        if not math.isfinite(values[c]):
            where = "golden response" if c == GOLDEN else f"candidate {c}"
            raise ValueError(f"SEAM: non-finite {what} ({values[c]}) for example id {example_id}, {where}")


def _seam(logprob_sums: dict[int, float], lengths: list[int], rewards: list[float], golden: float) -> float:
    """The formula of :func:`seam_score` for one prompt (float64 on CPU)."""
    n = len(lengths)
    value = seam_score(
        torch.tensor([[logprob_sums[c] for c in range(n)]], dtype=torch.float64).reshape(1, n),
        torch.tensor([lengths], dtype=torch.float64).reshape(1, n),
        torch.tensor([rewards], dtype=torch.float64).reshape(1, n),
        torch.tensor([golden], dtype=torch.float64),
    )
    return float(value[0])
