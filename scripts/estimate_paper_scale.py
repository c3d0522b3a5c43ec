"""GPU-hours of the paper's experiments at the paper's sizes: FLOPs and bytes counted, efficiency measured here.

    python scripts/estimate_paper_scale.py                          # every *_paper.yaml, H100 and A100
    python scripts/estimate_paper_scale.py --gpus h100 --prompt-tokens 384 --markdown est.md

Nothing runs on a GPU here; this is arithmetic on the shipped configs, so the estimate follows them.
For each experiment the script reads ``configs/paper.yaml`` with the experiment's own
``configs/<name>_paper.yaml`` on top (as its command line does) and lists the work its driver
does alone (nothing reused from another driver's run): SFT and RM trainings (one epoch of their
k examples / m pairs), PPO runs (steps × prompts: generation, the four rollout forwards, the
update's epochs of policy and value passes), greedy answers and judge calls for Q_PM, RM forwards
for Q_RM, SEAM scoring (each prompt once per model, then PM forwards of every candidate and RM
forwards of every candidate and the golden answer) and the perplexity baseline.

How the hours come out:

1. **Floor.** Each piece of work costs FLOPs counted as ``experiments/flops.py`` counts them for
   ``bench_ppo.py`` (2 per weight per token, causal attention, backward through the LoRA-adapted
   blocks), on the paper's model (LLaMa2-7B by default: its published config, LoRA r 16 on every
   linear of the top ``lora_layers`` blocks, bf16 weights). Decoding a token costs the larger of reading the weights
   and KV cache at the GPU's memory bandwidth and its FLOPs at the GPU's dense bf16 rate. Floor
   GPU-hours = Σ FLOPs / rate + Σ decode time: what a perfect implementation would need.
2. **Estimate.** Floor / the fraction of its floor our code reaches, as measured by
   ``bench_ppo.py`` (PPO step, bf16-mixed, default model: ``--ppo-fraction``) and
   ``bench_seam.py`` (SEAM scoring: ``--scoring-fraction``) on this project's CPU. That is the
   per-step cost measured here scaled by the FLOP ratio: seconds_here × (FLOPs_paper /
   FLOPs_here) × (rate_here / rate_GPU) = floor_GPU / fraction. The fraction on a GPU was not
   measured (no GPU here); large matmuls reach more of a GPU's peak than 64-wide heads reach of a
   CPU's, so read the estimate as an upper bound and the floor as a lower one.

Token counts are assumptions (the paper states none): ``--prompt-tokens`` and ``--response-tokens``
per sequence (default 256 each: StackExchange questions and answers, capped by paper.yaml's
max_response_tokens). Calls to an LLM (the Q_PM judge, SEAM_GPT's Prompt 2) are counted, not timed.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from transformers import LlamaConfig

from experiments.flops import (Shape, backward_flops, forward_flops, generation_floor, shape_from_config,
                               shared_prompt_flops)

CONFIGS = Path(__file__).resolve().parent / "experiments" / "configs"
EXPERIMENTS = ("saturation", "sanity", "data_selection", "overlap", "scaling")

# Published config.json values of the paper's models (hidden, intermediate, blocks, heads, key/value heads,
# vocabulary), so the estimate needs no download; any other name is read with AutoConfig.
LLAMA2 = {"meta-llama/Llama-2-7b-hf": (4096, 11008, 32, 32, 32, 32000),
          "meta-llama/Llama-2-13b-hf": (5120, 13824, 40, 40, 40, 32000),
          "meta-llama/Llama-2-70b-hf": (8192, 28672, 80, 64, 8, 32000)}

# Dense bf16 tensor-core FLOP/s and HBM bytes/s from the vendors' data sheets (SXM parts).
GPUS = {"h100": ("H100 SXM 80GB", 989e12, 3.35e12), "a100": ("A100 SXM 80GB", 312e12, 2.039e12)}


def model_config(name: str):
    if name in LLAMA2:
        hidden, inner, blocks, heads, kv_heads, vocab = LLAMA2[name]
        return LlamaConfig(hidden_size=hidden, intermediate_size=inner, num_hidden_layers=blocks,
                           num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab)
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(name)


@dataclass
class Work:
    """What an experiment costs: FLOPs at the matmul rate (training/PPO and scoring apart), decode seconds
    at the floor, and calls to an LLM."""

    train_flops: float = 0.0
    scoring_flops: float = 0.0
    decode_s: float = 0.0  # floor GPU-seconds of token-by-token generation
    llm_calls: int = 0

    def add(self, other: Work, times: float = 1.0) -> None:
        self.train_flops += other.train_flops * times
        self.scoring_flops += other.scoring_flops * times
        self.decode_s += other.decode_s * times
        self.llm_calls += int(other.llm_calls * times)


@dataclass
class Costs:
    """Per-unit costs of one model size on one GPU, at the floor."""

    policy: Shape  # the PM with LoRA on every block
    scorer: Shape  # an RM / value model: the same backbone with a one-output head
    rate: float
    bandwidth: float
    prompt: int
    response: int
    eval_batch: int

    @property
    def sequence(self) -> list[int]:
        return [self.prompt + self.response]

    def forward(self, shape: Shape, sequences: float, head_positions: int) -> float:
        return forward_flops(shape, self.sequence, head_positions) * sequences

    def forward_backward(self, shape: Shape, sequences: float, head_positions: int) -> float:
        return (forward_flops(shape, self.sequence, head_positions)
                + backward_flops(shape, self.sequence, head_positions)) * sequences

    def train(self, shape: Shape, sequences: float, head_positions: int) -> Work:
        """One epoch of LoRA training on ``sequences`` sequences."""
        return Work(train_flops=self.forward_backward(shape, sequences, head_positions))

    def sft(self, examples: int, epochs: int) -> Work:
        return self.train(self.policy, examples * epochs, self.response)

    def reward_model(self, pairs: int, epochs: int) -> Work:
        return self.train(self.scorer, 2 * pairs * epochs, 1)

    def generate(self, prompts: int, rows: int) -> Work:
        """Sampling ``response`` tokens for ``prompts`` prompts, ``rows`` at a time on one GPU."""
        batches = math.ceil(prompts / rows)
        seconds = generation_floor(self.policy, [self.prompt] * rows, self.response, 2, self.rate, self.bandwidth)
        return Work(decode_s=batches * seconds)

    def score(self, shape: Shape, sequences: float, head_positions: int) -> Work:
        """Forward passes only (log-likelihoods, rewards), at the scoring efficiency."""
        return Work(scoring_flops=self.forward(shape, sequences, head_positions))

    def ppo_run(self, steps: int, prompts: int, devices: int, epochs: int = 2) -> Work:
        """``steps`` PPO steps of ``prompts`` prompts over ``devices`` GPUs, as bench_ppo.py counts one step:
        generation, policy / reference / value / reward forwards, ``epochs`` × (policy + value) forward+backward."""
        rows, positions = max(1, prompts // devices), self.response
        step = self.generate(prompts, rows)
        step.train_flops = (2 * self.forward(self.policy, prompts, positions)  # policy and reference log-probs
                            + self.forward(self.scorer, prompts, positions)  # values
                            + self.forward(self.scorer, prompts, 1)  # rewards
                            + epochs * (self.forward_backward(self.policy, prompts, positions)
                                        + self.forward_backward(self.scorer, prompts, positions)))
        out = Work()
        out.add(step, steps)
        return out

    def q_pm(self, prompts: int, judge: str) -> Work:
        """Greedy answers to ``prompts`` held-out prompts, judged by the gold RM or rated by an LLM."""
        work = self.generate(prompts, self.eval_batch)
        if judge == "llm":
            work.llm_calls += prompts
        else:
            work.add(self.score(self.scorer, prompts, 1))
        return work

    def q_rm(self, pairs: int) -> Work:
        return self.score(self.scorer, 2 * pairs, 1)

    def seam(self, prompts: int, candidates: int) -> Work:
        """SEAM of ``prompts`` prompts as ``SeamScorer`` runs it: each prompt once per model, then the PM's
        log-likelihood of every candidate (its last token predicts nothing) and the RM's reward of every
        candidate and the golden answer."""
        response = self.response
        pm = shared_prompt_flops(self.policy, self.prompt, [response - 1] * candidates, candidates * response)
        rm = shared_prompt_flops(self.scorer, self.prompt, [response] * (candidates + 1), candidates + 1)
        return Work(scoring_flops=prompts * (pm + rm))


def ladder_trainings(costs: Costs, s: dict, pm_ranks=None, rm_ranks=None) -> Work:
    """SFT of the PM rungs and RM training of the RM rungs (rank 1 = the last size; None = every rung)."""
    pms, rms = list(s["pm_examples"]), list(s["rm_pairs"])
    pick = (lambda sizes, ranks: sizes if ranks is None else [sizes[len(sizes) - r] for r in ranks])
    work = Work()
    for k in pick(pms, pm_ranks):
        work.add(costs.sft(k, s.get("sft_epochs", 1)))
    for m in pick(rms, rm_ranks):
        work.add(costs.reward_model(m, s.get("rm_epochs", 1)))
    return work


def experiment_work(name: str, s: dict, costs: Costs) -> tuple[Work, str]:
    """The work one driver does at settings ``s``, and a line saying what was counted."""
    judge, devices, batch = s.get("q_pm_judge", "gold_rm"), s.get("devices", 1), s.get("batch_size", 8)
    val, pref_val, steps = s["val_prompts"], s["pref_val"], s.get("ppo_steps", 200)
    work = Work()
    if name == "saturation":
        pms, rms = len(s["pm_examples"]), len(s["rm_pairs"])
        work.add(ladder_trainings(costs, s))
        work.add(costs.q_pm(val, judge), pms + pms * rms)
        work.add(costs.q_rm(pref_val), rms)
        work.add(costs.ppo_run(steps, batch, devices), pms * rms)
        what = f"{pms} SFT + {rms} RM trainings, {pms * rms} PPO runs of {steps} x {batch}, {pms + pms * rms} Q_PM"
    elif name == "sanity":
        seeds = len(s.get("seeds", [0, 1, 2]))
        pms, rms = len(s["pm_examples"]), len(s["rm_pairs"])
        for _ in range(seeds):
            work.add(ladder_trainings(costs, s))
        work.add(costs.q_pm(val, judge), 3 * pms * seeds)  # on D_p, D_r, D_rl
        work.add(costs.q_rm(pref_val), 3 * rms * seeds)
        what = f"({pms} SFT + {rms} RM) x {seeds} seeds, Q_PM and Q_RM on 3 data sets each"
    elif name == "data_selection":
        pairs, seeds = s.get("ladder_top", 1), len(s.get("seeds", [0, 1, 2]))
        variants, prompts, candidates = s["variants"], s["rl_prompts"], s["candidates"]
        scored = [v for v in variants if v.startswith("seam_")]
        work.add(costs.seam(prompts, candidates), pairs * len(scored))
        attacks = Work()
        if "seam_adv" in variants:  # every candidate attacked with up to the budget of RM queries
            attacks = costs.score(costs.scorer, prompts * candidates * s.get("adv_query_budget", 200), 1)
            work.add(attacks, pairs)
        if "seam_llm" in variants:
            work.llm_calls += prompts  # Prompt 2 once per prompt (cached; the same for every pair)
        if "perplexity" in variants:
            work.add(costs.score(costs.policy, prompts, costs.response))
        work.add(costs.ppo_run(steps, batch, devices), pairs * len(variants) * seeds)
        work.add(costs.q_pm(val, judge), pairs * (1 + len(variants) * seeds))
        what = (f"{pairs} ladder pairs x {len(variants)} variants x {seeds} seeds = {pairs * len(variants) * seeds} "
                f"PPO runs, {len(scored)} SEAM scorings per pair (ladder models reused from saturation); "
                f"SEAM_Adv's attacks at the full query budget: {pairs * attacks.scoring_flops / 1e15:,.0f} PFLOP")
    elif name == "overlap":
        pairs = len(s["ladder_ranks"])
        work.add(costs.seam(s["rl_prompts"], s["candidates"]), pairs)
        what = f"SEAM_Contrast scoring under {pairs} (PM, RM) pairs (ladder models reused from saturation)"
    elif name == "scaling":
        weak = s.get("weak_rank", 5)
        work.add(ladder_trainings(costs, s, pm_ranks=[1, weak], rm_ranks=[1]))
        prompts = s["rl_prompts"]
        work.add(costs.generate(prompts, costs.eval_batch), 2)  # both PMs answer D_rl
        work.add(costs.score(costs.scorer, 2 * prompts, 1))  # the rank 1 RM scores both answers
        if judge == "llm":
            work.llm_calls += 2 * prompts
        else:
            work.add(costs.score(costs.scorer, 2 * prompts, 1))
        work.add(costs.q_pm(val, judge))
        work.add(costs.q_rm(pref_val))
        what = f"rank 1 and {weak} PMs, rank 1 RM, match rate on {prompts} prompts, Q_PM, Q_RM"
    else:
        raise ValueError(name)
    return work, what


def settings(name: str) -> dict:
    """paper.yaml with <name>_paper.yaml on top, as the driver reads ``--config paper.yaml --config <name>_paper.yaml``."""
    merged = yaml.safe_load((CONFIGS / "paper.yaml").read_text())
    merged.update(yaml.safe_load((CONFIGS / f"{name}_paper.yaml").read_text()))
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", default="h100,a100", help="comma-separated: " + ", ".join(GPUS))
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--prompt-tokens", type=int, default=256, help="mean prompt tokens (assumed)")
    parser.add_argument("--response-tokens", type=int, default=256, help="mean response tokens (assumed)")
    parser.add_argument("--eval-batch", type=int, default=32, help="prompts decoded at once per GPU for Q_PM")
    parser.add_argument("--ppo-fraction", type=float, default=0.24,
                        help="fraction of its floor our PPO step reaches (bench_ppo.py, bf16-mixed, default model)")
    parser.add_argument("--scoring-fraction", type=float, default=0.46,
                        help="fraction of the matmul rate SEAM scoring reaches (bench_seam.py flop_fraction)")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)

    lines = [f"Assumptions: {args.prompt_tokens} prompt + {args.response_tokens} response tokens per sequence; "
             f"LoRA r 16 on the top lora_layers blocks (paper.yaml: 32, every block of the 7B); bf16 weights; estimate = floor / {args.ppo_fraction} (training, PPO, "
             f"decoding) and floor / {args.scoring_fraction} (scoring forwards).", ""]
    header = "| experiment | model | GPU | work counted | PFLOP | LLM calls | GPU-h floor | GPU-h estimate |"
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    totals: dict[str, list[float]] = {}
    for name in args.experiments.split(","):
        s = settings(name)
        for model in s.get("sizes", [s["base"]]):
            config = model_config(model)
            for gpu in args.gpus.split(","):
                label, rate, bandwidth = GPUS[gpu]
                lora_layers = s.get("lora_layers")  # paper.yaml: the top 32 blocks (every block of the 7B)
                costs = Costs(shape_from_config(config, lora_layers=lora_layers),
                              shape_from_config(config, lora_layers=lora_layers, head="score"), rate, bandwidth,
                              args.prompt_tokens, args.response_tokens, args.eval_batch)
                work, what = experiment_work(name, s, costs)
                compute_s = (work.train_flops + work.scoring_flops) / rate
                floor_h = (compute_s + work.decode_s) / 3600
                estimate_h = (work.train_flops / rate / args.ppo_fraction + work.decode_s / args.ppo_fraction
                              + work.scoring_flops / rate / args.scoring_fraction) / 3600
                total = totals.setdefault(gpu, [0.0, 0.0])
                total[0] += floor_h
                total[1] += estimate_h
                pflop = (work.train_flops + work.scoring_flops) / 1e15
                lines.append(f"| {name} | {model.split('/')[-1]} | {label} | {what} | {pflop:,.0f} | "
                             f"{work.llm_calls:,} | {floor_h:,.1f} | {estimate_h:,.0f} |")
    lines.append("")
    for gpu, (floor_h, estimate_h) in totals.items():
        lines.append(f"total {GPUS[gpu][0]}: floor {floor_h:,.0f} GPU-h, estimate {estimate_h:,.0f} GPU-h")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
