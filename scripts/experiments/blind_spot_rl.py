"""The blind-spot benchmark's RL effect: PPO with the flawed RM on all of D_rl, on D_rl without its largest-SEAM
share and without a random share, judged by the gold RM on held-out prompts inside and outside B."""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np
import torch

from experiments.blind_spot import module_of, stable_unit
from experiments.blind_spot_report import RL_CONDITIONS, summarize_rl_effect
from experiments.blind_spot_scoring import limits
from experiments.common import Cells, autocast, data_rows, device, later_settings, run_ppo
from seam_lightning import files
from seam_lightning.eval.quality import generate_responses, reward_scores
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer

RL_ONLY = ("fraction", "ppo_steps", "val_prompts", "lora_layers", "rl_val_data")
"""The flags only the RL-effect cells depend on (the detection cells' keys leave them out)."""


def held_out_gold_rewards(args, policy, tokenizer, gold, gold_tok, prompts: list[dict]) -> list[float]:
    """The gold RM's reward of the policy's greedy response to each held-out prompt."""
    instructions = [r["instruction"] for r in prompts]
    with torch.inference_mode(), autocast(args):
        responses = generate_responses(policy.to(device(args)).eval(), tokenizer, instructions, args.new_tokens,
                                       batch_size=16, max_instruction_tokens=args.max_instruction_tokens,
                                       progress=False)
        return reward_scores(gold, gold_tok, instructions, responses, batch_size=16, **limits(args)).tolist()


def pruned_rl_data(args, rl: list[dict], condition: str, seam: list[float], seed: int, folder: Path) -> Path:
    """D_rl for one RL-effect condition as a JSONL file: all of it, or without the top ``fraction`` by SEAM / at random."""
    drop = round(args.fraction * len(rl)) if condition != "full" else 0
    order = {"seam": lambda i: -seam[i], "random": lambda i: stable_unit(f"prune:{seed}:{i}")}.get(condition)
    dropped = set(sorted(range(len(rl)), key=order)[:drop]) if drop else set()
    rows = [{"instruction": r["instruction"], "response": r["response"], "source": r["source"]}
            for i, r in enumerate(rl) if i not in dropped]
    return files.write_text_atomic(folder / f"{condition}_seed{seed}.jsonl",
                                   "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def rl_effect(args, cells: Cells, settings: dict, policy_name: str, flawed: dict, gold: dict, rl: list[dict],
              seam: list[float], in_b: frozenset[str], root: Path) -> dict:
    """PPO with the flawed RM on full vs SEAM-pruned vs random-pruned D_rl, per seed; the gold RM judges held-out prompts.

    SEAM here is the contrast source's score under π_SFT and the flawed RM, the prune SeamCallback makes
    before the first PPO step (mode="prune"), read from the detection run instead of computed twice.
    Every condition runs the same number of PPO steps of the same batch size.
    """
    val = data_rows(args.rl_val_data)[:args.val_prompts]
    val_in_b = [module_of(r["source"]) in in_b for r in val]
    gold_model, gold_tok = load_reward_model(gold["path"]).to(device(args)).eval(), load_tokenizer(gold["path"])
    rl_settings = {**{k: getattr(args, k) for k in RL_ONLY}, **later_settings(args, "ppo_lr")}
    reference = cells.run({"experiment": "blind_spot", "settings": settings, "rl": rl_settings, "cell": "pi_sft"},
                          lambda: held_out_gold_rewards(args, load_policy(policy_name), load_tokenizer(policy_name),
                                                        gold_model, gold_tok, val))
    runs = []
    for seed in args.rl_seeds:
        for condition in RL_CONDITIONS:
            def run(condition=condition, seed=seed) -> dict:
                t0 = time.monotonic()
                data = pruned_rl_data(args, rl, condition, seam, seed, root / "rl_data" / flawed["name"])
                ppo_args = argparse.Namespace(**{**vars(args), "rl_data": str(data), "rl_prompts": None,
                                                 "sft": policy_name})
                module = run_ppo(ppo_args, flawed["path"], seed, root=root / "lightning", policy=policy_name)
                rewards = held_out_gold_rewards(args, module.policy, load_tokenizer(policy_name), gold_model, gold_tok,
                                                val)
                del module
                gc.collect()
                return {"condition": condition, "seed": seed, "gold_per_prompt": rewards,
                        "trained_on": sum(1 for _ in open(data, encoding="utf-8")), "seconds": time.monotonic() - t0}

            key = {"experiment": "blind_spot", "settings": settings, "rl": rl_settings, "flawed_rm": flawed["name"],
                   "cell": "ppo", "condition": condition, "seed": seed}
            result = cells.run(key, run)
            runs.append(result)
            print(f"[blind spot] PPO {condition} seed {seed}: gold reward in B "
                  f"{np.mean([g for g, b in zip(result['gold_per_prompt'], val_in_b) if b]):.3f}, outside "
                  f"{np.mean([g for g, b in zip(result['gold_per_prompt'], val_in_b) if not b]):.3f}, "
                  f"{result['seconds']:.0f} s", flush=True)
    return summarize_rl_effect(runs, reference, val_in_b, flawed["name"])
