"""SEAM_Adv: candidates r* are worse responses perturbed by a textattack attack until the RM prefers them to r.

For an RL example (I, r) the source takes worse responses for I ("seeds") and
attacks each one against the reward model: the goal is met when
R(I∘r*) > R(I∘r) (paper §5.2). Every success is a response the RM misjudges,
which is exactly what SEAM measures.

Seeds, in the paper's setting first (``seed_order="seeds_first"``, the default):

1. the candidates of the ``seeds`` source, which in the paper is SEAM_Contrast
   (§7.1: "For SEAM_Adv, we employ SEAM_Contrast to perform adversarial attacks
   on the reward model. For each instruction, we generate 30 adversarial
   responses."): give ``seeds=ContrastSource(...)`` and ask for 30 candidates;
2. then, only for prompts still short of seeds, the preference data's rejected
   responses (``rejected=``), an optional extra. App. D.2 illustrates the
   attacks on such pairs (r⁺, r⁻); ``seed_order="rejected_first"`` attacks them
   first, this source's order before the paper's setting became the default.

The attacks (the paper's Table 1 / App. D.2: GA, BERT-Attack, PWWS, TextFooler;
KATG has no public implementation), the reward model wrapped as their victim
and the goal function live in :mod:`seam_lightning.seam.sources.adversarial.attacks`, whose docs
compare each recipe with textattack's.

A seed the RM already prefers to r is a misjudgement already. By default it is
returned as it is, without an attack (perturbing it would only make it less
natural). With ``attack_misjudged=True`` it is attacked all the same: only a
perturbed text then meets the goal, and the perturbation is kept only if the RM
still prefers it to r; otherwise the seed is returned as it is. Either way such
seeds are counted apart (``AttackStats.already_misjudged``, and with the option
``misjudged_attacked`` / ``misjudged_perturbed``), per call, in
``last_attack_stats`` and the log.

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
from typing import Callable, Iterator, Literal, NamedTuple, Sequence, get_args

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from seam_lightning.data.records import DataSource, load_records
from seam_lightning.seam.sources.adversarial.attacks import (
    AttackName,
    build_attack,
    check_attack_name,
    check_attack_resources,
)
from seam_lightning.seam.sources.adversarial.offline import setup_textattack
from seam_lightning.seam.sources.adversarial.victim import (
    InstructionRewardFunction,
    RewardFunctionWrapper,
    RewardModelWrapper,
    RewardWrapper,
)
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats, check_request, normalise_whitespace

log = logging.getLogger(__name__)

SeedOrder = Literal["seeds_first", "rejected_first"]
SEED_ORDERS: tuple[str, ...] = get_args(SeedOrder)


# -- the source ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackStats:
    """What the attacks of one `AdversarialSource.candidates` call did.

    seeds: distinct worse responses gathered (seed source + rejected); attacked: attacks run on
    seeds the RM did not already prefer to r; succeeded / failed: their outcomes (failed = query
    budget spent or search exhausted); already_misjudged: seeds the RM already preferred to r,
    each returned once (as it is, or perturbed with ``attack_misjudged``); misjudged_attacked:
    those attacked all the same (``attack_misjudged=True``; else 0); misjudged_perturbed: those
    returned perturbed (the RM still preferred the perturbation to r); no_seed: prompts that had
    no seed at all; duplicates: results dropped because the prompt already had the same text (or
    it equals r); queries: RM queries of all attacks.
    Invariants: attacked = succeeded + failed; misjudged_perturbed <= misjudged_attacked <=
    already_misjudged; candidates = succeeded + already_misjudged − duplicates.
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
    misjudged_attacked: int = 0
    misjudged_perturbed: int = 0

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


class _Outcome(NamedTuple):
    """What one attack on one seed gave.

    kind: "succeeded", "failed" or "already_misjudged" (the RM preferred the seed to r before
    any perturbation); text: the response to keep (None after a failure); queries: RM queries;
    attacked: an already-misjudged seed was attacked all the same; perturbed: and the text kept
    is its perturbation.
    """

    kind: str
    text: str | None
    queries: int
    attacked: bool = False
    perturbed: bool = False


