r"""Paper §4.1, Fig. 3 at small scale: do the PM and the RM keep their quality on the other stages' data?

    python scripts/exp_sanity.py --config scripts/experiments/configs/sanity_demo.yaml   # 2 PMs, 2 RMs, 3 seeds
    python scripts/exp_sanity.py --quick         # ladders of 0 and 16 examples/pairs, 8 prompts, 32 pairs
    python scripts/exp_sanity.py --config scripts/experiments/configs/paper.yaml \
        --config scripts/experiments/configs/sanity_paper.yaml

The PMs and RMs are rungs of the saturation study's ladders (experiments/ladder.py: SFT of
--base on the first k examples of D_p; RMs on the first m pairs of D_r, from the PM of the same
rung), each trained with every seed (``--seeds``, paper: 3). Cross-validation on the held-out
splits of the three data sets:
  Q_PM of each PM on held-out instructions of D_p (--sft-val-data), D_r (--preference-val-data)
      and D_rl (--rl-val-data): the gold RM's mean reward of greedy answers, or with
      ``--q-pm-judge llm`` an LLM judge's Prompt 1 rating 0-10;
  Q_RM of each RM on D_r's held-out pairs and on golden-vs-worse pairs built from D_p's and
      D_rl's held-out (instruction, golden answer) records: the worse answer is SEAM_Contrast's
      closest in-band candidate (the golden answer of a similar but different corpus instruction,
      a worse answer by construction) or, where the band is empty, the golden answer of another
      record of the same split (seeded).
In the demo data, D_r's held-out pairs are built on D_p's held-out items, so there the D_p and
D_r instruction sets coincide and the D_p pairs differ from D_r's in the worse answer only.
The paper finds both stay level across the sets (on D_rl the PM reaches 96% of its D_p score).
The table gives each (model, set) as the mean over seeds with a 95% CI over seeds, and D_rl
against the in-domain set (D_p for a PM, D_r for an RM) as a ratio (a difference for gold-RM
rewards, which have no zero to divide by). Every (model, seed) evaluation is appended to
``<out>/sanity.cells.jsonl`` when done and trained models stay under ``<out>/models`` (shared
with exp_saturation.py where the settings match), so a rerun resumes. Writes
``<out>/sanity.json``, ``.md`` (the table) and ``.png`` (Fig. 3's grouped bars).
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from pathlib import Path

from experiments.common import Cells, cell_key, experiment_parser, pair_accuracy, resolve
from experiments.judges import Judges, q_pm_judge, q_pm_label, q_pm_text
from experiments.ladder import add_ladder_args, check_ladders, ensure_pm, ensure_rm, ladder_sizes, pm_key, rm_key
from experiments.outputs import figure, save_figure, write_json, write_table
from experiments.sources import contrast_source
from seam_lightning import DataSource
from seam_lightning.data.records import load_records
from seam_lightning.eval.stats import mean_ci
from seam_lightning.models.loading import load_reward_model, load_tokenizer

DEMO_PM_EXAMPLES, DEMO_RM_PAIRS = [0, 128], [0, 128]  # the quick sizes are the ladder's
SETS = ("D_p", "D_r", "D_rl")
PM_IN_DOMAIN, RM_IN_DOMAIN = "D_p", "D_r"
WORSE_SEED = 0  # the test pairs are one fixed set for every model and seed


def instruction_sets(args: argparse.Namespace) -> dict[str, list[str]]:
    """The held-out instructions each PM answers: the first --val-prompts of each data set's test split."""
    def first(path: str) -> list[str]:
        texts = [r.text["instruction"] for r in load_records(DataSource(path), ("instruction",))]
        return list(dict.fromkeys(texts))[:args.val_prompts]  # D_r repeats an instruction per pair
    return {"D_p": first(args.sft_val_data), "D_r": first(args.preference_val_data), "D_rl": first(args.rl_val_data)}


def worse_answers(instructions: list[str], golden: list[str], contrast: list[list[str]], seed: int
                  ) -> tuple[list[str], int]:
    """A worse answer per record: its first contrast candidate, else another record's golden answer; (answers,
    how many came from contrast)."""
    rng, worse = random.Random(seed), []
    for i, candidates in enumerate(contrast):
        if candidates:
            worse.append(candidates[0])
            continue
        others = [j for j in range(len(golden)) if golden[j] != golden[i]]
        worse.append(golden[rng.choice(others)] if others else "")
    return worse, sum(bool(c) for c in contrast)


