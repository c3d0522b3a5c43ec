"""The blind-spot benchmark's measurements: PM log-likelihoods, RM rewards and detection scores of candidates.

Shared by the driver (scripts/exp_blind_spot.py) and its optional sources (blind_spot_sources); every
function takes the driver's parsed flags for the hardware, precision and token limits.
"""

from __future__ import annotations

import argparse

import torch

from experiments.blind_spot import auroc, bootstrap, precision_at
from experiments.common import autocast, device
from seam_lightning.data.collate import IGNORE_INDEX
from seam_lightning.eval.quality import reward_scores
from seam_lightning.models.batching import pad_id_of, run_sequences
from seam_lightning.models.forward import response_logprob_sums
from seam_lightning.models.loading import load_reward_model, load_tokenizer
from seam_lightning.seam.perplexity import perplexity
from seam_lightning.seam.scorer import SeamExample, SeamResult, SeamScorer

TOKEN_BUDGET = 4096
"""Tokens per forward pass of the scorer and the perplexities."""


def load_rm(args: argparse.Namespace, path: str) -> tuple[torch.nn.Module, object]:
    """A trained RM (in eval mode, on the run's device) and its tokenizer."""
    return load_reward_model(path).to(device(args)).eval(), load_tokenizer(path)


def limits(args: argparse.Namespace) -> dict:
    return dict(max_instruction_tokens=args.max_instruction_tokens, max_response_tokens=args.max_response_tokens,
                progress=False)


def prompt_perplexities(policy, tokenizer, instructions: list[str]) -> list[float]:
    """Perplexity of each instruction's own tokens under the policy, read as text after a document boundary (EOS)."""
    eos = tokenizer.eos_token_id
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in instructions]
    sequences = [[eos] + x for x in ids]
    labels = [[IGNORE_INDEX] + x for x in ids]
    with torch.inference_mode():
        sums = run_sequences(policy, response_logprob_sums, sequences, pad_id_of(tokenizer), "right", TOKEN_BUDGET, labels)
    return [perplexity(s, len(x)) for s, x in zip(sums, ids)]


def seam_scorer(args, policy, tokenizer, rm, rm_tok) -> SeamScorer:
    """PM log-likelihoods and RM rewards of candidates at the benchmark's token limits."""
    return SeamScorer(policy, rm, tokenizer, reward_tokenizer=rm_tok, token_budget=TOKEN_BUDGET, progress=False,
                      max_instruction_tokens=args.max_instruction_tokens, max_response_tokens=args.max_response_tokens)


def score_candidates(scorer: SeamScorer, rl: list[dict], candidates: list[list[str]]) -> list[SeamResult]:
    """The scorer's numbers for each D_rl prompt with its ``candidates``."""
    return list(scorer.score([SeamExample(i, r["instruction"], r["response"], c)
                              for i, (r, c) in enumerate(zip(rl, candidates))]))


def candidate_numbers(candidates: list[list[str]], results: list[SeamResult]) -> list[dict]:
    """Per prompt: the candidates, their π_SFT log-prob sums and token lengths, and the judging RM's rewards of
    them and of the golden response."""
    return [{"candidates": c, "logprob_sums": r.candidate_logprob_sums, "lengths": r.candidate_lengths,
             "rewards": r.candidate_rewards, "golden_reward": r.golden_reward} for c, r in zip(candidates, results)]


def rm_rewards(args, rm, tok, rl: list[dict], responses: list[list[str]]) -> list[list[float]]:
    """Per prompt, the RM's reward of its golden response, then of each of its ``responses``."""
    questions, answers, owner = [], [], []
    for i, (r, texts) in enumerate(zip(rl, responses)):
        for text in [r["response"], *texts]:
            questions.append(r["instruction"]), answers.append(text), owner.append(i)
    with torch.inference_mode(), autocast(args):
        rewards = reward_scores(rm, tok, questions, answers, batch_size=16, **limits(args)).tolist()
    per: list[list[float]] = [[] for _ in rl]
    for i, value in zip(owner, rewards):
        per[i].append(value)
    return per


def detection(args, sig: dict[str, list[float]], labels: list[bool], seed: int) -> dict:
    return {name: {"auroc": bootstrap(auroc, values, labels, args.resamples, seed),
                   "precision_at_20": bootstrap(lambda s, y: precision_at(s, y, 0.2), values, labels, args.resamples, seed)}
            for name, values in sig.items()}
