"""The evaluation commands: each turns parsed arguments into a result dict and a one-line summary.

Models are loaded one at a time and freed before the next, so a match rate of two
policies needs the memory of one model at a time, not four.
"""

from __future__ import annotations

import argparse
import gc
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from seam_lightning.eval.files import load_columns, parse_fields
from seam_lightning.eval.judge import JUDGE_PROMPT, LLMJudge
from seam_lightning.eval.quality import (
    generate_responses,
    match_rate,
    preference_accuracy,
    reference_preferences,
    reward_scores,
)
from seam_lightning.eval.stats import MeanCI, mean_ci
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer

log = logging.getLogger(__name__)

Result = tuple[dict[str, Any], str]


def _columns(args: argparse.Namespace, fields: list[str]) -> dict[str, list[str]]:
    return load_columns(args.data, fields, limit=args.limit, split=args.split, mapping=parse_fields(args.fields))


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _responses(args: argparse.Namespace, policy_path: str, instructions: list[str]) -> list[str]:
    """Greedy responses of the policy at ``policy_path``; the model is freed afterwards."""
    tokenizer = load_tokenizer(policy_path)
    policy = load_policy(policy_path, dtype=args.dtype, attn_implementation=args.attn_implementation).to(args.device)
    try:
        return generate_responses(policy, tokenizer, instructions, max_new_tokens=args.max_new_tokens,
                                  batch_size=args.batch_size, max_instruction_tokens=args.max_instruction_tokens,
                                  template=args.prompt_template, system_prompt=args.system_prompt,
                                  progress=args.progress)
    finally:
        del policy
        _free()


def _rewards(args: argparse.Namespace, rm_path: str, instructions: list[str], responses: list[str]) -> torch.Tensor:
    """R(I∘r) from the reward model at ``rm_path``; the model is freed afterwards."""
    tokenizer = load_tokenizer(rm_path)
    model = load_reward_model(rm_path, dtype=args.dtype, attn_implementation=args.attn_implementation).to(args.device)
    try:
        return reward_scores(model, tokenizer, instructions, responses, batch_size=args.batch_size,
                             max_instruction_tokens=args.max_instruction_tokens,
                                  template=args.prompt_template, system_prompt=args.system_prompt,
                             max_response_tokens=args.max_response_tokens, progress=args.progress)
    finally:
        del model
        _free()


def build_judge(args: argparse.Namespace) -> LLMJudge:
    """The judge the options name: an OpenAI-compatible endpoint (--base-url, --model) or --local-model."""
    from seam_lightning.llm.chat import OpenAIBackend, TransformersBackend

    if args.local_model and (args.model or args.base_url):
        raise ValueError("give either --local-model or --model/--base-url for the judge, not both")
    if args.local_model:
        backend = TransformersBackend(args.local_model, device=args.device, dtype=args.dtype)
    elif args.model:
        backend = OpenAIBackend(args.model, base_url=args.base_url, api_key_env=args.api_key_env)
    else:
        raise ValueError("the judge needs --model NAME (with --base-url URL for a local server) or --local-model PATH")
    template = Path(args.judge_template).read_text(encoding="utf-8") if args.judge_template else JUDGE_PROMPT
    return LLMJudge(backend, cache_path=args.cache, template=template, max_tokens=args.judge_max_tokens,
                    max_workers=args.judge_workers, progress=args.progress)


def _judge_report(judge: LLMJudge) -> dict[str, Any]:
    return {"judge": judge.backend.name, "judge_cache": str(judge.cache.path), "judge_requests": judge.last_requests,
            "judge_cache_hits": judge.last_cache_hits, "judge_refused": judge.last_rejected,
            "judge_usage": asdict(judge.backend.usage)}


def _ci(name: str, ci: MeanCI | None) -> dict[str, Any]:
    """The mean under ``name`` with its interval; all None when there was nothing to average."""
    if ci is None:
        return {name: None, "ci_low": None, "ci_high": None, "confidence": None}
    return {name: ci.mean, "ci_low": ci.low, "ci_high": ci.high, "confidence": ci.confidence}


