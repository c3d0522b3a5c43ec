"""SEAM_Adv: candidates r* are worse responses perturbed by a textattack attack until the RM prefers them to r.

For an RL example (I, r) the source takes worse responses for I ("seeds": the
preference data's rejected responses first, then candidates of another source
such as ``ContrastSource``) and attacks each one against the reward model:
the goal is met when R(I∘r*) > R(I∘r) (paper §5.2, §7.1, App. D.2). Every
success is a response the RM misjudges, which is exactly what SEAM measures.

A seed the RM already prefers to r is returned as it is, without an attack: it
is a misjudgement already, and perturbing it would only make it less natural.
Such seeds are counted apart (``AttackStats.already_misjudged``).

The attacks, the reward model wrapped as their victim and the goal function
live in :mod:`seam_lightning.seam.attacks`.

Each attack is seeded from (seed, I, r, seed response), with the global
``random``/NumPy/torch generators restored afterwards, so results do not
depend on batch composition, rank or call order.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from seam_lightning.data.records import DataSource, load_records
from seam_lightning.seam.attacks import (
    ATTACKS,
    AttackName,
    RewardFunction,
    RewardFunctionWrapper,
    RewardModelWrapper,
    RewardWrapper,
    build_attack,
    check_attack_resources,
)
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats, check_request, normalise_whitespace
from seam_lightning.seam.textattack_setup import setup_textattack

log = logging.getLogger(__name__)


# -- the source ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackStats:
    """What the attacks of one `AdversarialSource.candidates` call did.

    seeds: distinct worse responses gathered (rejected + seed source); attacked: attacks run;
    succeeded / failed: their outcomes (failed = query budget spent or search exhausted);
    already_misjudged: seeds the RM already preferred to r, returned as they are (no attack);
    no_seed: prompts that had no seed at all; duplicates: results dropped because the prompt
    already had the same text (or it equals r); queries: RM queries of the attacks.
    Invariants: attacked = succeeded + failed; candidates = succeeded + already_misjudged − duplicates.
    """

    prompts: int
    seeds: int
    attacked: int
    succeeded: int
    failed: int
    already_misjudged: int
    no_seed: int
    duplicates: int
    queries: int
    seconds: float

    @property
    def success_rate(self) -> float:
        """Share of attacks that made the RM prefer the seed to r (nan if none ran)."""
        return self.succeeded / self.attacked if self.attacked else math.nan


@contextmanager
def _seeded(key: str) -> Iterator[None]:
    """Seed random, NumPy and torch's CPU generator from ``key``; restore their states afterwards."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.random.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class AdversarialSource(CandidateSource):
    """SEAM_Adv candidates: worse responses attacked until the reward model prefers them to r.

    Args:
        reward_model: RM name or path (``bundled:...``, hub id, local folder), loaded on first use
            with ``load_reward_model``; leave None to attack the run's RM (``SeamCallback`` offers it
            through :meth:`use_reward_model`) or one given to :meth:`bind`.
        attack: recipe name (see the module docs for what each needs offline).
        seeds: where worse responses to attack come from (e.g. a ``ContrastSource``).
        rejected: preference data (fields ``instruction`` and ``rejected``, mapped through
            ``rejected.fields``); the rejected responses of an instruction are attacked first.
        seeds_per_prompt: seeds tried per prompt (rejected first); default num_candidates.
            More seeds than candidates make up for failed attacks.
        query_budget: RM queries per attacked seed (None = unlimited).
        max_instruction_tokens, max_response_tokens: formatting limits, as the data module's.
        masked_lm: local masked LM for ``bert-attack``.
        embedding: word-vector text file for ``textfooler`` (and ``ga``: embedding swaps
            instead of WordNet synonyms).
        token_budget: tokens per RM forward pass (default: the device's).
        seed: base seed of the attacks' random choices.
        device: where a loaded RM runs (default cuda if available, else cpu).
        progress: show a progress bar.
    """

    def __init__(
        self,
        reward_model: str | None = None,
        attack: AttackName = "deepwordbug",
        seeds: CandidateSource | None = None,
        rejected: DataSource | None = None,
        seeds_per_prompt: int | None = None,
        query_budget: int | None = 200,
        max_instruction_tokens: int = 128,
        max_response_tokens: int = 192,
        masked_lm: str | None = None,
        embedding: str | None = None,
        token_budget: int | None = None,
        seed: int = 0,
        device: str | None = None,
        progress: bool = True,
    ) -> None:
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
        if seeds is None and rejected is None:
            raise ValueError("AdversarialSource needs responses to attack: give rejected=<preference data> "
                             "and/or seeds=<a CandidateSource, e.g. ContrastSource>")
        for name, value in (("seeds_per_prompt", seeds_per_prompt), ("query_budget", query_budget),
                            ("token_budget", token_budget)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        for name, value in (("max_instruction_tokens", max_instruction_tokens),
                            ("max_response_tokens", max_response_tokens)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        check_attack_resources(attack, masked_lm, embedding)  # fail at configuration time, not hours later
        self.reward_model, self.attack, self.seeds, self.rejected = reward_model, attack, seeds, rejected
        self.seeds_per_prompt, self.query_budget = seeds_per_prompt, query_budget
        self.max_instruction_tokens, self.max_response_tokens = max_instruction_tokens, max_response_tokens
        self.masked_lm, self.embedding, self.token_budget = masked_lm, embedding, token_budget
        self.seed, self.device, self.progress = seed, device, progress
        self.last_attack_stats: AttackStats | None = None
        self._wrapper: RewardWrapper | None = None
        self._offered = False  # the victim came from use_reward_model (a later offer replaces it)
        self._attack = None
        self._window = None  # limits attacks to the words the RM reads
        self._rejected: dict[str, list[str]] | None = None

    # -- the victim ----------------------------------------------------------------------

    def bind(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> "AdversarialSource":
        """Attack this already-loaded reward model (e.g. the one a training run holds) instead of loading one."""
        return self.bind_wrapper(RewardModelWrapper(model, tokenizer, self.max_instruction_tokens,
                                                    self.max_response_tokens, self.token_budget))

    def bind_function(self, fn: RewardFunction) -> "AdversarialSource":
        """Attack a reward given as a plain function ``fn(instruction, responses) -> rewards``."""
        return self.bind_wrapper(RewardFunctionWrapper(fn))

    def bind_wrapper(self, wrapper: RewardWrapper) -> "AdversarialSource":
        """Attack any :class:`RewardWrapper` (``bind`` and ``bind_function`` build one)."""
        self._wrapper, self._attack = wrapper, None  # the attack's goal holds the wrapper: rebuilt on use
        self._offered = False
        return self

    def use_reward_model(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
        """Attack the run's reward model, offered by ``SeamCallback`` before each scoring.

        Taken unless ``reward_model=`` names another one or a victim was bound explicitly;
        the same model offered again keeps the attack already built.
        """
        if self.reward_model is not None or (self._wrapper is not None and not self._offered):
            return
        current = self._wrapper
        if isinstance(current, RewardModelWrapper) and current.model is model and current.format.tokenizer is tokenizer:
            return
        self.bind(model, tokenizer)
        self._offered = True

    @property
    def reward_wrapper(self) -> RewardWrapper | None:
        """The victim: the bound or loaded reward model's wrapper (None before either)."""
        return self._wrapper

    def prepare(self) -> None:
        """Load the rejected responses, the reward model (unless bound) and the attack; idempotent."""
        if self._rejected is None and self.rejected is not None:
            table: dict[str, list[str]] = {}
            for record in load_records(self.rejected, ["instruction", "rejected"]):
                answers = table.setdefault(normalise_whitespace(record.text["instruction"]), [])
                if record.text["rejected"] not in answers:
                    answers.append(record.text["rejected"])
            self._rejected = table
        if self._wrapper is None and self.reward_model is not None:
            from seam_lightning.models.loading import load_reward_model, load_tokenizer

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = load_reward_model(self.reward_model).to(device).eval().requires_grad_(False)
            self.bind(model, load_tokenizer(self.reward_model))
        if self._attack is None and self._wrapper is not None:
            setup_textattack()
            from textattack.constraints.pre_transformation import MaxWordIndexModification

            self._window = MaxWordIndexModification(max_length=2**62)
            self._attack = build_attack(self.attack, self._wrapper, self.query_budget, self.masked_lm, self.embedding,
                                        constraints=[self._window])

    # -- candidates --------------------------------------------------------------------------

    def candidates(self, instructions: list[str], responses: list[str], num_candidates: int) -> list[list[str]]:
        """Up to num_candidates successful adversarial responses per example (plus seeds already misjudged)."""
        check_request(instructions, responses, num_candidates)
        self.prepare()
        if self._wrapper is None:
            raise ValueError("AdversarialSource has no reward model: give reward_model=<name or path>, "
                             "use it in a SeamCallback (which offers its RM) or call bind(model, tokenizer) first")
        start = time.perf_counter()
        seeds = self._gather_seeds(instructions, responses, self.seeds_per_prompt or num_candidates)
        counts = dict.fromkeys(("attacked", "succeeded", "failed", "already_misjudged", "duplicates", "queries"), 0)
        results: list[list[str]] = []
        bar = tqdm(total=len(instructions), disable=not self.progress, desc=f"SEAM_Adv ({self.attack})", unit="prompt")
        try:
            for instruction, golden, prompt_seeds in zip(instructions, responses, seeds):
                self._wrapper.set_instruction(instruction)
                found: list[str] = []
                seen = {normalise_whitespace(golden)}
                for seed_text in prompt_seeds:
                    if len(found) == num_candidates:
                        break
                    outcome, text, queries = self._attack_one(instruction, golden, seed_text)
                    counts[outcome] += 1
                    counts["attacked"] += outcome != "already_misjudged"
                    counts["queries"] += queries
                    if text is None:
                        continue
                    if normalise_whitespace(text) in seen:
                        counts["duplicates"] += 1
                    else:
                        seen.add(normalise_whitespace(text))
                        found.append(text)
                results.append(found)
                bar.update(1)
                bar.set_postfix(succeeded=counts["succeeded"], failed=counts["failed"])
        finally:
            bar.close()
            self._wrapper.set_instruction(None)  # drop the last prompt's cached states
        self.last_stats = CandidateStats.of(results, num_candidates)
        self.last_attack_stats = AttackStats(
            prompts=len(instructions), seeds=sum(len(s) for s in seeds), no_seed=sum(not s for s in seeds),
            seconds=time.perf_counter() - start, **counts,
        )
        _log_stats(self.attack, self.last_stats, self.last_attack_stats, num_candidates)
        return results

    def _gather_seeds(self, instructions: list[str], responses: list[str], limit: int) -> list[list[str]]:
        """Per prompt up to ``limit`` distinct worse responses: rejected ones first, then the seed source's."""
        out = []
        for instruction, golden in zip(instructions, responses):
            rejected = (self._rejected or {}).get(normalise_whitespace(instruction), [])
            out.append(_distinct(rejected, {normalise_whitespace(golden)}, limit))
        need = [i for i, s in enumerate(out) if len(s) < limit]
        if self.seeds is not None and need:
            more = self.seeds.candidates([instructions[i] for i in need], [responses[i] for i in need], limit)
            for i, extra in zip(need, more):
                taken = {normalise_whitespace(s) for s in out[i]} | {normalise_whitespace(responses[i])}
                out[i] += _distinct(extra, taken, limit - len(out[i]))
        return out

    def _attack_one(self, instruction: str, golden: str, seed_text: str) -> tuple[str, str | None, int]:
        """(outcome, text to keep or None, RM queries) of one attack on ``seed_text``."""
        from textattack.attack_results import SkippedAttackResult, SuccessfulAttackResult

        visible = self._wrapper.visible_words(seed_text)
        self._window.max_length = 2**62 if visible is None else visible
        with _seeded(f"{self.seed}\0{instruction}\0{golden}\0{seed_text}"):
            result = self._attack.attack(seed_text, golden)
        if isinstance(result, SkippedAttackResult):
            return "already_misjudged", seed_text, result.original_result.num_queries
        queries = result.perturbed_result.num_queries
        if isinstance(result, SuccessfulAttackResult):
            return "succeeded", result.perturbed_result.attacked_text.text, queries
        return "failed", None, queries


def _distinct(texts: Sequence[str], taken: set[str], limit: int) -> list[str]:
    """Up to ``limit`` non-empty texts not in ``taken`` (by normalised text), in order."""
    out = []
    for text in texts:
        key = normalise_whitespace(text)
        if len(out) >= limit:
            break
        if key and key not in taken:
            taken = taken | {key}
            out.append(text)
    return out


def _log_stats(attack: str, stats: CandidateStats, attacks: AttackStats, n: int) -> None:
    log.info(
        "adversarial (%s): %d prompts, %d seeds (%d prompts had none); %d attacks: %d succeeded, %d failed; "
        "%d seeds already misjudged (kept as they are); %d queries in %.1f s; "
        "%d prompts got fewer than %d candidates (%d got none)",
        attack, attacks.prompts, attacks.seeds, attacks.no_seed, attacks.attacked, attacks.succeeded,
        attacks.failed, attacks.already_misjudged, attacks.queries, attacks.seconds, stats.short, n, stats.empty,
    )
