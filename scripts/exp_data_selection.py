r"""Paper §7, Fig. 6 at small scale: PPO on all of D_rl vs D_rl pruned by each SEAM variant and the baselines.

    python scripts/exp_data_selection.py --quick    # 16 prompts, 2 PPO steps, 1 seed, π_SFT and the training RM
    python scripts/exp_data_selection.py --config scripts/experiments/configs/data_selection_demo.yaml
        # the top 2 (PM, RM) pairs of saturation_demo.yaml's ladder, its models reused from results/
    python scripts/exp_data_selection.py --config scripts/experiments/configs/paper.yaml \
        --config scripts/experiments/configs/data_selection_paper.yaml   # top 5 pairs of the paper's ladder

Variants (``--variants``), each run with every seed (PPOModule seed and data-order seed) and
the same number of PPO steps of the same batch size; every pruning drops ``--fraction`` of
D_rl (paper: 20%) once, before the first step, through SeamCallback(mode="prune"):
  full           PPO on all of D_rl;
  seam_contrast  the largest SEAM (largest PM–RM discrepancy, the paper's "low-SEAM data") with
                 SEAM_Contrast candidates (ContrastSource over --corpus-data, band [0.8, 0.9]);
  seam_llm       … with SEAM_GPT candidates: worse answers written by --llm-model at --llm-endpoint
                 (LLMSource, the paper's Prompt 2), or by a local causal LM with --llm-model
                 local:<name or path> (local: alone: π_SFT, --sft). Left out, with a printed
                 note, when no --llm-model is given;
  seam_adv       … with SEAM_Adv candidates: SEAM_Contrast candidates attacked (--adv-attack, default
                 deepwordbug, --adv-query-budget RM queries each) until the pair's RM prefers them;
  random         the same number of prompts drawn at random (nothing scored);
  perplexity     the highest perplexity of the golden response under --perplexity-model (the
                 paper's "LLaMa" baseline: LLaMa2-7B, its base model; default here --base).

Model pairs. By default one pair: π_SFT (--sft, also the KL reference) and the training RM
(--rm). With ``--ladder-top K`` the pairs come from the saturation study's ladders
(experiments/ladder.py, the same --pm-examples/--rm-pairs/--rm-backbone flags): the paper
"reuse[s] the policy model and reward model checkpoints from §3" and shows "the top-5 RMs and
PMs". The paper does not say whether that is 5 rank-matched pairs or a 5 × 5 grid; we take
rank-matched pairs (rank r PM with rank r RM, r = 1..K, rank 1 the best), as its other
rank-based experiments (§4.2, App. E.1, E.2) do, and ``--ladder-pairs grid`` runs all K × K.
Models are read from ``--ladder-dir`` (the saturation run's --out) when they exist with the
same settings, and trained there otherwise.

After training, the policy answers held-out --rl-val-data prompts greedily; Q_PM is the gold
RM's mean reward, or with ``--q-pm-judge llm`` an LLM judge's Prompt 1 rating (95% CI over
prompts and seeds pooled), next to the pair's RM reward of the same answers (PPOModule's
val/reward), and Δ, the per-prompt difference to ``full`` of the same pair (paired, pooled
over seeds) with its CI. Every PM's own Q_PM before PPO is the reference line.
Each variant × pair × seed is one cell of ``<out>/data_selection.cells.jsonl`` (so is each
PM's evaluation), saved when it finishes: a rerun after a crash resumes. SEAM scores are
reused across runs from ``<out>/seam_progress``. Writes ``<out>/data_selection.json``, ``.md``
(the table) and ``.png`` (grouped bars: one group per pair, one bar per variant).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time
from pathlib import Path
from typing import Any, NamedTuple

from experiments.common import Cells, cell_key, experiment_parser, resolve, run_ppo
from experiments.judges import Judges, paired_differences, q_pm_judge, q_pm_label, q_pm_text, rated
from experiments.ladder import (add_ladder_args, add_ladder_reuse_args, check_ladders, ensure_pm, ensure_rm,
                                ladder_sizes, pm_key, rm_key, rung_of_rank)
from experiments.outputs import ci_text, figure, save_figure, write_json, write_table
from experiments.sources import add_source_args, adversarial_source, contrast_source, llm_source
from seam_lightning import SeamCallback
from seam_lightning.eval.stats import mean_ci
from seam_lightning.models.loading import load_reward_model

VARIANTS = ("full", "seam_contrast", "seam_llm", "seam_adv", "random", "perplexity")
SELECTION = {"seam_contrast": "seam", "seam_llm": "seam", "seam_adv": "seam", "random": "random",
             "perplexity": "perplexity"}
"""SeamCallback's selection for each pruning variant."""


