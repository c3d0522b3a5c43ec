"""Paper §8, Fig. 7 at small scale: augment the RM's data where SEAM flags D_rl, vs random and full augmentation.

    python scripts/exp_augmentation.py              # 4 conditions × (RM 30 steps + PPO 6 steps) (~18 min on 2 cores)
    python scripts/exp_augmentation.py --quick      # 16 prompts, RM 4 steps, PPO 2 steps

Conditions (which RL prompts get augmentations):
  original  none;
  seam      the ``--fraction`` of D_rl with the largest SEAM (π_SFT and the training RM, SEAM_Contrast);
  random    the same number drawn at random (``--seed``);
  full      every prompt.
For each selected prompt (I, r), `contrast_augmentations` (the code SeamCallback(mode="augment")
runs) retrieves up to ``--per-prompt`` (paper: 5) contrast instructions I* from demo://sft_train
and yields preference pairs (I, chosen=r, rejected=r*) and SFT pairs (I*, r*).
What is retrained: the RM, from π_SFT (--sft) as in the default job, on the first
``--pref-limit`` demo preference pairs ∪ the augmented pairs, for the same ``--rm-steps`` in every
condition; then PPO (from π_SFT, all of D_rl, same steps and seed) with that RM.
Not retrained: the SFT policy (its augmented pairs are written to disk but π_SFT is kept,
which keeps the budget on 2 CPU cores). Measured: Q_RM, preference accuracy on held-out
demo://preference_val pairs; Q_PM, the gold RM's mean reward (or with ``--q-pm-judge llm`` an
LLM judge's Prompt 1 rating) of the PPO policy's greedy answers to held-out prompts (95% CI
over prompts). The selections and each finished condition are appended to
``<out>/augmentation.cells.jsonl`` at once, so a rerun after a crash resumes with the
conditions it lacks. Writes ``<out>/augmentation.json``, ``.md`` (the table) and ``.png``.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import time
from pathlib import Path

from experiments.common import (Cells, cell_key, experiment_parser, resolve, rl_records, rm_accuracy, run_ppo,
                                seam_scores, train_reward_model)
from experiments.judges import Judges, q_pm_judge, q_pm_label, q_pm_text
from experiments.outputs import bar_plot, ci_text, write_json, write_table
from experiments.sources import contrast_source
from seam_lightning.jsonl import write_jsonl_atomic
from seam_lightning.seam.augment import contrast_augmentations
from seam_lightning.seam.scorer import SeamExample
from seam_lightning.seam.selection import largest_seam, selection_size

CONDITIONS = ("original", "seam", "random", "full")


def selections(args: argparse.Namespace, records, source) -> dict[str, list[int]]:
    """RL ids that get augmentations, per condition."""
    ids = sorted(r.id for r in records)
    instructions = [r.text["instruction"] for r in records]
    responses = [r.text["response"] for r in records]
    candidates = source.candidates(instructions, responses, args.candidates)
    examples = [SeamExample(r.id, i, g, list(c)) for r, i, g, c in zip(records, instructions, responses, candidates)]
    scores = seam_scores(args, args.sft, args.rm, examples)
    random_ids = sorted(random.Random(args.seed).sample(ids, selection_size(len(ids), args.fraction)))
    return {"original": [], "seam": largest_seam(scores, args.fraction), "random": random_ids, "full": ids}


def condition_cell(args: argparse.Namespace, judges: Judges, source, records, condition: str,
                   chosen: list[int]) -> dict:
    """Augment the RM's data for the ``chosen`` RL ids, retrain the RM, run PPO with it, measure Q_RM and Q_PM."""
    t0 = time.monotonic()
    folder = Path(args.out) / "augmentation" / condition
    by_id = {r.id: r for r in records}
    new = contrast_augmentations(source, [by_id[i] for i in chosen], args.per_prompt)
    augmented = None
    if new.preference:
        augmented = write_jsonl_atomic(folder / "preference.jsonl", new.preference)
        write_jsonl_atomic(folder / "sft.jsonl", new.sft)  # not used: π_SFT is not retrained
    rm_module = train_reward_model(args, args.sft, args.rm_steps, args.seed, folder / "rm",
                                   preference_limit=args.pref_limit, augmented=augmented)
    q_rm = rm_accuracy(args, rm_module.model, rm_module.tokenizer, args.pref_val)
    del rm_module
    gc.collect()
    module = run_ppo(args, str(folder / "rm"), args.seed)
    result = judges.evaluate(module.policy)
    del module
    gc.collect()
    if not args.keep_models:
        shutil.rmtree(folder / "rm", ignore_errors=True)
    result.update(condition=condition, augmented_prompts=len(chosen), augmented_pairs=len(new.preference),
                  augmented_sft=len(new.sft), q_rm=q_rm, seconds=time.monotonic() - t0)
    return result