def rm_accuracy(args: argparse.Namespace) -> Result:
    """Q_RM: preference accuracy of a reward model on (instruction, chosen, rejected) pairs."""
    data = _columns(args, ["instruction", "chosen", "rejected"])
    tokenizer = load_tokenizer(args.reward_model)
    model = load_reward_model(args.reward_model, dtype=args.dtype,
                              attn_implementation=args.attn_implementation).to(args.device)
    accuracy = preference_accuracy(model, tokenizer, data["instruction"], data["chosen"], data["rejected"],
                                   batch_size=args.batch_size, max_instruction_tokens=args.max_instruction_tokens,
                                  template=args.prompt_template, system_prompt=args.system_prompt,
                                   max_response_tokens=args.max_response_tokens, progress=args.progress)
    n = len(data["instruction"])
    return {"accuracy": accuracy, "n": n}, f"rm-accuracy: {accuracy:.4f} on {n} pairs"


def gold_reward(args: argparse.Namespace) -> Result:
    """Judge-free Q_PM: the mean reward a gold reward model gives the policy's greedy responses."""
    instructions = _columns(args, ["instruction"])["instruction"]
    responses = _responses(args, args.policy, instructions)
    rewards = _rewards(args, args.gold_reward_model, instructions, responses).tolist()
    ci = mean_ci(rewards)
    result = {**_ci("mean_reward", ci), "n": ci.n, "examples": _examples(instructions, responses, rewards)}
    return result, f"gold-reward: mean {ci.describe(4)}"


def judge(args: argparse.Namespace) -> Result:
    """Q_PM by an LLM judge: the mean rating (1–10) of the policy's greedy responses."""
    instructions = _columns(args, ["instruction"])["instruction"]
    judge_ = build_judge(args)  # before generating: a bad key or template fails in seconds, not after
    responses = _responses(args, args.policy, instructions)
    ratings = judge_.rate(instructions, responses)
    rated = [r for r in ratings if r is not None]
    ci = mean_ci(rated) if rated else None
    result = {**_ci("mean_rating", ci), "n": len(ratings), "n_rated": len(rated),
              "n_unparsable": len(ratings) - len(rated) - judge_.last_rejected, **_judge_report(judge_),
              "examples": _examples(instructions, responses, ratings)}
    mean = f"mean rating {ci.describe(3)}" if ci else "no rating parsed"
    return result, f"judge: {mean}; {len(ratings) - len(rated)} of {len(ratings)} unrated"


def match_rate_command(args: argparse.Namespace) -> Result:
    """How often the RM prefers, of two policies' responses, the one a gold RM or an LLM judge prefers."""
    if bool(args.gold_reward_model) == bool(args.model or args.local_model):
        raise ValueError("match-rate needs one reference: --gold-reward-model PATH, or a judge "
                         "(--model NAME [--base-url URL] or --local-model PATH)")
    instructions = _columns(args, ["instruction"])["instruction"]
    judge_ = None if args.gold_reward_model else build_judge(args)
    responses_a = _responses(args, args.policy_a, instructions)
    responses_b = _responses(args, args.policy_b, instructions)
    both = instructions + instructions
    rm = _rewards(args, args.reward_model, both, responses_a + responses_b)
    n = len(instructions)
    if judge_ is None:
        reference = _rewards(args, args.gold_reward_model, both, responses_a + responses_b).tolist()
        extra: dict[str, Any] = {"reference": "gold-reward-model"}
    else:
        reference = judge_.rate(both, responses_a + responses_b)
        extra = {"reference": "judge", **_judge_report(judge_)}
    prefers_a = reference_preferences(reference[:n], reference[n:])
    unrated = sum(a is None or b is None for a, b in zip(reference[:n], reference[n:]))
    compared = sum(p is not None for p in prefers_a)
    rate = match_rate(rm[:n], rm[n:], prefers_a) if compared else None
    result = {"match_rate": rate, "n_pairs": compared, "n_ties_excluded": n - compared - unrated,
              "n_unrated_excluded": unrated, "n": n, **extra}
    shown = "undefined (no pair to compare)" if rate is None else f"{rate:.4f}"
    return result, f"match-rate: {shown} on {compared} pairs ({n - compared} excluded as ties or unrated)"


def _examples(instructions: list[str], responses: list[str], scores: list[float | None], k: int = 5) -> list[dict]:
    """The first few (instruction, response, score) triples, for a reader of the result file."""
    return [{"instruction": i, "response": r, "score": s} for i, r, s in list(zip(instructions, responses, scores))[:k]]


COMMANDS = {"rm-accuracy": rm_accuracy, "gold-reward": gold_reward, "judge": judge, "match-rate": match_rate_command}
