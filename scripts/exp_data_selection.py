"""Paper §7, Fig. 6 at small scale: PPO on all of D_rl vs SEAM-pruned vs randomly pruned D_rl.

    python scripts/exp_data_selection.py            # default size (~10 min on 2 CPU cores after the gold RM)
    python scripts/exp_data_selection.py --quick    # 16 prompts, 2 PPO steps, 1 seed: a few minutes
    python scripts/exp_data_selection.py --config scripts/experiments/configs/paper.yaml   # real hardware

Three conditions, each run with every seed (PPOModule seed and data-order seed) and the
same number of PPO steps of the same batch size:
  full    PPO on all args.rl_prompts demo RL prompts;
  seam    SeamCallback(mode="prune", selection="seam") drops the ``--fraction`` with the largest SEAM
          (largest PM–RM discrepancy) before the first step;
  random  SeamCallback(selection="random", seed=seed) drops the same number at random.
SEAM is scored once (π_SFT and the training RM; SEAM_Contrast candidates) and reused from
``<out>/seam_progress`` by every later run. After training, the policy answers held-out
demo://rl_val prompts greedily; Q_PM is the gold RM's mean reward, or with ``--q-pm-judge llm``
an LLM judge's Prompt 1 rating (95% CI over prompts and seeds pooled), next to the training
RM's reward of the same answers (PPOModule's val/reward), and Δ, the per-prompt difference
to ``full`` (paired, averaged over seeds) with its CI.
Writes ``<out>/data_selection.json``, ``.md`` (the table) and ``.png``; each finished PPO run is
appended to ``<out>/data_selection.cells.jsonl`` first, so a rerun after a crash resumes.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from experiments.common import (Cells, cell_key, experiment_parser, Judges, bar_plot, ci_text, contrast_source,
                                mean_ci, paired_differences, q_pm_judge, q_pm_label, q_pm_text, rated, resolve,
                                run_ppo, write_json, write_table)
from seam_lightning import SeamCallback

CONDITIONS = ("full", "seam", "random")


def prune_callback(args: argparse.Namespace, selection: str, source, seed: int) -> SeamCallback:
    """Prune ``args.fraction`` of D_rl once, before the first PPO step (scores reused across runs)."""
    return SeamCallback(source, mode="prune", selection=selection, fraction=args.fraction,
                        num_candidates=args.candidates, every_n_epochs=0, reference_policy=args.sft,
                        reward_model=args.rm, progress=False, save_progress=True,
                        progress_dir=str(Path(args.out) / "seam_progress"), seed=seed)


def paired_delta(runs: list[dict], baseline: list[dict]) -> dict:
    """Mean over seeds of per-prompt Q_PM differences to the baseline's run of the same seed, with CI."""
    by_seed = {r["seed"]: r["q_pm_per_prompt"] for r in baseline}
    return mean_ci([d for r in runs for d in paired_differences(r["q_pm_per_prompt"], by_seed[r["seed"]])]).to_dict()


def main() -> None:
    parser = experiment_parser(__doc__)
    parser.add_argument("--fraction", type=float, default=0.2, help="share of D_rl pruned (paper: 0.2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1, quick 0)")
    args = parser.parse_args()
    args.seeds = args.seeds or ([0] if args.quick else [0, 1])
    resolve(args)
    started = time.monotonic()
    judge_info = q_pm_judge(args)
    judges, source = Judges(args), contrast_source(args)
    sft = judges.evaluate_path(args.sft)

    def ppo_cell(condition: str, seed: int) -> dict:
        t0 = time.monotonic()
        callback = None if condition == "full" else prune_callback(args, condition, source, seed)
        module = run_ppo(args, args.rm, seed, [callback] if callback else None)
        result = judges.evaluate(module.policy)
        result.update(condition=condition, seed=seed, seconds=time.monotonic() - t0,
                      pruned=len(callback.pruned_ids) if callback else 0,
                      scoring=callback.last_scoring if callback else None)
        del module, callback
        gc.collect()
        return result

    # Each finished PPO run is saved at once: a killed grid resumes with the runs it lacks.
    cells, runs = Cells(Path(args.out) / "data_selection.cells.jsonl"), []
    for condition in CONDITIONS:
        for seed in args.seeds:
            key = cell_key(args, "data_selection", condition=condition, seed=seed, fraction=args.fraction)
            result = cells.run(key, lambda: ppo_cell(condition, seed))
            runs.append(result)
            print(f"[{condition} seed {seed}] Q_PM {ci_text(result['q_pm'])}; RM reward "
                  f"{result['rm_reward']['mean']:.3f}; pruned {result['pruned']}; {result['seconds']:.0f} s", flush=True)

    rows = []
    for condition in CONDITIONS:
        mine = [r for r in runs if r["condition"] == condition]
        rows.append({
            "condition": condition,
            "q_pm": mean_ci([g for r in mine for g in rated(r["q_pm_per_prompt"])]).to_dict(),
            "rm_reward": mean_ci([g for r in mine for g in r["rm_per_prompt"]]).to_dict(),
            "per_seed_q_pm": [r["q_pm"]["mean"] for r in mine],
            "delta_vs_full": paired_delta(mine, [r for r in runs if r["condition"] == "full"]),
            "prompts_trained_on": args.rl_prompts - mine[0]["pruned"],
        })
    seconds = time.monotonic() - started
    settings = {k: v for k, v in vars(args).items()}
    write_json(Path(args.out) / "data_selection.json",
               {"settings": settings, "q_pm_judge": judge_info, "sft": sft, "rows": rows, "runs": runs,
                "seconds": seconds})

    print(f"\nSettings: D_rl {args.rl_prompts} demo prompts, prune fraction {args.fraction}, {args.ppo_steps} PPO steps "
          f"of {args.batch_size} prompts, {args.new_tokens} new tokens, seeds {args.seeds}, {args.candidates} "
          f"candidates, {q_pm_text(args, judge_info)}; total {seconds:.0f} s")
    table = [["π_SFT (no PPO)", "-", ci_text(sft["q_pm"]), "-", "-", f"{sft['rm_reward']['mean']:.3f}"]]
    table += [[r["condition"], r["prompts_trained_on"], ci_text(r["q_pm"]), ci_text(r["delta_vs_full"]),
               " ".join(f"{q:.3f}" for q in r["per_seed_q_pm"]), f"{r['rm_reward']['mean']:.3f}"] for r in rows]
    write_table(Path(args.out) / "data_selection.md", ["condition", "RL prompts", f"{q_pm_label(args)} [95% CI]",
                "Δ vs full [95% CI]", "Q_PM per seed", "training-RM reward"], table)
    bar_plot(Path(args.out) / "data_selection.png", [r["condition"] for r in rows], [r["q_pm"] for r in rows],
             f"Data selection (Fig. 6): {args.ppo_steps} PPO steps, seeds {args.seeds}, prune {args.fraction:.0%}",
             f"{q_pm_label(args)} (95% CI)", reference=sft["q_pm"]["mean"], reference_label="π_SFT")
    print(f"wrote {Path(args.out) / 'data_selection.json'}, .md and .png")


if __name__ == "__main__":
    main()
