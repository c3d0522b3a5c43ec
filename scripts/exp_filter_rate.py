"""Paper Appendix E.1 at small scale: Q_PM after PPO as a function of the share of D_rl pruned by SEAM.

    python scripts/exp_filter_rate.py               # 10 20 30 40 60 80% (App. E.1) + 0%: 7 runs, ~1.5 min each
    python scripts/exp_filter_rate.py --quick       # 20 40% + the 0% reference, 16 prompts, 2 PPO steps
    python scripts/exp_filter_rate.py --order smallest   # ablation: prune the smallest SEAM instead

For each fraction f, SeamCallback(mode="prune", selection="seam", fraction=f) drops the f
of D_rl with the largest SEAM (Eq. 2: the largest PM–RM discrepancy, i.e. the lowest
seamlessness, the paper's "low-SEAM data"; ``--order smallest`` drops the other end) before
PPO starts. The grid is App. E.1's {10, 20, 30, 40, 60, 80}%; f = 0, PPO on the full set, is
the reference run and always runs first (added if ``--fractions`` leaves it out). Every run
has the same seed and the same number of PPO steps, so a larger f means the remaining prompts
are revisited more often. SEAM is scored once and reused from ``<out>/seam_progress``. Q_PM
is the gold RM's mean reward of greedy answers to held-out prompts, or with ``--q-pm-judge llm``
an LLM judge's Prompt 1 rating (95% CI over prompts); Δ is the paired per-prompt difference
to the 0% run. Each finished PPO run is appended to ``<out>/filter_rate.cells.jsonl`` at once,
so a rerun after a crash resumes with the runs it lacks. Writes ``<out>/filter_rate.json``,
``.md`` (the table) and ``.png``.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from experiments.common import Cells, cell_key, experiment_parser, resolve, run_ppo
from experiments.judges import Judges, paired_differences, q_pm_judge, q_pm_label, q_pm_text
from experiments.outputs import ci_text, figure, save_figure, write_json, write_table
from experiments.sources import contrast_source
from seam_lightning import SeamCallback
from seam_lightning.eval.stats import mean_ci

PAPER_RATES = [0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
"""App. E.1's filter rates; the paper settles on 0.2 (its peak is near 0.4)."""
QUICK_RATES = [0.2, 0.4]


def fraction_grid(fractions: list[float] | None, quick: bool) -> list[float]:
    """The pruned shares to run, ascending and without repeats, always with the 0% reference run first."""
    chosen = fractions if fractions is not None else (QUICK_RATES if quick else PAPER_RATES)
    bad = [f for f in chosen if not 0.0 <= f < 1.0]
    if bad:
        raise SystemExit(f"--fractions must lie in [0, 1) (1 would prune every prompt), got {bad}")
    return sorted({0.0, *chosen})


def paired_delta(run: dict, reference: dict) -> dict:
    """Mean per-prompt Q_PM difference of ``run`` to the 0% reference run, with its 95% CI."""
    return mean_ci(paired_differences(run["q_pm_per_prompt"], reference["q_pm_per_prompt"])).to_dict()


def line_plot(path: Path, rows: list[dict], sft_mean: float, title: str, ylabel: str) -> None:
    """Q_PM (with its 95% CI band) against the pruned fraction; π_SFT as a dashed line."""
    xs = [r["fraction"] for r in rows]
    fig, ax = figure()
    ax.plot(xs, [r["q_pm"]["mean"] for r in rows], marker="o", label="PPO, SEAM-pruned D_rl")
    ax.fill_between(xs, [r["q_pm"]["low"] for r in rows], [r["q_pm"]["high"] for r in rows], alpha=0.2)
    ax.axhline(sft_mean, color="gray", linestyle="--", label="π_SFT (no PPO)")
    ax.set_xlabel(f"share of D_rl pruned ({rows[0]['order']} SEAM first)")
    ax.set_ylabel(f"{ylabel} (95% CI)")
    ax.legend()
    save_figure(fig, ax, path, title)


