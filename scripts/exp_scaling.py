r"""Paper App. B, Table 2 at small scale: does the PM–RM discrepancy shrink as the base model grows?

    python scripts/exp_scaling.py --quick --sizes first:8 bundled:SmolLM2-135M-Instruct   # 2 sizes, tiny ladders
    python scripts/exp_scaling.py --config scripts/experiments/configs/scaling_demo.yaml   # 3 depths of SmolLM2-135M
    python scripts/exp_scaling.py --config scripts/experiments/configs/paper.yaml \
        --config scripts/experiments/configs/scaling_paper.yaml                            # LLaMa2 7B, 13B, 70B

For every base model in ``--sizes`` the saturation study's ladders are built from it
(experiments/ladder.py; only the rungs needed are trained, under ``<out>/models``):
  the rank 1 PM (SFT on the last --pm-examples size), the rank ``--weak-rank`` PM (paper: 5)
  and the rank 1 RM (the last --rm-pairs size, from the rank 1 PM under --rm-backbone rank).
Then, re-running §4.2's analysis at that size as App. B does:
  match rate: the rank 1 and the weak PM answer the first --rl-prompts D_rl instructions
      (greedy, as every Q_PM answer here; the paper samples 1,000 and does not say how it
      decodes); the rank 1 RM prefers the answer with the larger reward; the reference
      preference, the paper's human annotators, is the Q_PM judge's (--q-pm-judge: the gold
      RM's larger reward, or the LLM judge's higher Prompt 1 rating). Pairs the reference
      ties are left out; `seam_lightning.eval.quality.match_rate` counts the agreements;
  Q_PM: the rank 1 PM's greedy answers to held-out prompts, judged as in every driver;
  Q_RM: the rank 1 RM's held-out preference accuracy.
The paper finds Q_PM and Q_RM rising with size and the match rate flat (~60%).

A size is a model name (hub id, folder, ``bundled:<name>``) or ``first:N``: the first N
transformer blocks of --base, built once under ``<out>/sizes``. The demo's size ladder is
made that way from the one bundled model (SmolLM2-135M); a truncated model is not a smaller
pretrained model, so the demo shows the mechanics, not the paper's finding. The gold RM
judging Q_PM is one model for every size (--gold-rm, trained from --base if missing) and
reads answers with its own tokenizer, so sizes of other families can be compared with it.
Each size is one cell of ``<out>/scaling.cells.jsonl`` (a rerun resumes); writes
``<out>/scaling.json``, ``.md`` (Table 2) and ``.png`` (match rate, Q_PM, Q_RM against size).
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import time
from pathlib import Path

import torch

from experiments.common import Cells, autocast, cell_key, device, experiment_parser, resolve, rl_records, rm_accuracy
from experiments.judges import Judges, q_pm_judge, q_pm_label, q_pm_text, rated
from experiments.ladder import (add_ladder_args, check_ladders, ensure_pm, ensure_rm, ladder_sizes, pm_key, rm_key,
                                rung_of_rank)
from experiments.outputs import ci_text, figure, save_figure, write_json, write_table
from seam_lightning import files
from seam_lightning.eval.quality import generate_responses, match_rate, reference_preferences, reward_scores
from seam_lightning.eval.stats import mean_ci
from seam_lightning.models.loading import load_policy, load_reward_model, load_tokenizer, resolve_model_path


def size_model(args: argparse.Namespace, size: str) -> str:
    """The base model of ``size``: the name itself, or for ``first:N`` a folder of --base's first N blocks."""
    if not size.startswith("first:"):
        return size
    from transformers import AutoModelForCausalLM

    blocks = int(size.split(":", 1)[1])
    digest = hashlib.sha256(args.base.encode()).hexdigest()[:10]  # another --base is another model
    path = Path(args.out) / "sizes" / f"first{blocks}-{digest}"
    if path.exists():
        return str(path)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.base), torch_dtype=torch.float32)
    config = model.config
    if not 1 <= blocks <= config.num_hidden_layers:
        raise SystemExit(f"{size}: --base {args.base} has {config.num_hidden_layers} blocks")
    model.model.layers = model.model.layers[:blocks]  # the decoder blocks of a llama-style model
    config.num_hidden_layers = blocks
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:blocks]
    with files.atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        load_tokenizer(args.base).save_pretrained(tmp)
    return str(path)