class Pair(NamedTuple):
    """One (PM, RM) pair: its name in tables, the models' paths and what identifies them in cell keys."""

    name: str
    pm: str
    rm: str
    pm_id: Any
    rm_id: Any


def add_args(parser) -> None:
    """This driver's own flags: variants, pruning, seeds, the SEAM_GPT/SEAM_Adv/perplexity settings, ladder mode."""
    p = parser.add_argument
    p("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="what to compare (default all)")
    p("--fraction", type=float, default=0.2, help="share of D_rl pruned (paper: 0.2)")
    p("--seeds", type=int, nargs="+", default=None, help="PPO seeds (default 0 1, quick 0)")
    add_source_args(parser, adv_query_budget=200, without_llm="without it seam_llm is left out")
    p("--perplexity-model", default=None, help="the perplexity baseline's LM (default --base; paper: LLaMa2-7B)")
    p("--ladder-top", type=int, default=0, help="0: the one pair (--sft, --rm); K: the ladder's top K pairs")
    p("--ladder-pairs", choices=["matched", "grid"], default="matched",
      help="matched: rank r PM with rank r RM (default); grid: every top-K PM with every top-K RM")
    add_ladder_args(parser)
    add_ladder_reuse_args(parser)


def chosen_variants(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(variants to run, notes on those left out): seam_llm needs --llm-model; the rest always run."""
    variants, notes = list(dict.fromkeys(args.variants)), []
    if "seam_llm" in variants and not args.llm_model:
        variants.remove("seam_llm")
        notes.append("seam_llm (SEAM_GPT) left out: no --llm-model (and --llm-endpoint) to write worse answers")
    return variants, notes


def model_pairs(args: argparse.Namespace) -> list[Pair]:
    """The (PM, RM) pairs: (--sft, --rm), or the ladder's top --ladder-top ranks, matched or as a grid."""
    if args.ladder_top <= 0:
        return [Pair("π_SFT / RM", args.sft, args.rm, args.sft, args.rm)]
    check_ladders(args)
    seed, ranks = args.ladder_seed, range(1, args.ladder_top + 1)
    rungs = {rank: rung_of_rank(args, rank) for rank in ranks}
    combos = [(r, r) for r in ranks] if args.ladder_pairs == "matched" else list(itertools.product(ranks, ranks))
    pairs = []
    for pm_rank, rm_rank in combos:
        pm_rung, rm_rung = rungs[pm_rank], rungs[rm_rank]
        k, m = args.pm_examples[pm_rung], args.rm_pairs[rm_rung]
        pairs.append(Pair(f"PM rank {pm_rank} (k={k}) / RM rank {rm_rank} (m={m})",
                          ensure_pm(args, k, seed), ensure_rm(args, rm_rung, seed),
                          pm_key(args, k, seed), rm_key(args, rm_rung, seed)))
    return pairs


def candidate_source(args: argparse.Namespace, variant: str, contrast):
    """The candidate source of ``variant`` (a fresh SEAM_Adv source per run: it binds the run's RM)."""
    if variant == "seam_llm":
        return llm_source(args, args.sft, Path(args.out) / "llm_candidates")
    if variant == "seam_adv":
        return adversarial_source(args, contrast)
    return contrast  # seam_contrast; random and perplexity score no candidates but the callback wants a source


def prune_callback(args: argparse.Namespace, variant: str, pair: Pair, contrast, seed: int) -> SeamCallback:
    """Prune ``args.fraction`` of D_rl once, before the first PPO step, as ``variant`` ranks it under ``pair``."""
    selection = SELECTION[variant]
    perplexity_model = (args.perplexity_model or args.base) if selection == "perplexity" else None
    return SeamCallback(candidate_source(args, variant, contrast), mode="prune", selection=selection,
                        fraction=args.fraction, num_candidates=args.candidates, every_n_epochs=0,
                        reference_policy=pair.pm, reward_model=pair.rm, perplexity_model=perplexity_model,
                        progress=False, save_progress=True, progress_dir=str(Path(args.out) / "seam_progress"),
                        seed=seed)


def variant_settings(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """The settings a variant's result depends on beyond the shared ones (for its cell key)."""
    if variant == "seam_llm":
        return {"llm_model": args.llm_model, "llm_endpoint": args.llm_endpoint}
    if variant == "seam_adv":
        return {"adv_attack": args.adv_attack, "adv_query_budget": args.adv_query_budget}
    if variant == "perplexity":
        return {"perplexity_model": args.perplexity_model or args.base}
    return {}


def use_training_rm(judges: Judges, path: str) -> None:
    """Score answers with ``path`` as the training RM from now on (each pair has its own RM)."""
    judges.train_rm = None
    gc.collect()
    judges.train_rm = load_reward_model(path).to(judges.device).eval()


def ppo_cell(args: argparse.Namespace, judges: Judges, contrast, variant: str, pair: Pair, seed: int) -> dict:
    """PPO from the pair's PM with its RM on D_rl, pruned as ``variant`` says; Q_PM and RM reward afterwards."""
    t0 = time.monotonic()
    callback = None if variant == "full" else prune_callback(args, variant, pair, contrast, seed)
    module = run_ppo(args, pair.rm, seed, [callback] if callback else None, policy=pair.pm)
    result = judges.evaluate(module.policy)
    result.update(variant=variant, pair=pair.name, seed=seed, seconds=time.monotonic() - t0,
                  pruned=len(callback.pruned_ids) if callback else 0,
                  pruned_ids=sorted(callback.pruned_ids) if callback else [],
                  scoring=callback.last_scoring if callback else None)
    del module, callback
    gc.collect()
    return result


def run_cells(args: argparse.Namespace, judges: Judges, contrast, pairs: list[Pair], variants: list[str]
              ) -> tuple[dict[str, dict], list[dict]]:
    """(each PM's own evaluation by pair name, every PPO run), each saved as a cell when it finishes."""
    cells, references, runs = Cells(Path(args.out) / "data_selection.cells.jsonl"), {}, []
    for pair in pairs:
        use_training_rm(judges, pair.rm)
        references[pair.name] = cells.run(cell_key(args, "data_selection_pm", pm=pair.pm_id, rm=pair.rm_id),
                                          lambda: judges.evaluate_path(pair.pm))
        for variant, seed in itertools.product(variants, args.seeds):
            key = cell_key(args, "data_selection", variant=variant, seed=seed, fraction=args.fraction,
                           pm=pair.pm_id, rm=pair.rm_id, **variant_settings(args, variant))
            result = cells.run(key, lambda: ppo_cell(args, judges, contrast, variant, pair, seed))
            runs.append(result)
            print(f"[{pair.name} | {variant} seed {seed}] Q_PM {ci_text(result['q_pm'])}; RM reward "
                  f"{result['rm_reward']['mean']:.3f}; pruned {result['pruned']}; {result['seconds']:.0f} s",
                  flush=True)
    return references, runs


def paired_delta(runs: list[dict], baseline: list[dict]) -> dict | None:
    """Per-prompt Q_PM differences to the baseline's run of the same seed, pooled over seeds, with CI (None
    without a baseline)."""
    if not baseline:
        return None
    by_seed = {r["seed"]: r["q_pm_per_prompt"] for r in baseline}
    return mean_ci([d for r in runs for d in paired_differences(r["q_pm_per_prompt"], by_seed[r["seed"]])]).to_dict()


def summarise(args: argparse.Namespace, pairs: list[Pair], variants: list[str], runs: list[dict]) -> list[dict]:
    """One row per pair and variant: pooled Q_PM and RM reward, per-seed Q_PM, Δ vs full, prompts trained on."""
    rows = []
    for pair, variant in itertools.product(pairs, variants):
        mine = [r for r in runs if r["pair"] == pair.name and r["variant"] == variant]
        full = [r for r in runs if r["pair"] == pair.name and r["variant"] == "full"]
        rows.append({"pair": pair.name, "variant": variant,
                     "q_pm": mean_ci([g for r in mine for g in rated(r["q_pm_per_prompt"])]).to_dict(),
                     "rm_reward": mean_ci([g for r in mine for g in r["rm_per_prompt"]]).to_dict(),
                     "per_seed_q_pm": [r["q_pm"]["mean"] for r in mine],
                     "delta_vs_full": None if variant == "full" else paired_delta(mine, full),
                     "prompts_trained_on": args.rl_prompts - mine[0]["pruned"]})
    return rows


def table_rows(pairs: list[Pair], references: dict[str, dict], rows: list[dict]) -> list[list[Any]]:
    """The markdown table: per pair, its PM before PPO, then each variant."""
    table = []
    for pair in pairs:
        ref = references[pair.name]
        table.append([pair.name, "PM alone (no PPO)", "-", ci_text(ref["q_pm"]), "-", "-",
                      f"{ref['rm_reward']['mean']:.3f}"])
        table += [[pair.name, r["variant"], r["prompts_trained_on"], ci_text(r["q_pm"]),
                   ci_text(r["delta_vs_full"]) if r["delta_vs_full"] else "-",
                   " ".join(f"{q:.3f}" for q in r["per_seed_q_pm"]), f"{r['rm_reward']['mean']:.3f}"]
                  for r in rows if r["pair"] == pair.name]
    return table


def grouped_bars(path: Path, pairs: list[Pair], variants: list[str], references: dict[str, dict],
                 rows: list[dict], ylabel: str, title: str) -> None:
    """Fig. 6: a group of bars per pair (one per variant, 95% CI), the PM's own Q_PM as a black tick."""
    fig, ax = figure(max(6.0, 1.2 + 0.45 * len(variants) * len(pairs)), 4.4)
    width = 0.8 / len(variants)
    for v, variant in enumerate(variants):
        cis = [next(r["q_pm"] for r in rows if r["pair"] == p.name and r["variant"] == variant) for p in pairs]
        xs = [i + (v - (len(variants) - 1) / 2) * width for i in range(len(pairs))]
        errors = [[c["mean"] - c["low"] for c in cis], [c["high"] - c["mean"] for c in cis]]
        ax.bar(xs, [c["mean"] for c in cis], width, yerr=errors, capsize=3, label=variant)
    for i, pair in enumerate(pairs):
        ax.hlines(references[pair.name]["q_pm"]["mean"], i - 0.45, i + 0.45, colors="black", linestyles="--",
                  label="PM alone (no PPO)" if i == 0 else None)
    ax.set_xticks(range(len(pairs)), [p.name.replace(" / ", "\n") for p in pairs], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, ax, path, title)


def main() -> None:
    parser = experiment_parser(__doc__)
    add_args(parser)
    args = parser.parse_args()
    args.seeds = args.seeds or ([0] if args.quick else [0, 1])
    resolve(args, models=() if args.ladder_top > 0 else ("sft", "rm"), **ladder_sizes())
    variants, notes = chosen_variants(args)
    for note in notes:
        print(f"NOTE: {note}", flush=True)
    started = time.monotonic()
    judge_info = q_pm_judge(args)
    pairs = model_pairs(args)
    judges = Judges(args, tokenizer=pairs[0].pm, train_rm=False)  # ladder PMs share the base model's tokenizer
    references, runs = run_cells(args, judges, contrast_source(args), pairs, variants)
    rows = summarise(args, pairs, variants, runs)
    seconds = time.monotonic() - started
    write_json(Path(args.out) / "data_selection.json",
               {"settings": vars(args), "variants": variants, "left_out": notes, "q_pm_judge": judge_info,
                "pairs": [p._asdict() for p in pairs], "references": references, "rows": rows, "runs": runs,
                "seconds": seconds})

    print(f"\nSettings: D_rl {args.rl_prompts} prompts, prune fraction {args.fraction}, {args.ppo_steps} PPO steps "
          f"of {args.batch_size} prompts, {args.new_tokens} new tokens, seeds {args.seeds}, {args.candidates} "
          f"candidates, {len(pairs)} (PM, RM) pair(s), variants {' '.join(variants)}"
          f"{'; ' + '; '.join(notes) if notes else ''}; {q_pm_text(args, judge_info)}; total {seconds:.0f} s")
    write_table(Path(args.out) / "data_selection.md",
                ["(PM, RM) pair", "variant", "RL prompts", f"{q_pm_label(args)} [95% CI]", "Δ vs full [95% CI]",
                 "Q_PM per seed", "pair's RM reward"], table_rows(pairs, references, rows))
    grouped_bars(Path(args.out) / "data_selection.png", pairs, variants, references, rows,
                 f"{q_pm_label(args)} (95% CI)",
                 f"Data selection (Fig. 6): prune {args.fraction:.0%}, {args.ppo_steps} PPO steps, seeds {args.seeds}")
    print(f"wrote {Path(args.out) / 'data_selection.json'}, .md and .png")


if __name__ == "__main__":
    main()