class AdversarialSource(CandidateSource):
    """SEAM_Adv candidates: worse responses attacked until the reward model prefers them to r.

    The paper's setting (§7.1) is ``seeds=ContrastSource(...)`` with 30 candidates per prompt,
    ``rejected`` left out; see the module docs for the seed order and already-misjudged seeds.

    Args:
        reward_model: RM name or path (``bundled:...``, hub id, local folder), loaded on first use
            with ``load_reward_model``; leave None to attack the run's RM (``SeamCallback`` offers it
            through :meth:`use_reward_model`) or one given to :meth:`bind`.
        attack: recipe name (see :mod:`seam_lightning.seam.sources.adversarial.attacks` for each one, how it follows
            textattack's recipe and what it needs offline); "katg" raises: no public implementation.
        seeds: where worse responses to attack come from; the paper's is SEAM_Contrast (``ContrastSource``).
        rejected: preference data (fields ``instruction`` and ``rejected``, mapped through
            ``rejected.fields``): its rejected responses of an instruction are further seeds.
        seed_order: "seeds_first" (default, the paper's §7.1): the seed source's candidates, then
            rejected responses for prompts still short of seeds; "rejected_first": rejected
            responses first (this source's order before), then the seed source's.
        seeds_per_prompt: seeds tried per prompt; default num_candidates. More seeds than
            candidates make up for failed attacks.
        attack_misjudged: also attack seeds the RM already prefers to r, keeping a perturbation
            only if the RM still prefers it (default False: such seeds are returned as they are).
        query_budget: RM queries per attacked seed (None = unlimited).
        max_instruction_tokens, max_response_tokens, prompt_template, system_prompt: how the RM's
            inputs are formatted; set them as the data module's (``RLHFDataModule`` arguments of
            the same names), so the attack sees what training and scoring see.
        masked_lm: local masked LM (a folder with a trained MLM head) for ``bert-attack``.
        embedding: word-vector text file for ``textfooler`` (and ``ga`` / ``iga``: embedding swaps
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
        seed_order: SeedOrder = "seeds_first",
        seeds_per_prompt: int | None = None,
        attack_misjudged: bool = False,
        query_budget: int | None = 200,
        max_instruction_tokens: int = 128,
        max_response_tokens: int = 192,
        prompt_template: str | None = None,
        system_prompt: str | None = None,
        masked_lm: str | None = None,
        embedding: str | None = None,
        token_budget: int | None = None,
        seed: int = 0,
        device: str | None = None,
        progress: bool = True,
    ) -> None:
        check_attack_name(attack)
        if seeds is None and rejected is None:
            raise ValueError("AdversarialSource needs responses to attack: give seeds=<a CandidateSource, e.g. "
                             "ContrastSource (the paper's §7.1)> and/or rejected=<preference data>")
        if seed_order not in SEED_ORDERS:
            raise ValueError(f"seed_order must be one of {', '.join(SEED_ORDERS)}, got {seed_order!r}")
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
        self.seed_order, self.seeds_per_prompt, self.query_budget = seed_order, seeds_per_prompt, query_budget
        self.attack_misjudged = bool(attack_misjudged)
        self.max_instruction_tokens, self.max_response_tokens = max_instruction_tokens, max_response_tokens
        self.prompt_template, self.system_prompt = prompt_template, system_prompt
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
                                                    self.max_response_tokens, self.token_budget,
                                                    self.prompt_template, self.system_prompt))

    def bind_function(self, fn: InstructionRewardFunction) -> "AdversarialSource":
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
                                        constraints=[self._window], require_perturbation=self.attack_misjudged)

    # -- candidates --------------------------------------------------------------------------

    def candidates(self, instructions: list[str], responses: list[str], num_candidates: int) -> list[list[str]]:
        """Up to num_candidates responses per example that the RM prefers to r: successful attacks
        and already-misjudged seeds (as they are, or perturbed with ``attack_misjudged``)."""
        check_request(instructions, responses, num_candidates)
        self.prepare()
        if self._wrapper is None:
            raise ValueError("AdversarialSource has no reward model: give reward_model=<name or path>, "
                             "use it in a SeamCallback (which offers its RM) or call bind(model, tokenizer) first")
        start = time.perf_counter()
        seeds = self._gather_seeds(instructions, responses, self.seeds_per_prompt or num_candidates)
        counts = dict.fromkeys(("attacked", "succeeded", "failed", "already_misjudged", "misjudged_attacked",
                                "misjudged_perturbed", "duplicates", "queries"), 0)
        results: list[list[str]] = []
        bar = tqdm(total=len(instructions), disable=not self.progress, desc=f"SEAM_Adv ({self.attack})", unit="prompt")
        try:
            for instruction, golden, prompt_seeds in zip(instructions, responses, seeds):
                self._wrapper.set_instruction(instruction)
                results.append(self._attack_prompt(instruction, golden, prompt_seeds, num_candidates, counts))
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
        _log_stats(self.attack, self.last_stats, self.last_attack_stats, num_candidates, self.attack_misjudged)
        return results

    def _attack_prompt(self, instruction: str, golden: str, prompt_seeds: list[str], num_candidates: int,
                       counts: dict[str, int]) -> list[str]:
        """Attack one prompt's seeds in order until num_candidates distinct results; tally into ``counts``."""
        found: list[str] = []
        seen = {normalise_whitespace(golden)}
        for seed_text in prompt_seeds:
            if len(found) == num_candidates:
                break
            outcome = self._attack_one(instruction, golden, seed_text)
            counts[outcome.kind] += 1
            counts["attacked"] += outcome.kind != "already_misjudged"
            counts["misjudged_attacked"] += outcome.attacked
            counts["misjudged_perturbed"] += outcome.perturbed
            counts["queries"] += outcome.queries
            if outcome.text is None:
                continue
            key = normalise_whitespace(outcome.text)
            if key in seen:
                counts["duplicates"] += 1
            else:
                seen.add(key)
                found.append(outcome.text)
        return found

    def _gather_seeds(self, instructions: list[str], responses: list[str], limit: int) -> list[list[str]]:
        """Per prompt up to ``limit`` distinct worse responses, from the providers in ``seed_order``;
        a later provider is asked only for prompts still short of seeds."""
        out: list[list[str]] = [[] for _ in instructions]
        for provider in self._seed_providers():
            need = [i for i, s in enumerate(out) if len(s) < limit]
            if not need:
                break
            more = provider([instructions[i] for i in need], [responses[i] for i in need], limit)
            for i, extra in zip(need, more):
                taken = {normalise_whitespace(s) for s in out[i]} | {normalise_whitespace(responses[i])}
                out[i] += _distinct(extra, taken, limit - len(out[i]))
        return out

    def _seed_providers(self) -> list[Callable[[list[str], list[str], int], list[list[str]]]]:
        """The configured seed providers, in ``seed_order``."""
        providers = {"seeds": self._source_seeds if self.seeds is not None else None,
                     "rejected": self._rejected_seeds if self.rejected is not None else None}
        order = ("seeds", "rejected") if self.seed_order == "seeds_first" else ("rejected", "seeds")
        return [providers[name] for name in order if providers[name] is not None]

    def _source_seeds(self, instructions: list[str], responses: list[str], limit: int) -> list[list[str]]:
        """The seed source's candidates (the paper's: SEAM_Contrast)."""
        return self.seeds.candidates(instructions, responses, limit)

    def _rejected_seeds(self, instructions: list[str], responses: list[str], limit: int) -> list[list[str]]:
        """The preference data's rejected responses of each instruction (matched by normalised text)."""
        table = self._rejected or {}
        return [table.get(normalise_whitespace(instruction), []) for instruction in instructions]

    def _attack_one(self, instruction: str, golden: str, seed_text: str) -> _Outcome:
        """Attack ``seed_text`` against the golden response ``golden``."""
        from textattack.attack_results import SkippedAttackResult, SuccessfulAttackResult

        visible = self._wrapper.visible_words(seed_text)
        self._window.max_length = 2**62 if visible is None else visible
        with _seeded(f"{self.seed}\0{instruction}\0{golden}\0{seed_text}"):
            result = self._attack.attack(seed_text, golden)
        queries = self._attack.goal_function.num_queries
        if isinstance(result, SkippedAttackResult):  # the RM prefers the seed already: no attack ran
            return _Outcome("already_misjudged", seed_text, queries)
        succeeded = isinstance(result, SuccessfulAttackResult)
        text = result.perturbed_result.attacked_text.text if succeeded else None
        if result.original_result.score > 0:  # already misjudged, attacked all the same (attack_misjudged)
            return _Outcome("already_misjudged", text if succeeded else seed_text, queries,
                            attacked=True, perturbed=succeeded)
        return _Outcome("succeeded" if succeeded else "failed", text, queries)


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


def _log_stats(attack: str, stats: CandidateStats, attacks: AttackStats, n: int, attack_misjudged: bool) -> None:
    if attack_misjudged:
        misjudged = (f"{attacks.already_misjudged} seeds already misjudged (attacked all the same: "
                     f"{attacks.misjudged_perturbed} kept perturbed, the rest as they are)")
    else:
        misjudged = f"{attacks.already_misjudged} seeds already misjudged (kept as they are, not attacked)"
    log.info(
        "adversarial (%s): %d prompts, %d seeds (%d prompts had none); %d attacks: %d succeeded, %d failed; "
        "%s; %d queries in %.1f s; %d prompts got fewer than %d candidates (%d got none)",
        attack, attacks.prompts, attacks.seeds, attacks.no_seed, attacks.attacked, attacks.succeeded,
        attacks.failed, misjudged, attacks.queries, attacks.seconds, stats.short, n, stats.empty,
    )