def parameter_count(model: str) -> int:
    """Parameters of ``model``, counted on an empty (meta-device) copy: nothing is loaded, even for a 70B model."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model_path(model)))
    empty.tie_weights()  # from_config leaves tied input/output embeddings apart: they would count twice
    return sum(p.numel() for p in empty.parameters())


def size_args(args: argparse.Namespace, base: str) -> argparse.Namespace:
    """The run's settings with ``base`` as the ladder's base model (the gold RM stays the run's)."""
    ladder = copy.copy(args)
    ladder.base = base
    return ladder


def answers(args: argparse.Namespace, path: str, instructions: list[str]) -> list[str]:
    """Greedy answers of the policy at ``path`` (with its own tokenizer), at most --new-tokens each."""
    policy = load_policy(path).to(device(args)).eval()
    try:
        with torch.inference_mode(), autocast(args):
            return generate_responses(policy, load_tokenizer(path), instructions, args.new_tokens, batch_size=12,
                                      max_instruction_tokens=args.max_instruction_tokens, progress=False)
    finally:
        del policy
        gc.collect()


def rm_rewards(args: argparse.Namespace, model: torch.nn.Module, tokenizer, instructions: list[str],
               responses: list[str]) -> list[float]:
    """The reward model's reward of each (instruction, response)."""
    with torch.inference_mode(), autocast(args):
        return reward_scores(model, tokenizer, instructions, responses, progress=False,
                             max_instruction_tokens=args.max_instruction_tokens,
                             max_response_tokens=args.max_response_tokens).tolist()


def ladder_models(args: argparse.Namespace) -> dict[str, str]:
    """Paths of the rank 1 PM, the weak PM and the rank 1 RM of the ladder on ``args.base`` (trained if missing)."""
    top, weak = rung_of_rank(args, 1), rung_of_rank(args, args.weak_rank)
    return {"pm": ensure_pm(args, args.pm_examples[top], args.seed),
            "weak_pm": ensure_pm(args, args.pm_examples[weak], args.seed),
            "rm": ensure_rm(args, top, args.seed)}


def size_cell(args: argparse.Namespace, judges: Judges, size: str) -> dict:
    """Match rate, Q_PM and Q_RM of one base-model size (see the module docs)."""
    t0 = time.monotonic()
    ladder = size_args(args, size_model(args, size))
    models = ladder_models(ladder)
    drl = [r.text["instruction"] for r in rl_records(args)]
    # The rank 1 PM answers D_rl and the held-out prompts in one load (a large model is loaded once).
    both = answers(args, models["pm"], drl + judges.instructions)
    strong, held_out, weak = both[:len(drl)], both[len(drl):], answers(args, models["weak_pm"], drl)
    reference_a, reference_b = judges.q_pm_scores(drl, strong), judges.q_pm_scores(drl, weak)
    prefers_a = reference_preferences(reference_a, reference_b)
    rm, rm_tokenizer = load_reward_model(models["rm"]).to(device(args)).eval(), load_tokenizer(models["rm"])
    rm_a, rm_b = rm_rewards(args, rm, rm_tokenizer, drl, strong), rm_rewards(args, rm, rm_tokenizer, drl, weak)
    q_pm_scores = judges.q_pm_scores(judges.instructions, held_out)
    compared = sum(p is not None for p in prefers_a)
    if not compared:  # e.g. a judge rating every answer of both PMs alike: no preference to match
        print(f"[{size}] the reference ties all {len(drl)} pairs: no match rate", flush=True)
    result = {"size": size, "base": ladder.base, "models": models,
              "parameters": parameter_count(ladder.base),
              "match_rate": match_rate(rm_a, rm_b, prefers_a) if compared else None, "pairs_compared": compared,
              "reference_a": reference_a, "reference_b": reference_b, "rm_a": rm_a, "rm_b": rm_b,
              "q_pm": mean_ci(rated(q_pm_scores)).to_dict(), "q_pm_per_prompt": q_pm_scores,
              "q_rm": rm_accuracy(args, rm, rm_tokenizer, args.pref_val), "seconds": time.monotonic() - t0}
    del rm
    gc.collect()
    return result


def run_sizes(args: argparse.Namespace, judges: Judges) -> list[dict]:
    """Every size's result, each saved as a cell when it finishes (keyed by the models it depends on)."""
    cells, rows = Cells(Path(args.out) / "scaling.cells.jsonl"), []
    top, weak = rung_of_rank(args, 1), rung_of_rank(args, args.weak_rank)
    for size in args.sizes:
        ladder = size_args(args, size)  # keys name the size, not the folder a first:N size is built in
        key = cell_key(args, "scaling", size=size, pm=pm_key(ladder, args.pm_examples[top], args.seed),
                       weak_pm=pm_key(ladder, args.pm_examples[weak], args.seed), rm=rm_key(ladder, top, args.seed))
        row = cells.run(key, lambda: size_cell(args, judges, size))
        rows.append(row)
        print(f"[{size}] match rate {rate_text(row['match_rate'])} on {row['pairs_compared']} pairs; Q_PM "
              f"{ci_text(row['q_pm'])}; Q_RM {row['q_rm']:.3f}; {row['seconds']:.0f} s", flush=True)
    return rows


def rate_text(rate: float | None) -> str:
    """A match rate for tables and logs ('n/a' where the reference decided no pair)."""
    return "n/a" if rate is None else f"{rate:.3f}"


def plot(path: Path, rows: list[dict], label: str, title: str) -> None:
    """Table 2 as three panels against the base model's parameter count: match rate, Q_PM (95% CI), Q_RM."""
    fig, axes = figure(12, 4, ncols=3)
    x = [r["parameters"] for r in rows]
    axes[0].plot(x, [float("nan") if r["match_rate"] is None else r["match_rate"] for r in rows], marker="o")
    axes[0].set_ylabel("match rate: rank 1 RM vs the reference")
    errors = [[r["q_pm"]["mean"] - r["q_pm"]["low"] for r in rows], [r["q_pm"]["high"] - r["q_pm"]["mean"] for r in rows]]
    axes[1].errorbar(x, [r["q_pm"]["mean"] for r in rows], yerr=errors, marker="o", capsize=4)
    axes[1].set_ylabel(f"rank 1 PM: {label}")
    axes[2].plot(x, [r["q_rm"] for r in rows], marker="o")
    axes[2].set_ylabel("rank 1 RM: Q_RM (held-out accuracy)")
    # the model's own name (a hub id's or folder's last part, bundled:<name>'s name) and its size; slanted, as
    # sizes may lie close on the axis
    ticks = [f"{r['size'].rsplit('/', 1)[-1].removeprefix('bundled:')}\n{r['parameters'] / 1e6:.1f}M" for r in rows]
    for ax, name in zip(axes, ("match rate", "Q_PM", "Q_RM")):
        ax.set_xscale("log")
        ax.minorticks_off()  # one labelled tick per size instead of log-scale minor labels
        ax.set_xticks(x, ticks, fontsize=7, rotation=30, ha="right")
        ax.set_xlabel("base model (parameters)")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, axes[2], path, "Q_RM")