def golden_vs_worse(args: argparse.Namespace, source, path: str) -> dict:
    """(instruction, golden, worse) columns from the first --pref-val records of a test split of D_p or D_rl."""
    records = load_records(DataSource(path, limit=args.pref_val), ("instruction", "response"))
    instructions = [r.text["instruction"] for r in records]
    golden = [r.text["response"] for r in records]
    worse, from_contrast = worse_answers(instructions, golden, source.candidates(instructions, golden, 1), WORSE_SEED)
    return {"instruction": instructions, "chosen": golden, "rejected": worse, "from_contrast": from_contrast}


def pair_sets(args: argparse.Namespace) -> dict[str, dict]:
    """Q_RM's test pairs per data set: D_r's own, golden-vs-worse from D_p and D_rl."""
    fields = ("instruction", "chosen", "rejected")
    records = load_records(DataSource(args.preference_val_data, limit=args.pref_val), fields)
    source = contrast_source(args)
    return {"D_p": golden_vs_worse(args, source, args.sft_val_data),
            "D_r": {f: [r.text[f] for r in records] for f in fields},
            "D_rl": golden_vs_worse(args, source, args.rl_val_data)}


def pm_cell(args: argparse.Namespace, judges: Judges, instructions: dict[str, list[str]], rung: int, seed: int) -> dict:
    """Q_PM of PM rung ``rung`` (trained with ``seed``) on each data set's held-out instructions."""
    t0 = time.monotonic()
    path = ensure_pm(args, args.pm_examples[rung], seed)
    sets = {name: judges.evaluate_path(path, texts) for name, texts in instructions.items()}
    return {"k": args.pm_examples[rung], "seed": seed, "path": path, "sets": sets, "seconds": time.monotonic() - t0}


def rm_cell(args: argparse.Namespace, pairs: dict[str, dict], rung: int, seed: int) -> dict:
    """Q_RM of RM rung ``rung`` (trained with ``seed``) on each data set's test pairs."""
    t0 = time.monotonic()
    path = ensure_rm(args, rung, seed)
    model, tokenizer = load_reward_model(path), load_tokenizer(path)
    accuracy = {name: pair_accuracy(args, model, tokenizer, p["instruction"], p["chosen"], p["rejected"])
                for name, p in pairs.items()}
    del model
    gc.collect()
    return {"m": args.rm_pairs[rung], "seed": seed, "path": path, "accuracy": accuracy,
            "seconds": time.monotonic() - t0}


def summary(per_seed: dict[str, list[float]], in_domain: str, ratio: bool) -> dict:
    """Mean and 95% CI over seeds per set; D_rl against the in-domain set (ratio of means, or mean difference)."""
    row = {name: mean_ci(values).to_dict() for name, values in per_seed.items()}
    base, rl = row[in_domain]["mean"], row["D_rl"]["mean"]
    row["D_rl_vs_in_domain"] = (rl / base if base else float("nan")) if ratio else rl - base
    return row


def summarise(args: argparse.Namespace, pms: list[dict], rms: list[dict]) -> list[dict]:
    """One row per PM rung and RM rung: the per-seed results pooled (`summary`)."""
    rows = []
    for k in args.pm_examples:
        mine = [p for p in pms if p["k"] == k]
        per_seed = {name: [p["sets"][name]["q_pm"]["mean"] for p in mine] for name in SETS}
        rows.append({"model": f"PM k={k}", "measure": "Q_PM", "in_domain": PM_IN_DOMAIN,
                     **summary(per_seed, PM_IN_DOMAIN, ratio=args.q_pm_judge == "llm")})
    for m in args.rm_pairs:
        mine = [r for r in rms if r["m"] == m]
        per_seed = {name: [r["accuracy"][name] for r in mine] for name in SETS}
        rows.append({"model": f"RM m={m}", "measure": "Q_RM", "in_domain": RM_IN_DOMAIN,
                     **summary(per_seed, RM_IN_DOMAIN, ratio=True)})
    return rows


