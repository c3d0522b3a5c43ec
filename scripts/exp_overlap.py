"""Paper Appendix E.2, Table 3 at small scale: do different (PM, RM) pairs flag the same RL prompts?

    python scripts/exp_overlap.py                   # 64 prompts, 30 candidates, 4 model pairs (~3 min)
    python scripts/exp_overlap.py --quick           # 16 prompts, 10 candidates
    python scripts/exp_overlap.py --config scripts/experiments/configs/overlap_demo.yaml   # ranks 1-3 of the
                                                    # saturation demo's ladder, its models reused from results/
    python scripts/exp_overlap.py --config scripts/experiments/configs/paper.yaml \
        --config scripts/experiments/configs/overlap_paper.yaml                 # Table 3: ranks 1, 3, 5

The same D_rl and the same SEAM_Contrast candidates are scored with SEAM under several (PM, RM)
pairs. By default: every pair of PM ∈ {π_SFT (--sft), the base model without SFT (--base)} and
RM ∈ {the training RM (--rm), the gold RM (--gold-rm)}. With ``--ladder-ranks``, as the paper
builds Table 3: the rank r PM with the rank r RM of the saturation study's ladders for each r
given (paper: 1, 3, 5; rank 1 = the best, the ladder's last rung), the models read from
``--ladder-dir`` (the saturation run's --out) or trained there (experiments/ladder.py, the
same --pm-examples/--rm-pairs/--rm-backbone flags). App. E.2 does not say which SEAM variant
it compares ("following the previous setup"); we use SEAM_Contrast, the one that needs no
chat model. Here SEAM is the PM–RM discrepancy, so the "low-
seamlessness" set of the paper is the ``--fraction`` of prompts with the *largest* SEAM
(the set SeamCallback would prune). For every two model pairs A, B the table gives the
overlap |S_A ∩ S_B| / |S_A| of those sets (chance level: the fraction itself) and the
Spearman rank correlation of the full score vectors; ``overlap.md`` shows the overlaps first as
Table 3 does (a lower-triangular matrix). Each model pair's scores are appended to
``<out>/overlap.cells.jsonl`` as soon as they are done, so a rerun after a crash scores only
the pairs it lacks. Writes ``<out>/overlap.json``, ``.md`` (the table) and ``.png`` (a heatmap
of the overlaps).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from scipy.stats import spearmanr

from experiments.common import Cells, cell_key, experiment_parser, ensure_gold_rm, resolve, rl_records, seam_scores
from experiments.ladder import (add_ladder_args, add_ladder_reuse_args, check_ladders, ensure_pm, ensure_rm,
                                ladder_sizes, pm_key, rm_key, rung_of_rank)
from experiments.outputs import figure, markdown_table, save_figure, write_json
from experiments.sources import contrast_source
from seam_lightning import files
from seam_lightning.seam.scorer import SeamExample
from seam_lightning.seam.selection import largest_seam


def heatmap(path: Path, names: list[str], matrix: list[list[float]], title: str) -> None:
    """An annotated heatmap of the pairwise overlaps."""
    fig, ax = figure(6.5, 5)
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="overlap |A∩B| / |A|")
    save_figure(fig, ax, path, title)


def model_pairs(args: argparse.Namespace) -> dict[str, dict]:
    """Name -> {pm, rm: paths; pm_id, rm_id: what identifies them in cell keys} of every scored (PM, RM) pair."""
    if not args.ladder_ranks:
        pms = {"SFT": args.sft, "base": args.base}
        rms = {"RM": args.rm, "gold": args.gold_rm}
        return {f"PM {pm_name} / RM {rm_name}": {"pm": pm, "rm": rm, "pm_id": pm_name, "rm_id": rm_name}
                for (pm_name, pm), (rm_name, rm) in itertools.product(pms.items(), rms.items())}
    check_ladders(args)
    if len(set(args.ladder_ranks)) != len(args.ladder_ranks):
        raise SystemExit(f"--ladder-ranks must be distinct, got {args.ladder_ranks}")
    pairs, seed = {}, args.ladder_seed
    for rank in args.ladder_ranks:
        rung = rung_of_rank(args, rank)
        k = args.pm_examples[rung]
        pairs[f"rank {rank}"] = {"pm": ensure_pm(args, k, seed), "rm": ensure_rm(args, rung, seed),
                                 "pm_id": pm_key(args, k, seed), "rm_id": rm_key(args, rung, seed)}
    return pairs


def table_3(names: list[str], matrix: list[list[float]]) -> str:
    """The overlaps as the paper's Table 3 lays them out: a lower-triangular matrix, '-' on the diagonal."""
    rows = [[a] + [f"{matrix[i][j]:.0%}" if j < i else "-" if j == i else "" for j in range(len(names))]
            for i, a in enumerate(names)]
    return markdown_table(["model combo"] + names, rows)