def ppo_cell(args: argparse.Namespace, judges: Judges, source, fraction: float) -> dict:
    """One PPO run on D_rl less the ``fraction`` pruned by SEAM (none at 0), evaluated on held-out prompts."""
    t0 = time.monotonic()
    callback = None
    if fraction > 0:
        callback = SeamCallback(source, mode="prune", selection="seam", fraction=fraction, order=args.order,
                                num_candidates=args.candidates, every_n_epochs=0, reference_policy=args.sft,
                                reward_model=args.rm, progress=False, save_progress=True,
                                progress_dir=str(Path(args.out) / "seam_progress"))
    module = run_ppo(args, args.rm, args.seed, [callback] if callback else None)
    result = judges.evaluate(module.policy)
    pruned = len(callback.pruned_ids) if callback else 0
    result.update(fraction=fraction, order=args.order, pruned=pruned, prompts_trained_on=args.rl_prompts - pruned,
                  seconds=time.monotonic() - t0)
    del module, callback
    gc.collect()
    return result


def main() -> None:
    parser = experiment_parser(__doc__)
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="pruned shares (default App. E.1's 0.1 0.2 0.3 0.4 0.6 0.8; quick 0.2 0.4); "
                             "the 0 reference run is always added")
    parser.add_argument("--order", choices=["largest", "smallest"], default="largest",
                        help="prune the largest SEAM (default: lowest seamlessness, the paper's) or the smallest")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.fractions = fraction_grid(args.fractions, args.quick)
    resolve(args)
    started = time.monotonic()
    judge_info = q_pm_judge(args)
    judges, source = Judges(args), contrast_source(args)
    sft = judges.evaluate_path(args.sft)

    # Each finished PPO run is saved at once: a killed grid resumes with the runs it lacks.
    cells, rows = Cells(Path(args.out) / "filter_rate.cells.jsonl"), []
    for fraction in args.fractions:
        key = cell_key(args, "filter_rate", fraction=fraction, order=args.order, seed=args.seed)
        result = dict(cells.run(key, lambda: ppo_cell(args, judges, source, fraction)))
        result["delta_vs_reference"] = paired_delta(result, rows[0] if rows else result)  # rows[0]: the 0% run
        rows.append(result)
        print(f"[fraction {fraction}] Q_PM {ci_text(result['q_pm'])}; "
              f"Δ vs 0% {ci_text(result['delta_vs_reference'])}; RM reward {result['rm_reward']['mean']:.3f}; "
              f"{result['seconds']:.0f} s", flush=True)
    seconds = time.monotonic() - started
    write_json(Path(args.out) / "filter_rate.json",
               {"settings": vars(args), "q_pm_judge": judge_info, "sft": sft, "rows": rows, "seconds": seconds})

    print(f"\nSettings: D_rl {args.rl_prompts} demo prompts, prune the {args.order} SEAM, seed {args.seed}, "
          f"{args.ppo_steps} PPO steps of {args.batch_size} prompts, {args.new_tokens} new tokens, {args.candidates} "
          f"candidates, {q_pm_text(args, judge_info)}; total {seconds:.0f} s")
    table = [["π_SFT (no PPO)", "-", ci_text(sft["q_pm"]), "-", f"{sft['rm_reward']['mean']:.3f}"]]
    table += [[f"{r['fraction']:.0%}" + (" (reference)" if r["fraction"] == 0 else ""), r["prompts_trained_on"],
               ci_text(r["q_pm"]), ci_text(r["delta_vs_reference"]), f"{r['rm_reward']['mean']:.3f}"] for r in rows]
    write_table(Path(args.out) / "filter_rate.md", ["pruned", "RL prompts", f"{q_pm_label(args)} [95% CI]",
                                                    "Δ vs 0% [95% CI]", "training-RM reward"], table)
    line_plot(Path(args.out) / "filter_rate.png", rows, sft["q_pm"]["mean"],
              f"Filter rate (App. E.1): {args.ppo_steps} PPO steps, {args.rl_prompts} prompts, seed {args.seed}",
              q_pm_label(args))
    print(f"wrote {Path(args.out) / 'filter_rate.json'}, .md and .png")


if __name__ == "__main__":
    main()