def main() -> None:
    parser = experiment_parser(__doc__)
    parser.add_argument("--sizes", nargs="+", default=None,
                        help="base models, smallest first: names or first:N (N blocks of --base); default "
                             "first:8 first:16 and --base")
    parser.add_argument("--weak-rank", type=int, default=2, help="rank of the second PM of the match-rate pairs "
                                                                 "(paper: 5; rank 1 = the best)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every training run (SFT, RM)")
    add_ladder_args(parser)
    args = parser.parse_args()
    resolve(args, models=(), **ladder_sizes())
    args.sizes = args.sizes or ["first:8", "first:16", args.base]
    check_ladders(args)
    if args.weak_rank == 1:
        raise SystemExit("--weak-rank 1 would pair the rank 1 PM with itself")
    rung_of_rank(args, args.weak_rank)  # refuses a rank outside the ladder before anything is trained
    started = time.monotonic()
    judge_info = q_pm_judge(args)
    # The gold RM reads answers with its own tokenizer (sizes may come from other families).
    judges = Judges(args, tokenizer=args.gold_rm if args.q_pm_judge == "gold_rm" else args.base, train_rm=False)
    rows = run_sizes(args, judges)
    seconds = time.monotonic() - started
    write_json(Path(args.out) / "scaling.json", {"settings": vars(args), "q_pm_judge": judge_info, "rows": rows,
                                                "seconds": seconds})

    top, weak = rung_of_rank(args, 1), rung_of_rank(args, args.weak_rank)
    print(f"\nSettings: sizes {args.sizes}; rank 1 PM SFT on {args.pm_examples[top]} D_p examples, rank "
          f"{args.weak_rank} PM on {args.pm_examples[weak]}, rank 1 RM on {args.rm_pairs[top]} D_r pairs from "
          f"{args.rm_backbone}; match rate on {args.rl_prompts} D_rl prompts, reference: the Q_PM judge; Q_RM on "
          f"{args.pref_val} held-out pairs; {q_pm_text(args, judge_info)}; total {seconds:.0f} s")
    label = q_pm_label(args)
    write_table(Path(args.out) / "scaling.md",
                ["model", "parameters", "match rate", "pairs compared", f"{label} [95% CI]", "Q_RM"],
                [[r["size"], f"{r['parameters'] / 1e6:.1f}M", rate_text(r["match_rate"]), r["pairs_compared"],
                  ci_text(r["q_pm"]), r["q_rm"]] for r in rows])
    plot(Path(args.out) / "scaling.png", rows, label, f"Scaling (App. B, Table 2): seed {args.seed}")
    print(f"wrote {Path(args.out) / 'scaling.json'}, .md and .png")


if __name__ == "__main__":
    main()
