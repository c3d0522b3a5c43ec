"""The model ladders of the saturation study (paper §3, App. C.1) and the sanity check (§4.1).

PM rung k: the base model fine-tuned (SFT) on the first k examples of D_p; k = 0 is the
base model itself. RM rung m: a reward model trained on the first m pairs of D_r from a
backbone, by default the PM of the same rung (the paper trains its RMs from the SFT model
"depending on the SFT model's quality rank"); m = 0 is the backbone with a randomly
initialised reward head, untrained (the paper's "pretrained model replaced with a randomly
initialized classifier head"). With the default pairing, rung 0 is the base model and the
base model with a random head, as in the paper.

Each trained model is exported to ``<ladder_dir or out>/models/<pm|rm>-<size>-seed<seed>-<hash>``, the hash
taken over every setting its training depends on: a rerun, or the other driver, with the
same settings reuses it, and one with other settings trains its own. Exports are written
beside their place and renamed, so an existing folder is a finished model. The drivers that
reuse the ladder (data selection, overlap) take ``--ladder-dir``: pointed at the saturation
run's ``--out``, with the same ladder settings, they read its models instead of training them.

Rank r (paper §4.2, §7, App. E.2) counts from the top of the ladder: rank 1 is the last rung,
the best PM and RM.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from experiments.common import later_settings, precision, train_reward_model, train_sft
from seam_lightning.models.loading import export_pretrained, load_reward_model, load_tokenizer

PAPER_PM_EXAMPLES = [0, 50, 100, 250, 500, 800, 1500, 2500, 5000, 10000]
"""App. C.1: the base model without SFT, then SFT on 50 ... 10,000 examples (10 PMs)."""
PAPER_RM_PAIRS = [0, 50, 100, 500, 2500, 5000, 10000, 20000, 50000, 100000]
"""App. C.1: a random reward head (no pairs), then 50 ... 100,000 preference pairs (10 RMs)."""
DEMO_PM_EXAMPLES = [0, 32, 128]
DEMO_RM_PAIRS = [0, 32, 128]
"""The demo grid: 3 PMs × 3 RMs, sized for 2 CPU cores."""
QUICK_PM_EXAMPLES = [0, 16]
QUICK_RM_PAIRS = [0, 16]
RANK = "rank"
"""``--rm-backbone rank``: the RM of rung i starts from the PM of rung i."""


def ladder_sizes(demo_pm: list[int] = DEMO_PM_EXAMPLES, demo_rm: list[int] = DEMO_RM_PAIRS) -> dict:
    """``resolve``'s defaults for the ladder flags: the demo sizes, or the quick ones with --quick."""
    return dict(pm_examples=(demo_pm, QUICK_PM_EXAMPLES), rm_pairs=(demo_rm, QUICK_RM_PAIRS))


def add_ladder_args(parser, demo_pm: list[int] = DEMO_PM_EXAMPLES, demo_rm: list[int] = DEMO_RM_PAIRS) -> None:
    """The ladder flags every ladder driver takes; ``resolve(args, **ladder_sizes(demo_pm, demo_rm))`` fills in
    the sizes left unset."""
    pm_help = f"default {demo_pm}, quick {QUICK_PM_EXAMPLES}"
    rm_help = f"default {demo_rm}, quick {QUICK_RM_PAIRS}"
    p = parser.add_argument
    p("--pm-examples", type=int, nargs="+", default=None,
      help=f"PM ladder: SFT examples per rung, 0 = the base model; {pm_help} (paper: {PAPER_PM_EXAMPLES})")
    p("--rm-pairs", type=int, nargs="+", default=None,
      help=f"RM ladder: preference pairs per rung, 0 = a random reward head; {rm_help} (paper: {PAPER_RM_PAIRS})")
    p("--rm-backbone", default=RANK, help="what each RM starts from: 'rank' (the PM of the same rung, the "
                                          "paper's) or one model for all (a path, or bundled:<name>)")
    p("--sft-epochs", type=int, default=1, help="passes over each PM's k examples")
    p("--rm-epochs", type=int, default=1, help="passes over each RM's m pairs")


def check_ladders(args: argparse.Namespace) -> None:
    """Refuse ladders that cannot be paired or sized: negative sizes, repeats, rank pairing of unequal lengths."""
    for flag, ladder in (("--pm-examples", args.pm_examples), ("--rm-pairs", args.rm_pairs)):
        if not ladder or any(n < 0 for n in ladder) or len(set(ladder)) != len(ladder):
            raise SystemExit(f"{flag} must be distinct sizes >= 0, got {ladder}")
    if args.rm_backbone == RANK and len(args.pm_examples) != len(args.rm_pairs):
        raise SystemExit(f"--rm-backbone rank pairs RM rung i with PM rung i, so the ladders need equal lengths; "
                         f"got {len(args.pm_examples)} PMs and {len(args.rm_pairs)} RMs")


