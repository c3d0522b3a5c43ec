"""Candidates the policy itself would write: k responses sampled from π_SFT, kept when a judge rates them below r.

The paper's §7.2 blames the weaker SEAM variants on candidates the policy would
never write (adversarial edits, another question's answer). This source has none of
that problem by construction: r* are the policy's own samples for I. Whether a
sample is *worse* than the golden response r is not known by construction here, so
a judge decides: a sample is kept as a candidate when the judge rates it strictly
below r (a tie or a missing rating drops it).

The judge is anything with ``rate(questions, answers) -> list[float | None]``:

- :class:`~seam_lightning.eval.judge.LLMJudge` (the paper's Prompt 1 against any
  chat endpoint or a local model);
- :class:`RewardJudge`, a reference reward model. When that reward model is the
  one that decides what "worse" means in an experiment (a gold RM), the judge is an
  **oracle** and must be labelled so (``RewardJudge(..., oracle=True)``): numbers
  measured with it are upper bounds for what a real judge would give.

Sampling is the package's own (:func:`seam_lightning.rl.generation.sample_responses`,
temperature 1 over the full distribution by default, as PPO samples), with one
random stream per (seed, instruction, sample index), so a prompt's samples do not
depend on the batch it runs in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from seam_lightning.data.collate import pad
from seam_lightning.data.formatting import PromptFormatter
from seam_lightning.eval.quality import reward_scores
from seam_lightning.models.batching import pad_id_of
from seam_lightning.rl.generation import SamplingSettings, sample_responses
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats, check_request, describe, normalise_whitespace
from seam_lightning.seeding import as_int64


class Judge(Protocol):
    """Rates answers to questions; larger is better; None where it gave no rating."""

    def rate(self, questions: list[str], answers: list[str]) -> list[float | None]: ...


class RewardJudge:
    """A reference reward model as a judge: the rating of (I, r) is R(I∘r).

    ``oracle=True`` labels it as the model that defines "worse" in the experiment at
    hand (e.g. the gold RM of a benchmark); reports should carry that label.
    """

    def __init__(self, reward_model: nn.Module, tokenizer: PreTrainedTokenizerBase, oracle: bool = False,
                 name: str = "reward-model", batch_size: int = 16, max_instruction_tokens: int = 128,
                 max_response_tokens: int = 192, template: str | None = None, system_prompt: str | None = None):
        self.reward_model, self.tokenizer, self.oracle, self.name = reward_model, tokenizer, oracle, name
        self.batch_size = batch_size
        self.max_instruction_tokens, self.max_response_tokens = max_instruction_tokens, max_response_tokens
        self.template, self.system_prompt = template, system_prompt

    def rate(self, questions: list[str], answers: list[str]) -> list[float | None]:
        with torch.inference_mode():
            rewards = reward_scores(self.reward_model, self.tokenizer, questions, answers, batch_size=self.batch_size,
                                    max_instruction_tokens=self.max_instruction_tokens,
                                    max_response_tokens=self.max_response_tokens, progress=False,
                                    template=self.template, system_prompt=self.system_prompt)
        return [float(r) for r in rewards]


@dataclass(frozen=True)
class PolicySamples:
    """What the latest call sampled for one prompt: every sample, its rating and the golden response's rating."""

    samples: list[str]
    ratings: list[float | None]
    golden_rating: float | None


def sample_seed(seed: int, instruction: str, index: int) -> int:
    """The random stream of sample ``index`` of ``instruction``: a stable 64-bit hash, not Python's salted one."""
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{instruction}".encode("utf-8")).digest()
    return as_int64(int.from_bytes(digest[:8], "big"))


