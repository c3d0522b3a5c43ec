"""Paper Appendix E.1 at small scale: Q_PM after PPO as a function of the share of D_rl pruned by SEAM.

    python scripts/exp_filter_rate.py               # fractions 0 0.1 0.2 0.4 0.6 0.8, seed 0 (~9 min)
    python scripts/exp_filter_rate.py --quick       # fractions 0 0.2 0.5, 16 prompts, 2 PPO steps

For each fraction f, SeamCallback(mode="prune", selection="seam", fraction=f) drops the f
of D_rl with the largest SEAM (largest PM–RM discrepancy) before PPO starts; f = 0 is PPO
on the full set. Every run has the same seed and the same number of PPO steps, so a larger
f means the remaining prompts are revisited more often. SEAM is scored once and reused from
``<out>/seam_progress``. Q_PM is the gold RM's mean reward of greedy answers to held-out
prompts (95% CI over prompts). Writes ``<out>/filter_rate.json`` and ``<out>/filter_rate.png``.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from experiments.common import (Judges, add_common_args, ci_text, contrast_source, ensure_gold_rm, markdown_table,
                                figure, resolve, run_ppo, save_figure, write_json)
from seam_lightning import SeamCallback


def line_plot(path: Path, rows: list[dict], sft_mean: float, title: str) -> None:
    """Q_PM (with its 95% CI band) against the pruned fraction; π_SFT as a dashed line."""
    xs = [r["fraction"] for r in rows]
    fig, ax = figure()
    ax.plot(xs, [r["q_pm"]["mean"] for r in rows], marker="o", label="PPO, SEAM-pruned D_rl")
    ax.fill_between(xs, [r["q_pm"]["low"] for r in rows], [r["q_pm"]["high"] for r in rows], alpha=0.2)
    ax.axhline(sft_mean, color="gray", linestyle="--", label="π_SFT (no PPO)")
    ax.set_xlabel("share of D_rl pruned (largest SEAM first)")
    ax.set_ylabel("Q_PM: gold-RM reward (95% CI)")
    ax.legend()
    save_figure(fig, ax, path, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="pruned shares (default 0 0.1 0.2 0.4 0.6 0.8; quick 0 0.2 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.fractions = args.fractions or ([0.0, 0.2, 0.5] if args.quick else [0.0, 0.1, 0.2, 0.4, 0.6, 0.8])
    resolve(args)
    started = time.monotonic()
    gold = ensure_gold_rm(args)
    judges, source = Judges(args), contrast_source(args)
    sft = judges.evaluate_path(args.sft)

    rows = []
    for fraction in args.fractions:
        t0 = time.monotonic()
        callback = None
        if fraction > 0:
            callback = SeamCallback(source, mode="prune", selection="seam", fraction=fraction,
                                    num_candidates=args.candidates, every_n_epochs=0, reference_policy=args.sft,
                                    reward_model=args.rm, progress=False, save_progress=True,
                                    progress_dir=str(Path(args.out) / "seam_progress"))
        module = run_ppo(args, args.rm, args.seed, [callback] if callback else None)
        result = judges.evaluate(module.policy)
        pruned = len(callback.pruned_ids) if callback else 0
        result.update(fraction=fraction, pruned=pruned, prompts_trained_on=args.rl_prompts - pruned,
                      seconds=time.monotonic() - t0)
        rows.append(result)
        print(f"[fraction {fraction}] Q_PM {ci_text(result['q_pm'])}; RM reward {result['rm_reward']['mean']:.3f}; "
              f"{result['seconds']:.0f} s", flush=True)
        del module, callback
        gc.collect()
    seconds = time.monotonic() - started
    write_json(Path(args.out) / "filter_rate.json",
               {"settings": vars(args), "gold_rm": gold, "sft": sft, "rows": rows, "seconds": seconds})

    print(f"\nSettings: D_rl {args.rl_prompts} demo prompts, seed {args.seed}, {args.ppo_steps} PPO steps of "
          f"{args.batch_size} prompts, {args.new_tokens} new tokens, {args.candidates} candidates, Q_PM on "
          f"{args.val_prompts} held-out prompts by gold RM {args.gold_rm} (held-out accuracy {gold['accuracy']:.3f}); "
          f"total {seconds:.0f} s")
    table = [["π_SFT (no PPO)", "-", ci_text(sft["q_pm"]), f"{sft['rm_reward']['mean']:.3f}"]]
    table += [[f"{r['fraction']:.0%}", r["prompts_trained_on"], ci_text(r["q_pm"]), f"{r['rm_reward']['mean']:.3f}"]
              for r in rows]
    print(markdown_table(["pruned", "RL prompts", "Q_PM gold reward [95% CI]", "training-RM reward"], table))
    line_plot(Path(args.out) / "filter_rate.png", rows, sft["q_pm"]["mean"],
              f"Filter rate (App. E.1): {args.ppo_steps} PPO steps, {args.rl_prompts} prompts, seed {args.seed}")
    print(f"wrote {Path(args.out) / 'filter_rate.json'} and {Path(args.out) / 'filter_rate.png'}")


if __name__ == "__main__":
    main()