def add_ladder_reuse_args(parser) -> None:
    """The flags of a driver that reads the ladder's models: where they are and which seed trained them."""
    p = parser.add_argument
    p("--ladder-dir", default=None, help="folder whose models/ holds the ladder (default --out); the saturation "
                                         "run's --out reuses its models when the ladder settings match")
    p("--ladder-seed", type=int, default=0, help="seed the ladder's models were trained with (saturation: --seed)")


def rung_of_rank(args: argparse.Namespace, rank: int) -> int:
    """The ladder position of rank ``rank`` (1 = the last rung, the best models); refused outside the ladder."""
    rungs = len(args.pm_examples)
    if not 1 <= rank <= rungs:
        raise SystemExit(f"rank {rank} is outside the ladder of {rungs} rungs (ranks 1..{rungs})")
    return rungs - rank


def _folder(args: argparse.Namespace, kind: str, size: int, seed: int, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return Path(getattr(args, "ladder_dir", None) or args.out) / "models" / f"{kind}-{size}-seed{seed}-{digest}"


def _common_key(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Settings every trained rung depends on (the token limits only where they differ from the former fixed ones)."""
    return {"base": args.base, "lora_layers": args.lora_layers, "batch_size": args.batch_size,
            "precision": precision(args), "seed": seed,
            **later_settings(args, "max_instruction_tokens", "max_response_tokens")}


def pm_key(args: argparse.Namespace, k: int, seed: int) -> dict[str, Any]:
    """What PM rung k is: base model, D_p, k examples, epochs, learning rate, run settings."""
    return {"kind": "pm", "sft_data": args.sft_data, "examples": k, "epochs": args.sft_epochs,
            **later_settings(args, "sft_lr"), **_common_key(args, seed)}


def ensure_pm(args: argparse.Namespace, k: int, seed: int) -> str:
    """PM rung k: the base model for k = 0, else SFT of the base model on the first k D_p examples (trained once)."""
    if k == 0:
        return args.base
    folder = _folder(args, "pm", k, seed, pm_key(args, k, seed))
    if not folder.exists():
        print(f"[ladder] SFT of {args.base} on {k} examples, seed {seed} -> {folder}", flush=True)
        train_sft(args, args.base, k, args.sft_epochs, seed, folder)
        gc.collect()
    return str(folder)


def rm_backbone(args: argparse.Namespace, rung: int, seed: int) -> str:
    """What the RM of ladder position ``rung`` starts from: the same rung's PM, or the one --rm-backbone names."""
    return ensure_pm(args, args.pm_examples[rung], seed) if args.rm_backbone == RANK else args.rm_backbone


def rm_key(args: argparse.Namespace, rung: int, seed: int) -> dict[str, Any]:
    """What RM rung ``rung`` is: its backbone (by PM key under rank pairing), D_r, m pairs, epochs, learning rate,
    run settings."""
    backbone = (pm_key(args, args.pm_examples[rung], seed) if args.rm_backbone == RANK else args.rm_backbone)
    return {"kind": "rm", "backbone": backbone, "preference_data": args.preference_data,
            "pairs": args.rm_pairs[rung], "epochs": args.rm_epochs, **later_settings(args, "rm_lr"),
            **_common_key(args, seed)}


def ensure_rm(args: argparse.Namespace, rung: int, seed: int) -> str:
    """RM of ladder position ``rung``: its backbone with a random head (m = 0) or trained on the first m pairs."""
    m = args.rm_pairs[rung]
    folder = _folder(args, "rm", m, seed, rm_key(args, rung, seed))
    if folder.exists():
        return str(folder)
    backbone = rm_backbone(args, rung, seed)
    if m == 0:
        print(f"[ladder] {backbone} with a random reward head, seed {seed} -> {folder}", flush=True)
        torch.manual_seed(seed)  # the head is drawn when the backbone is loaded as a reward model
        export_pretrained(load_reward_model(backbone), load_tokenizer(backbone), folder)
    else:
        steps = args.rm_epochs * math.ceil(m / args.batch_size)
        print(f"[ladder] RM from {backbone} on {m} pairs ({steps} steps), seed {seed} -> {folder}", flush=True)
        train_reward_model(args, backbone, steps, seed, folder, preference_limit=m)
    gc.collect()
    return str(folder)