def score_cell(args: argparse.Namespace, pm: str, rm: str, examples: list[SeamExample]) -> dict:
    """SEAM of every example under one (PM, RM) pair, as [id, score] pairs (JSON keeps no int keys)."""
    t0 = time.monotonic()
    scores = seam_scores(args, pm, rm, examples)
    return {"scores": sorted(scores.items()), "seconds": time.monotonic() - t0}


def main() -> None:
    parser = experiment_parser(__doc__)
    parser.add_argument("--fraction", type=float, default=0.2, help="size of the compared sets (paper: 0.2)")
    parser.add_argument("--ladder-ranks", type=int, nargs="+", default=None,
                        help="score (rank r PM, rank r RM) of the ladder for each r (paper Table 3: 1 3 5; 1 = best) "
                             "instead of the SFT/base x RM/gold pairs")
    add_ladder_args(parser)
    add_ladder_reuse_args(parser)
    args = parser.parse_args()
    resolve(args, models=() if args.ladder_ranks else ("sft", "rm"), **ladder_sizes())
    started = time.monotonic()
    gold = None if args.ladder_ranks else ensure_gold_rm(args)  # the ladder mode compares no gold RM
    records = rl_records(args)
    instructions = [r.text["instruction"] for r in records]
    responses = [r.text["response"] for r in records]
    candidates = contrast_source(args).candidates(instructions, responses, args.candidates)
    examples = [SeamExample(r.id, i, g, list(c)) for r, i, g, c in zip(records, instructions, responses, candidates)]

    models = model_pairs(args)
    cells, scores = Cells(Path(args.out) / "overlap.cells.jsonl"), {}
    for name, pair in models.items():
        key = cell_key(args, "overlap", pm=pair["pm_id"], pm_path=pair["pm"], rm=pair["rm_id"], rm_path=pair["rm"])
        scored = cells.run(key, lambda: score_cell(args, pair["pm"], pair["rm"], examples))
        scores[name] = {int(i): seam for i, seam in scored["scores"]}
        print(f"[{name}] scored {len(examples)} prompts in {scored['seconds']:.0f} s", flush=True)

    names = list(scores)
    ids = sorted(scores[names[0]])
    selected = {name: set(largest_seam(s, args.fraction)) for name, s in scores.items()}
    matrix = [[len(selected[a] & selected[b]) / max(len(selected[a]), 1) for b in names] for a in names]
    pairs = []
    for a, b in itertools.combinations(names, 2):
        rho = spearmanr([scores[a][i] for i in ids], [scores[b][i] for i in ids]).statistic
        pairs.append({"a": a, "b": b, "overlap": len(selected[a] & selected[b]) / max(len(selected[a]), 1),
                      "shared": len(selected[a] & selected[b]), "spearman": float(rho)})
    seconds = time.monotonic() - started
    with_candidates = sum(bool(c) for c in candidates)
    # Prompts with SEAM 0 tie; ties are broken by id, so a set reaching into them is partly arbitrary.
    positive = {name: sum(v > 0 for v in s.values()) for name, s in scores.items()}
    write_json(Path(args.out) / "overlap.json",
               {"settings": vars(args), "gold_rm": gold, "names": names, "models": models,
                "overlap_matrix": matrix, "pairs": pairs,
                "selected": {k: sorted(v) for k, v in selected.items()}, "scores": scores,
                "prompts_with_candidates": with_candidates, "positive_seam": positive, "seconds": seconds})

    size = len(next(iter(selected.values())))
    gold_text = f"gold RM held-out accuracy {gold['accuracy']:.3f}; " if gold else ""
    print(f"\nSettings: D_rl {len(records)} prompts ({with_candidates} with at least one candidate), "
          f"{args.candidates} SEAM_Contrast candidates, sets = top {args.fraction:.0%} by SEAM ({size} prompts); "
          f"{gold_text}total {seconds:.0f} s")
    print("prompts with SEAM > 0: " + ", ".join(f"{name}: {n}" for name, n in positive.items()))
    text = table_3(names, matrix) + "\n\n" + markdown_table(
        ["model pair A", "model pair B", "shared", "overlap |A∩B|/|A|", "chance", "Spearman ρ"],
        [[p["a"], p["b"], p["shared"], p["overlap"], args.fraction, p["spearman"]] for p in pairs])
    print(text)
    files.write_text_atomic(Path(args.out) / "overlap.md", text + "\n")
    heatmap(Path(args.out) / "overlap.png", names, matrix,
            f"Overlap of top-{args.fraction:.0%} SEAM sets (App. E.2), {len(records)} prompts; chance {args.fraction}")
    print(f"wrote {Path(args.out) / 'overlap.json'}, .md and .png")


if __name__ == "__main__":
    main()
