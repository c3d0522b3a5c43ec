"""The default job: SFT, the reward model, then PPO with SEAM pruning, on the bundled demo data and model.

    python scripts/default_job.py [--dtype bfloat16] [-- EXTRA_ARGS]

Runs each stage through the real CLI (``python -m seam_lightning fit --config …``)
in its own process, then prints a summary: where checkpoints, logs and exports
went, the reward model's preference accuracy on held-out demo pairs, and for PPO
the held-out reward before and after training, the KL to π_SFT and the number
of RL prompts SEAM pruned.
``--dtype`` sets the weights' precision of every stage's models (default float32).
Extra arguments after ``--`` go to every stage (e.g. ``-- --trainer.max_steps=5``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = [
    ("SFT", ROOT / "seam_lightning" / "configs" / "sft.yaml"),
    ("reward model", ROOT / "seam_lightning" / "configs" / "reward.yaml"),
    ("PPO + SEAM", ROOT / "cli.yaml"),
]


def run_stage(name: str, config: Path, extra: list[str]) -> dict:
    """Run one stage; return the summary.json the CLI wrote for it."""
    print(f"\n=== {name}: seam-lightning fit --config {config.relative_to(ROOT)}", flush=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "seam_lightning", "fit", "--config", str(config), *extra], cwd=ROOT, check=True)
    logs = sorted((ROOT / "runs").rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(logs[-1].read_text())
    summary["seconds"] = time.monotonic() - start
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="precision of every model's weights")
    parser.add_argument("extra", nargs="*", help="arguments passed to every stage (after --)")
    args = parser.parse_args()
    extra = [f"--model.init_args.dtype={args.dtype}", *args.extra]
    summaries = [run_stage(name, config, extra) for name, config in STAGES]

    print(f"\n=== default job finished (weights in {args.dtype})")
    nan = float("nan")
    for (name, _), s in zip(STAGES, summaries):
        steps = f"{s['ppo_steps']} PPO steps" if "ppo_steps" in s else f"{s['global_step']} steps"
        print(f"{name:>13}: {steps} in {s['seconds']:.0f} s, peak memory {s.get('peak_rss_gb', nan):.2f} GB; "
              f"export {s['export_dir']}")
        print(f"{'':>13}  checkpoint {s['checkpoint']}; logs {s['log_dir']}")
    sft, rm, ppo = (s["metrics"] for s in summaries)
    print(f"SFT validation loss per response token: {sft.get('val/loss', nan):.3f}")
    print(f"Reward model preference accuracy on held-out demo pairs: {rm.get('val/accuracy', nan):.3f} (chance 0.5)")
    print(f"SEAM pruned {ppo.get('seam/pruned', nan):.0f} RL prompts (share {ppo.get('seam/selected_share', nan):.2f}, "
          f"RM misjudgement rate {ppo.get('seam/misjudgement_rate', nan):.3f})")
    print(f"PPO held-out reward: before {ppo.get('val/reward_before', nan):.4f}, after {ppo.get('val/reward', nan):.4f}; "
          f"KL to the SFT policy {ppo.get('val/kl', nan):.4f} nats per response (last training batch "
          f"{ppo.get('train/kl', nan):.4f})")
    print(f"Total {sum(s['seconds'] for s in summaries):.0f} s")


if __name__ == "__main__":
    main()