def main() -> None:
    parser = experiment_parser(__doc__)
    parser.add_argument("--fraction", type=float, default=0.2, help="share of D_rl augmented in seam/random")
    parser.add_argument("--per-prompt", type=int, default=5, help="augmentations per selected prompt (paper: 5)")
    parser.add_argument("--rm-steps", type=int, default=None, help="RM training steps, every condition (30; quick 4)")
    parser.add_argument("--pref-limit", type=int, default=None,
                        help="original D_r: first N demo preference pairs (default 480, quick 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-models", action="store_true", help="keep the retrained RMs under <out>/augmentation/")
    args = parser.parse_args()
    resolve(args, rm_steps=(30, 4), pref_limit=(480, 64))
    started = time.monotonic()
    judge_info = q_pm_judge(args)
    judges, source, records = Judges(args), contrast_source(args), rl_records(args)
    # The selections (one SEAM scoring) and every finished condition are saved at once: a rerun resumes.
    cells = Cells(Path(args.out) / "augmentation.cells.jsonl")
    settings = dict(fraction=args.fraction, per_prompt=args.per_prompt, rm_steps=args.rm_steps,
                    pref_limit=args.pref_limit, seed=args.seed)
    chosen = cells.run(cell_key(args, "augmentation_selection", fraction=args.fraction, seed=args.seed),
                       lambda: selections(args, records, source))
    sft = judges.evaluate_path(args.sft)

    rows = []
    for condition in CONDITIONS:
        key = cell_key(args, "augmentation", condition=condition, **settings)
        result = cells.run(key, lambda: condition_cell(args, judges, source, records, condition, chosen[condition]))
        rows.append(result)
        print(f"[{condition}] {result['augmented_pairs']} augmented pairs; Q_RM {result['q_rm']:.3f}; "
              f"Q_PM {ci_text(result['q_pm'])}; {result['seconds']:.0f} s", flush=True)
    seconds = time.monotonic() - started
    write_json(Path(args.out) / "augmentation.json", {"settings": vars(args), "q_pm_judge": judge_info, "sft": sft,
                                                       "selected": chosen, "rows": rows, "seconds": seconds})

    print(f"\nSettings: D_rl {args.rl_prompts} demo prompts, augment {args.fraction:.0%} (seam/random) or all, "
          f"{args.per_prompt} contrast examples per prompt; RM retrained from {args.sft} for {args.rm_steps} steps "
          f"of {args.batch_size} pairs on {args.pref_limit} demo pairs + augmented ones; PPO {args.ppo_steps} steps "
          f"with that RM, seed {args.seed}; Q_RM on {args.pref_val} held-out pairs; {q_pm_text(args, judge_info)}; "
          f"total {seconds:.0f} s")
    table = [["π_SFT (no PPO), default-job RM", "-", "-", "-", ci_text(sft["q_pm"])]]
    table += [[r["condition"], r["augmented_prompts"], r["augmented_pairs"], r["q_rm"], ci_text(r["q_pm"])]
              for r in rows]
    write_table(Path(args.out) / "augmentation.md", ["condition", "prompts augmented", "pairs added",
                                                     "Q_RM (held-out acc.)", f"{q_pm_label(args)} [95% CI]"], table)
    bar_plot(Path(args.out) / "augmentation.png", [f"{r['condition']}\nQ_RM {r['q_rm']:.2f}" for r in rows],
             [r["q_pm"] for r in rows],
             f"Augmentation (Fig. 7): RM {args.rm_steps} steps, PPO {args.ppo_steps} steps, seed {args.seed}",
             f"{q_pm_label(args)} (95% CI)", reference=sft["q_pm"]["mean"], reference_label="π_SFT")
    print(f"wrote {Path(args.out) / 'augmentation.json'}, .md and .png")


if __name__ == "__main__":
    main()