class PolicySampleSource(CandidateSource):
    """SEAM_PolicySample: k samples of the policy per prompt, kept when ``judge`` rates them below the golden response.

    Args:
        policy: the causal LM to sample from (π_SFT); on its own device.
        tokenizer: its tokenizer.
        judge: an :class:`~seam_lightning.eval.judge.LLMJudge` or a :class:`RewardJudge`.
        samples_per_prompt: k, samples drawn per prompt (the candidates are those of them judged worse).
        sampling: max new tokens, temperature, top-k, top-p (default: PPO's, full distribution).
        seed: the seed of every prompt's random streams.
        batch_size: rows (prompt × sample) generated at once.
        max_instruction_tokens, template, system_prompt: prompt formatting, as training formats it.
    """

    def __init__(self, policy: nn.Module, tokenizer: PreTrainedTokenizerBase, judge: Judge,
                 samples_per_prompt: int = 8, sampling: SamplingSettings = SamplingSettings(max_new_tokens=64),
                 seed: int = 0, batch_size: int = 16, max_instruction_tokens: int = 128,
                 template: str | None = None, system_prompt: str | None = None):
        if samples_per_prompt < 1 or batch_size < 1:
            raise ValueError(f"samples_per_prompt and batch_size must be >= 1, got {samples_per_prompt}, {batch_size}")
        if not callable(getattr(judge, "rate", None)):
            raise TypeError(f"judge needs a rate(questions, answers) method, got {type(judge).__name__}")
        self.policy, self.tokenizer, self.judge = policy, tokenizer, judge
        self.samples_per_prompt, self.sampling, self.seed, self.batch_size = samples_per_prompt, sampling, seed, batch_size
        self.formatter = PromptFormatter(tokenizer, max_instruction_tokens, sampling.max_new_tokens, template,
                                         system_prompt)
        self.last_samples: list[PolicySamples] = []

    @property
    def oracle(self) -> bool:
        """True when the judge is labelled an oracle (see :class:`RewardJudge`)."""
        return bool(getattr(self.judge, "oracle", False))

    def sample(self, instructions: Sequence[str]) -> list[list[str]]:
        """k decoded samples per instruction (up to the first EOS, special tokens skipped), in input order."""
        k = self.samples_per_prompt
        rows = [(i, j) for i in range(len(instructions)) for j in range(k)]
        prompts = {i: self.formatter.prompt_ids(text).ids for i, text in enumerate(instructions)}
        out: list[list[str]] = [[] for _ in instructions]
        device = next(self.policy.parameters()).device
        pad_id = pad_id_of(self.tokenizer)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            ids, mask = pad([prompts[i] for i, _ in batch], pad_id, "left")
            seeds = [sample_seed(self.seed, instructions[i], j) for i, j in batch]
            rollout = sample_responses(self.policy, ids.to(device), mask.to(device), self.sampling,
                                       eos_token_id=self.tokenizer.eos_token_id, pad_token_id=pad_id, seeds=seeds)
            lengths = (rollout.lengths - rollout.ended.long()).tolist()  # the EOS is not text
            for (i, _), tokens, length in zip(batch, rollout.tokens.cpu(), lengths):
                out[i].append(self.tokenizer.decode(tokens[:length].tolist(), skip_special_tokens=True))
        return out

    def candidates(self, instructions: list[str], responses: list[str], num_candidates: int) -> list[list[str]]:
        check_request(instructions, responses, num_candidates)
        samples = self.sample(instructions)
        questions = [q for q, s in zip(instructions, samples) for _ in s]
        ratings = self.judge.rate(list(instructions) + questions,
                                  list(responses) + [a for s in samples for a in s])
        golden, flat = ratings[:len(instructions)], iter(ratings[len(instructions):])
        self.last_samples, result = [], []
        for response, sample, golden_rating in zip(responses, samples, golden):
            sample_ratings = [next(flat) for _ in sample]
            self.last_samples.append(PolicySamples(sample, sample_ratings, golden_rating))
            kept, seen = [], {normalise_whitespace(response)}
            for text, rating in zip(sample, sample_ratings):
                key = normalise_whitespace(text)
                worse = golden_rating is not None and rating is not None and rating < golden_rating
                if worse and key and key not in seen:
                    seen.add(key)
                    kept.append(text)
            result.append(kept[:num_candidates])
        self.last_stats = CandidateStats.of(result, num_candidates)
        return result

    def config(self) -> dict:
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}",
                "policy": getattr(getattr(self.policy, "config", None), "_name_or_path", type(self.policy).__name__),
                "judge": describe(self.judge), "oracle": self.oracle, "samples_per_prompt": self.samples_per_prompt,
                "sampling": describe(self.sampling), "seed": self.seed,
                "format": describe({"template": self.formatter.template, "system": self.formatter.system_prompt,
                                    "chat": self.formatter.uses_chat_template,
                                    "max_instruction_tokens": self.formatter.max_instruction_tokens})}
