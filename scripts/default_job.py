"""The default job: SFT, then the reward model, on the bundled demo data and model.

    python scripts/default_job.py [--root runs]

Runs each stage through the real CLI (``python -m seam_lightning fit --config …``)
in its own process, then prints a summary: where checkpoints, logs and exports
went, and the reward model's preference accuracy on held-out demo pairs.
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
    ("reward model", ROOT / "cli.yaml"),
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
    parser.add_argument("extra", nargs="*", help="arguments passed to every stage (after --)")
    args = parser.parse_args()
    summaries = [run_stage(name, config, args.extra) for name, config in STAGES]

    print("\n=== default job finished")
    for (name, _), s in zip(STAGES, summaries):
        print(f"{name:>13}: {s['global_step']} steps in {s['seconds']:.0f} s; export {s['export_dir']}")
        print(f"{'':>13}  checkpoint {s['checkpoint']}; logs {s['log_dir']}")
    sft, rm = summaries[0]["metrics"], summaries[1]["metrics"]
    print(f"SFT validation loss per response token: {sft.get('val/loss', float('nan')):.3f}")
    print(f"Reward model preference accuracy on held-out demo pairs: {rm.get('val/accuracy', float('nan')):.3f} (chance 0.5)")


if __name__ == "__main__":
    main()
