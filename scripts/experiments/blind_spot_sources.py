"""The blind-spot benchmark's optional sources: SEAM with LLM candidates (--llm-model) and adversarial ones (--adv).

Each is computed in cells of its own (llm_side once per run, detect_llm and detect_adv per flawed RM), keyed by
llm_settings / adv_settings, so the cells of a run without them keep their keys; with_sources merges their
detection into a detect cell for the report.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch

from experiments.blind_spot import TableSource, seam_variants
from experiments.blind_spot_scoring import candidate_numbers, detection, rm_rewards, score_candidates, seam_scorer
from experiments.common import autocast, device
from experiments.sources import LOCAL_LLM, adversarial_source, llm_source
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer


def llm_writer(args) -> str:
    """Who wrote the LLM candidates, for labels: --llm-model, with 'local:' alone read as π_SFT."""
    return f"{LOCAL_LLM} π_SFT" if args.llm_model == LOCAL_LLM else args.llm_model


def llm_settings(args: argparse.Namespace) -> dict:
    """What the LLM candidates depend on beyond the shared settings (the key's environment variable does not)."""
    return {"llm_model": args.llm_model, "llm_endpoint": args.llm_endpoint}


def adv_settings(args: argparse.Namespace) -> dict:
    """What the adversarial candidates depend on beyond the shared settings and the flawed RM."""
    return {"adv_attack": args.adv_attack, "adv_query_budget": args.adv_query_budget}


def llm_side(args, policy_name: str, gold_path: str, rl: list[dict], root: Path) -> dict:
    """Once per run: SEAM_GPT candidates by --llm-model (they depend on the prompt and golden answer alone), their
    π_SFT log-likelihoods and gold-RM rewards. A prompt the writer gave no usable answer has none (SEAM 0)."""
    start = time.monotonic()
    source = llm_source(args, policy_name, root / "llm_candidates")
    candidates = source.candidates([r["instruction"] for r in rl], [r["response"] for r in rl], args.candidates)
    stats = {**vars(source.last_stats), "requests": source.last_requests, "cache_hits": source.last_cache_hits,
             "refused": source.last_rejected}
    del source  # a local writer's model
    gc.collect()
    t_candidates = time.monotonic() - start
    with torch.inference_mode(), autocast(args):
        policy, tokenizer = load_policy(policy_name).to(device(args)).eval(), load_tokenizer(policy_name)
        gold, gold_tok = load_reward_model(gold_path).to(device(args)).eval(), load_tokenizer(gold_path)
        results = score_candidates(seam_scorer(args, policy, tokenizer, gold, gold_tok), rl, candidates)
    total = time.monotonic() - start
    return {"writer": llm_writer(args), "prompts": candidate_numbers(candidates, results), "stats": stats,
            "seconds": {"candidates": t_candidates, "pm_loglik": total - t_candidates, "total": total}}


def llm_detection(args, llm: dict, rm, tok, rl: list[dict], labels: list[bool], seed: int) -> dict:
    """seam_llm under one flawed RM ``rm`` (tokenizer ``tok``): its rewards of each golden answer and LLM candidate, weighted by the
    candidates' π_SFT likelihoods from ``llm`` (the llm_side cell)."""
    t0 = time.monotonic()
    per = rm_rewards(args, rm, tok, rl, [p["candidates"] for p in llm["prompts"]])
    seam = [seam_variants(p["logprob_sums"], p["lengths"], values[1:], values[0])["seam"]
            for p, values in zip(llm["prompts"], per)]
    return {"seam_llm": seam, "detection": detection(args, {"seam_llm": seam}, labels, seed),
            "seconds": time.monotonic() - t0}


def adversarial_detection(args, pm: dict, policy_name: str, rm, tok, rl: list[dict], labels: list[bool],
                          seed: int) -> dict:
    """seam_adv under one flawed RM ``rm`` (tokenizer ``tok``): the PM side's contrast candidates attacked until this RM prefers them to the
    golden answer (SEAM_Adv), then their π_SFT log-likelihoods and this RM's rewards."""
    t0 = time.monotonic()
    instructions, golden = [r["instruction"] for r in rl], [r["response"] for r in rl]
    seeds = TableSource(instructions, golden, [p["contrast"] for p in pm["prompts"]])
    source = adversarial_source(args, seeds, max_instruction_tokens=args.max_instruction_tokens,
                                max_response_tokens=args.max_response_tokens).bind(rm, tok)
    with autocast(args):
        candidates = source.candidates(instructions, golden, args.candidates)
    t_attack = time.monotonic() - t0
    with torch.inference_mode(), autocast(args):
        policy, policy_tok = load_policy(policy_name).to(device(args)).eval(), load_tokenizer(policy_name)
        prompts = candidate_numbers(candidates, score_candidates(seam_scorer(args, policy, policy_tok, rm, tok),
                                                                 rl, candidates))
    seam = [seam_variants(p["logprob_sums"], p["lengths"], p["rewards"], p["golden_reward"])["seam"] for p in prompts]
    return {"seam_adv": seam, "detection": detection(args, {"seam_adv": seam}, labels, seed), "prompts": prompts,
            "stats": vars(source.last_stats), "attack_stats": vars(source.last_attack_stats),
            "seconds": {"attack": t_attack, "total": time.monotonic() - t0}}


def with_sources(cell: dict, extra: dict[str, dict]) -> dict:
    """A detect cell as the report reads it: with the optional sources' detection and per-prompt SEAM merged in."""
    merged = {**cell, "detection": dict(cell["detection"])}
    for part in extra.values():
        merged["detection"].update(part["detection"])
        merged.update({k: v for k, v in part.items() if k.startswith("seam_")})
    return merged


def sources_summary(args: argparse.Namespace, llm: dict | None, adv: list[dict]) -> dict:
    """The optional sources this run scored, for labels and the report: the LLM writer with its candidates' stats;
    the attack and its budget with each flawed RM's attack stats (``adv``: detect_adv cells with rho and seed)."""
    out = {}
    if llm is not None:
        out["llm"] = {"writer": llm["writer"], "endpoint": args.llm_endpoint, "stats": llm["stats"],
                      "seconds": llm["seconds"]}
    if adv:
        out["adv"] = {"attack": args.adv_attack, "query_budget": args.adv_query_budget,
                      "per_rm": [{k: c[k] for k in ("rho", "seed", "stats", "attack_stats", "seconds")} for c in adv]}
    return out