def bars(ax, rows: list[dict], ylabel: str) -> None:
    """Grouped bars: a group per model, a bar per data set, error bars the 95% CI over seeds."""
    width = 0.8 / len(SETS)
    for s, name in enumerate(SETS):
        xs = [i + (s - (len(SETS) - 1) / 2) * width for i in range(len(rows))]
        means = [r[name]["mean"] for r in rows]
        errors = [[r[name]["mean"] - r[name]["low"] for r in rows], [r[name]["high"] - r[name]["mean"] for r in rows]]
        ax.bar(xs, means, width, yerr=errors, capsize=4, label=f"{name} test")
    ax.set_xticks(range(len(rows)), [r["model"] for r in rows], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def plot(path: Path, rows: list[dict], label: str, title: str) -> None:
    """Fig. 3: the PMs' Q_PM and the RMs' Q_RM on each data set's test split."""
    fig, (pm_ax, rm_ax) = figure(10, 4.2, ncols=2)
    bars(pm_ax, [r for r in rows if r["measure"] == "Q_PM"], f"{label} (95% CI over seeds)")
    bars(rm_ax, [r for r in rows if r["measure"] == "Q_RM"], "Q_RM: preference accuracy (95% CI over seeds)")
    rm_ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)  # chance
    pm_ax.set_title("PMs", fontsize=9)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, rm_ax, path, "RMs (dashed: chance)")


def main() -> None:
    parser = experiment_parser(__doc__)
    add_ladder_args(parser, DEMO_PM_EXAMPLES, DEMO_RM_PAIRS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (paper: 3)")
    args = parser.parse_args()
    resolve(args, models=(), **ladder_sizes(DEMO_PM_EXAMPLES, DEMO_RM_PAIRS))
    check_ladders(args)
    started = time.monotonic()
    judge_info = q_pm_judge(args)
    judges = Judges(args, tokenizer=args.base, train_rm=False)  # every PM shares the base model's tokenizer
    instructions, pairs = instruction_sets(args), pair_sets(args)
    cells, pms, rms = Cells(Path(args.out) / "sanity.cells.jsonl"), [], []
    for seed in args.seeds:
        for i, k in enumerate(args.pm_examples):
            key = cell_key(args, "sanity_pm", pm=pm_key(args, k, seed))
            pms.append(cells.run(key, lambda: pm_cell(args, judges, instructions, i, seed)))
            print(f"[PM k={k} seed {seed}] Q_PM " + ", ".join(
                f"{name} {pms[-1]['sets'][name]['q_pm']['mean']:.3f}" for name in SETS), flush=True)
        for j, m in enumerate(args.rm_pairs):
            key = cell_key(args, "sanity_rm", rm=rm_key(args, j, seed), worse_seed=WORSE_SEED)
            rms.append(cells.run(key, lambda: rm_cell(args, pairs, j, seed)))
            print(f"[RM m={m} seed {seed}] Q_RM " + ", ".join(
                f"{name} {rms[-1]['accuracy'][name]:.3f}" for name in SETS), flush=True)
    rows = summarise(args, pms, rms)
    seconds = time.monotonic() - started
    label = q_pm_label(args)
    write_json(Path(args.out) / "sanity.json",
               {"settings": vars(args), "q_pm_judge": judge_info, "rows": rows, "pms": pms, "rms": rms,
                "test_sets": {"instructions": {n: len(v) for n, v in instructions.items()},
                              "pairs": {n: len(p["instruction"]) for n, p in pairs.items()},
                              "worse_from_contrast": {n: p.get("from_contrast") for n, p in pairs.items()}},
                "seconds": seconds})

    print(f"\nSettings: base {args.base}; PMs SFT on {args.pm_examples} D_p examples, RMs on {args.rm_pairs} D_r pairs "
          f"from {args.rm_backbone}; seeds {args.seeds}; Q_RM on {args.pref_val} pairs per set (worse answers of D_p/"
          f"D_rl from SEAM_Contrast: {pairs['D_p']['from_contrast']}/{pairs['D_rl']['from_contrast']}, the rest "
          f"another record's answer); {q_pm_text(args, judge_info)}; total {seconds:.0f} s")
    table = [[r["model"], r["measure"], *(f"{r[n]['mean']:.3f} ± {r[n]['high'] - r[n]['mean']:.3f}" for n in SETS),
              f"{r['D_rl_vs_in_domain']:.3f} vs {r['in_domain']}"] for r in rows]
    headers = ["model", "measure", *(f"{n} test (mean ± 95% CI over seeds)" for n in SETS),
               "D_rl vs in-domain (ratio; Q_PM by gold RM: difference)"]
    write_table(Path(args.out) / "sanity.md", headers, table)
    plot(Path(args.out) / "sanity.png", rows, label, f"Sanity check (Fig. 3): seeds {args.seeds}")
    print(f"wrote {Path(args.out) / 'sanity.json'}, .md and .png")


if __name__ == "__main__":
    main()
