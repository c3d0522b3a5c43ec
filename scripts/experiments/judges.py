"""Q_PM's judges: the gold RM's reward (judge-free, the default) or the paper's Prompt 1 LLM judge (``--q-pm-judge``).

Q_PM is, by default (``--q-pm-judge gold_rm``), the mean reward a *gold* reward model
gives to a policy's greedy responses to held-out prompts (``--rl-val-data``), with a 95%
t interval over the prompts; the gold RM is trained once (`common.ensure_gold_rm`). With
``--q-pm-judge llm`` it is the paper's own measure: an LLM judge's mean rating (0-10) of
the same responses under Prompt 1, asked of any OpenAI-compatible endpoint
(``--judge-endpoint``, ``--judge-model``), every reply cached on disk by `LLMJudge`.
"""

from __future__ import annotations

import argparse
import gc
from typing import Any

import torch

from experiments.common import autocast, device, ensure_gold_rm
from seam_lightning import DataSource
from seam_lightning.data.records import load_records
from seam_lightning.eval.judge import LLMJudge
from seam_lightning.eval.quality import generate_responses, reward_scores
from seam_lightning.eval.stats import mean_ci
from seam_lightning.llm.chat import OpenAIBackend
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer


def llm_judge(args: argparse.Namespace) -> LLMJudge:
    """The paper's Prompt 1 judge on the OpenAI-compatible endpoint the flags name; replies cached on disk."""
    backend = OpenAIBackend(args.judge_model, base_url=args.judge_endpoint, api_key_env=args.judge_api_key_env)
    return LLMJudge(backend, cache_path=args.judge_cache, template="paper", progress=False)


def q_pm_label(args: argparse.Namespace) -> str:
    """What a Q_PM number is, for table headers and axis labels."""
    return "Q_PM: LLM-judge rating 0-10" if args.q_pm_judge == "llm" else "Q_PM: gold-RM reward"


def q_pm_judge(args: argparse.Namespace) -> dict[str, Any]:
    """Who gives Q_PM, made ready: the gold RM (trained once if missing, with its held-out accuracy) or the LLM
    judge."""
    if args.q_pm_judge == "llm":
        return {"judge": "llm", "model": args.judge_model, "endpoint": args.judge_endpoint, "prompt": "Prompt 1 "
                "(paper App. C.1)", "scale": "0-10", "cache": args.judge_cache}
    return {"judge": "gold_rm", **ensure_gold_rm(args)}


def q_pm_text(args: argparse.Namespace, judge: dict[str, Any]) -> str:
    """The settings line's account of Q_PM: on how many prompts, by whom, how good the judge is."""
    if judge["judge"] == "llm":
        return (f"Q_PM on {args.val_prompts} held-out prompts by LLM judge {judge['model']} at "
                f"{judge['endpoint'] or 'the default endpoint'} (Prompt 1, 0-10)")
    return (f"Q_PM on {args.val_prompts} held-out prompts by gold RM {judge['path']} "
            f"(held-out accuracy {judge['accuracy']:.3f} on {judge['pairs']} pairs)")


def rated(values: list[float | None]) -> list[float]:
    """The values a judge gave (an LLM judge's unparsable or refused replies are None)."""
    return [v for v in values if v is not None]


def paired_differences(values: list[float | None], reference: list[float | None]) -> list[float]:
    """Per-prompt ``values - reference`` over the prompts both were rated on."""
    return [a - b for a, b in zip(values, reference) if a is not None and b is not None]


class Judges:
    """Q_PM's judge (gold RM or LLM judge, ``--q-pm-judge``) and the training RM, loaded once.

    Both score a policy's greedy responses to held-out prompts (``--rl-val-data`` unless
    other instructions are given). ``tokenizer``: the policies' tokenizer (default args.sft);
    ``train_rm=False`` leaves the training-RM reward out (the ladder drivers have many RMs).
    """

    def __init__(self, args: argparse.Namespace, tokenizer: str | None = None, train_rm: bool = True):
        self.instructions = [r.text["instruction"] for r in
                             load_records(DataSource(args.rl_val_data, limit=args.val_prompts), ("instruction",))]
        self.tokenizer = load_tokenizer(tokenizer or args.sft)
        self.args, self.device = args, device(args)
        self.llm = llm_judge(args) if args.q_pm_judge == "llm" else None
        self.gold = load_reward_model(args.gold_rm).to(self.device).eval() if self.llm is None else None
        self.train_rm = load_reward_model(args.rm).to(self.device).eval() if train_rm else None
        self.new_tokens = args.new_tokens

    def q_pm_scores(self, instructions: list[str], responses: list[str]) -> list[float | None]:
        """Per response: the LLM judge's rating (None where its reply held none) or the gold RM's reward."""
        if self.llm is not None:
            return self.llm.rate(instructions, responses)
        with torch.inference_mode(), autocast(self.args):
            return self._rewards(self.gold, instructions, responses)

    def _rewards(self, model: torch.nn.Module, instructions: list[str], responses: list[str]) -> list[float]:
        return reward_scores(model, self.tokenizer, instructions, responses, progress=False,
                             max_instruction_tokens=self.args.max_instruction_tokens,
                             max_response_tokens=self.args.max_response_tokens).tolist()

    def evaluate(self, policy: torch.nn.Module, instructions: list[str] | None = None) -> dict[str, Any]:
        """Q_PM (mean ± CI over the rated prompts) and training-RM reward of ``policy``'s greedy responses.

        The training-RM number is what PPOModule logs as val/reward (greedy responses, the RM's score).
        """
        instructions = self.instructions if instructions is None else instructions
        with torch.inference_mode(), autocast(self.args):
            responses = generate_responses(policy, self.tokenizer, instructions, self.new_tokens, batch_size=12,
                                           max_instruction_tokens=self.args.max_instruction_tokens,
                                           progress=False)
        scores = self.q_pm_scores(instructions, responses)
        if not rated(scores):
            raise SystemExit(f"the LLM judge rated none of {len(scores)} answers (see the warnings above)")
        result = {"q_pm": mean_ci(rated(scores)).to_dict(), "q_pm_per_prompt": scores,
                  "unrated": len(scores) - len(rated(scores)),
                  "mean_length_chars": sum(map(len, responses)) / len(responses)}
        if self.train_rm is not None:
            with torch.inference_mode(), autocast(self.args):
                rm = self._rewards(self.train_rm, instructions, responses)
            result.update(rm_reward=mean_ci(rm).to_dict(), rm_per_prompt=rm)
        return result

    def evaluate_path(self, path: str, instructions: list[str] | None = None) -> dict[str, Any]:
        """`evaluate` of a saved policy (e.g. π_SFT, the reference row of every table)."""
        policy = load_policy(path).to(self.device).eval()
        try:
            return self.evaluate(policy, instructions)
        finally:
            del policy
            gc.collect()
