r"""Paper §3, Fig. 2 at small scale: does RLHF quality saturate as the PM and the RM get better?

    python scripts/exp_saturation.py --config scripts/experiments/configs/saturation_demo.yaml   # 3 PMs x 3 RMs
    python scripts/exp_saturation.py --quick        # 2 x 2 ladders of 0 and 16 examples/pairs, 16 prompts, 2 PPO steps
    python scripts/exp_saturation.py --config scripts/experiments/configs/paper.yaml \
        --config scripts/experiments/configs/saturation_paper.yaml                           # the paper's 10 x 10

Two ladders of models of growing quality (experiments/ladder.py): PM rung k is the base model
(--base) fine-tuned on the first k examples of D_p (k = 0: the base model itself); RM rung m
is trained on the first m pairs of D_r from the PM of the same rung (m = 0: a random reward
head). Every (PM, RM) cell is one PPO run from that PM (also its KL reference) with that RM
on D_rl, the same seed and steps in every cell. Measured:
  Q_PM of each PM before RLHF and of each cell's RLHF policy: the gold RM's mean reward of
      greedy answers to held-out prompts, or with ``--q-pm-judge llm`` an LLM judge's Prompt 1
      rating 0-10 (the paper's measure), 95% CI over prompts;
  Q_RM of each RM: preference accuracy on held-out pairs (--preference-val-data).
The paper's saturation: RLHF Q_PM rises with Q_PM of the PM and Q_RM of the RM, then stops.
Every PM evaluation, RM evaluation and PPO cell is appended to ``<out>/saturation.cells.jsonl``
when it finishes and each trained model is kept under ``<out>/models``, so a rerun after a
crash resumes with what it lacks. Writes ``<out>/saturation.json``, ``.md`` (the grid),
``.png`` (the paper's line plots: RLHF Q_PM against the PM's Q_PM, one line per RM, and
against the RM's Q_RM, one line per PM) and ``saturation_heatmap.png``.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from experiments.common import Cells, cell_key, experiment_parser, resolve, rm_accuracy, run_ppo
from experiments.judges import Judges, q_pm_judge, q_pm_label, q_pm_text
from experiments.ladder import add_ladder_args, check_ladders, ensure_pm, ensure_rm, ladder_sizes, pm_key, rm_key
from experiments.outputs import ci_text, figure, save_figure, write_json, write_table
from seam_lightning.models.loading import load_reward_model, load_tokenizer


def pm_cell(args: argparse.Namespace, judges: Judges, rung: int) -> dict:
    """Q_PM of PM rung ``rung`` itself (before RLHF)."""
    t0 = time.monotonic()
    path = ensure_pm(args, args.pm_examples[rung], args.seed)
    result = judges.evaluate_path(path)
    result.update(k=args.pm_examples[rung], path=path, seconds=time.monotonic() - t0)
    return result


def rm_cell(args: argparse.Namespace, rung: int) -> dict:
    """Q_RM of RM rung ``rung``: its held-out preference accuracy."""
    t0 = time.monotonic()
    path = ensure_rm(args, rung, args.seed)
    model = load_reward_model(path)
    q_rm = rm_accuracy(args, model, load_tokenizer(path), args.pref_val)
    del model
    gc.collect()
    return {"m": args.rm_pairs[rung], "path": path, "q_rm": q_rm, "seconds": time.monotonic() - t0}


def ppo_cell(args: argparse.Namespace, judges: Judges, pm_rung: int, rm_rung: int) -> dict:
    """PPO from PM rung ``pm_rung`` with RM rung ``rm_rung``; Q_PM of the RLHF policy."""
    t0 = time.monotonic()
    policy, reward_model = ensure_pm(args, args.pm_examples[pm_rung], args.seed), ensure_rm(args, rm_rung, args.seed)
    module = run_ppo(args, reward_model, args.seed, policy=policy)
    result = judges.evaluate(module.policy)
    del module
    gc.collect()
    result.update(k=args.pm_examples[pm_rung], m=args.rm_pairs[rm_rung], seconds=time.monotonic() - t0)
    return result


def run_grid(args: argparse.Namespace, judges: Judges) -> tuple[list[dict], list[dict], list[list[dict]]]:
    """(PM results, RM results, PPO results [PM rung][RM rung]), each saved as a cell when it finishes."""
    cells, seed = Cells(Path(args.out) / "saturation.cells.jsonl"), args.seed
    pms = [cells.run(cell_key(args, "saturation_pm", pm=pm_key(args, k, seed)), lambda: pm_cell(args, judges, i))
           for i, k in enumerate(args.pm_examples)]
    rms = [cells.run(cell_key(args, "saturation_rm", rm=rm_key(args, j, seed)), lambda: rm_cell(args, j))
           for j in range(len(args.rm_pairs))]
    for pm in pms:
        print(f"[PM k={pm['k']}] Q_PM {ci_text(pm['q_pm'])}", flush=True)
    for rm in rms:
        print(f"[RM m={rm['m']}] Q_RM {rm['q_rm']:.3f}", flush=True)
    grid = []
    for i, k in enumerate(args.pm_examples):
        grid.append([])
        for j, m in enumerate(args.rm_pairs):
            key = cell_key(args, "saturation_ppo", pm=pm_key(args, k, seed), rm=rm_key(args, j, seed))
            result = cells.run(key, lambda: ppo_cell(args, judges, i, j))
            grid[-1].append(result)
            print(f"[PM k={k} x RM m={m}] RLHF Q_PM {ci_text(result['q_pm'])}; {result['seconds']:.0f} s", flush=True)
    return pms, rms, grid


def line_plots(path: Path, pms: list[dict], rms: list[dict], grid: list[list[dict]], label: str, title: str) -> None:
    """Fig. 2's two views: RLHF Q_PM against the PM's Q_PM (a line per RM) and against Q_RM (a line per PM)."""
    fig, (by_pm, by_rm) = figure(11, 4.4, ncols=2)
    for j, rm in enumerate(rms):
        points = sorted((pm["q_pm"]["mean"], grid[i][j]["q_pm"]["mean"]) for i, pm in enumerate(pms))
        by_pm.plot(*zip(*points), marker="o", label=f"RM m={rm['m']} (Q_RM {rm['q_rm']:.2f})")
    for i, pm in enumerate(pms):
        points = sorted((rm["q_rm"], grid[i][j]["q_pm"]["mean"]) for j, rm in enumerate(rms))
        by_rm.plot(*zip(*points), marker="o", label=f"PM k={pm['k']}")
    by_pm.set_xlabel(f"PM quality ({label} of the PM itself)")
    by_rm.set_xlabel("RM quality (Q_RM: held-out preference accuracy)")
    for ax in (by_pm, by_rm):
        ax.set_ylabel(f"RLHF model: {label}")
        ax.legend(fontsize=7)
    by_pm.set_title("by PM quality", fontsize=9)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, by_rm, path, "by RM quality")


def heatmap(path: Path, pms: list[dict], rms: list[dict], grid: list[list[dict]], label: str, title: str) -> None:
    """RLHF Q_PM of every (PM, RM) cell, PM quality rising upwards and RM quality rightwards, annotated."""
    values = [[cell["q_pm"]["mean"] for cell in row] for row in grid]
    fig, ax = figure(3.2 + 1.3 * len(rms), 1.8 + 0.8 * len(pms))
    image = ax.imshow(values, origin="lower", cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(rms)), [f"m={rm['m']}\nQ_RM {rm['q_rm']:.2f}" for rm in rms], fontsize=8)
    ax.set_yticks(range(len(pms)), [f"k={pm['k']}\nQ_PM {pm['q_pm']['mean']:.2f}" for pm in pms], fontsize=8)
    ax.set_xlabel("RM: preference pairs m")
    ax.set_ylabel("PM: SFT examples k")
    middle = (min(map(min, values)) + max(map(max, values))) / 2
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < middle else "black")
    fig.colorbar(image, ax=ax, label=f"RLHF model: {label}")
    save_figure(fig, ax, path, title)


def main() -> None:
    parser = experiment_parser(__doc__)
    add_ladder_args(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of every training run (SFT, RM, PPO)")
    args = parser.parse_args()
    resolve(args, models=(), **ladder_sizes())
    check_ladders(args)
    started = time.monotonic()
    judge_info = q_pm_judge(args)
    judges = Judges(args, tokenizer=args.base, train_rm=False)  # every PM shares the base model's tokenizer
    pms, rms, grid = run_grid(args, judges)
    seconds = time.monotonic() - started
    label = q_pm_label(args)
    write_json(Path(args.out) / "saturation.json",
               {"settings": vars(args), "q_pm_judge": judge_info, "pms": pms, "rms": rms, "grid": grid,
                "cells": [{"k": pm["k"], "m": rm["m"], "pm_q_pm": pm["q_pm"]["mean"], "q_rm": rm["q_rm"],
                           "rlhf_q_pm": cell["q_pm"]} for pm, row in zip(pms, grid) for rm, cell in zip(rms, row)],
                "seconds": seconds})

    print(f"\nSettings: base {args.base}; PMs SFT on {args.pm_examples} D_p examples ({args.sft_epochs} epochs); RMs "
          f"on {args.rm_pairs} D_r pairs ({args.rm_epochs} epochs) from {args.rm_backbone}; PPO {args.ppo_steps} steps "
          f"of {args.batch_size} of {args.rl_prompts} D_rl prompts, {args.new_tokens} new tokens, seed {args.seed}; "
          f"Q_RM on {args.pref_val} held-out pairs; {q_pm_text(args, judge_info)}; total {seconds:.0f} s")
    headers = ["PM \\ RM", f"PM alone: {label}"] + [f"RM m={rm['m']} (Q_RM {rm['q_rm']:.3f})" for rm in rms]
    rows = [[f"k={pm['k']}", ci_text(pm["q_pm"])] + [ci_text(cell["q_pm"]) for cell in row]
            for pm, row in zip(pms, grid)]
    write_table(Path(args.out) / "saturation.md", headers, rows)
    title = f"Saturation (Fig. 2): {args.ppo_steps} PPO steps per cell, seed {args.seed}"
    line_plots(Path(args.out) / "saturation.png", pms, rms, grid, label, title)
    heatmap(Path(args.out) / "saturation_heatmap.png", pms, rms, grid, label, title)
    print(f"wrote {Path(args.out) / 'saturation.json'}, .md, .png and saturation_heatmap.png")


if __name__ == "__main__":
    main()
