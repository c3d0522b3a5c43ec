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
demo://preference_val pairs; Q_PM, the gold RM's mean reward of the PPO policy's greedy
answers to held-out prompts (95% CI over prompts). Writes ``<out>/augmentation.json`` and
``<out>/augmentation.png``.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import time
from pathlib import Path

from experiments.common import (experiment_parser, Judges, bar_plot, ci_text, contrast_source, ensure_gold_rm,
                                markdown_table, resolve, rl_records, rm_accuracy, run_ppo, seam_scores,
                                train_reward_model, write_json)
from seam_lightning.seam.augment import contrast_augmentations
from seam_lightning.jsonl import write_jsonl_atomic
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
    gold = ensure_gold_rm(args)
    judges, source, records = Judges(args), contrast_source(args), rl_records(args)
    chosen = selections(args, records, source)
    sft = judges.evaluate_path(args.sft)
    by_id = {r.id: r for r in records}

    rows = []
    for condition in CONDITIONS:
        t0 = time.monotonic()
        folder = Path(args.out) / "augmentation" / condition
        new = contrast_augmentations(source, [by_id[i] for i in chosen[condition]], args.per_prompt)
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
        result.update(condition=condition, augmented_prompts=len(chosen[condition]),
                      augmented_pairs=len(new.preference), augmented_sft=len(new.sft), q_rm=q_rm,
                      seconds=time.monotonic() - t0)
        rows.append(result)
        print(f"[{condition}] {len(new.preference)} augmented pairs; Q_RM {q_rm:.3f}; Q_PM {ci_text(result['q_pm'])}; "
              f"{result['seconds']:.0f} s", flush=True)
    seconds = time.monotonic() - started
    write_json(Path(args.out) / "augmentation.json", {"settings": vars(args), "gold_rm": gold, "sft": sft,
                                                       "selected": chosen, "rows": rows, "seconds": seconds})

    print(f"\nSettings: D_rl {args.rl_prompts} demo prompts, augment {args.fraction:.0%} (seam/random) or all, "
          f"{args.per_prompt} contrast examples per prompt; RM retrained from {args.sft} for {args.rm_steps} steps "
          f"of {args.batch_size} pairs on {args.pref_limit} demo pairs + augmented ones; PPO {args.ppo_steps} steps "
          f"with that RM, seed {args.seed}; Q_RM on {args.pref_val} held-out pairs; Q_PM on {args.val_prompts} "
          f"held-out prompts by gold RM {args.gold_rm} (held-out accuracy {gold['accuracy']:.3f}); total {seconds:.0f} s")
    table = [["π_SFT (no PPO), default-job RM", "-", "-", "-", ci_text(sft["q_pm"])]]
    table += [[r["condition"], r["augmented_prompts"], r["augmented_pairs"], r["q_rm"], ci_text(r["q_pm"])]
              for r in rows]
    print(markdown_table(["condition", "prompts augmented", "pairs added", "Q_RM (held-out acc.)",
                          "Q_PM gold reward [95% CI]"], table))
    bar_plot(Path(args.out) / "augmentation.png", [f"{r['condition']}\nQ_RM {r['q_rm']:.2f}" for r in rows],
             [r["q_pm"] for r in rows],
             f"Augmentation (Fig. 7): RM {args.rm_steps} steps, PPO {args.ppo_steps} steps, seed {args.seed}",
             "Q_PM: gold-RM reward (95% CI)", reference=sft["q_pm"]["mean"], reference_label="π_SFT")
    print(f"wrote {Path(args.out) / 'augmentation.json'} and {Path(args.out) / 'augmentation.png'}")


if __name__ == "__main__":
    main()
