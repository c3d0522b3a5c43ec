"""The ``seam-lightning`` command: a LightningCLI over the stage modules and RLHFDataModule.

    seam-lightning fit --config cli.yaml
    seam-lightning fit --config seam_lightning/configs/sft.yaml --trainer.max_steps 20
    seam-lightning score --config seam_lightning/configs/score.yaml   (see score_cli.py)

``--model`` takes any LightningModule (``seam_lightning.SFTModule``,
``seam_lightning.RewardModule``, …); the data module is always RLHFDataModule.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

# No code path may reach a model hub at run time unless the user asks for it;
# offline mode also stops each missing-file lookup from waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from lightning.pytorch import LightningModule  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402
from lightning.pytorch.utilities import rank_zero_warn  # noqa: E402

import seam_lightning  # noqa: E402,F401  (registers the modules for short class names)
from seam_lightning.data.datamodule import RLHFDataModule  # noqa: E402
from seam_lightning.data.records import DataError  # noqa: E402
from seam_lightning.files import write_json  # noqa: E402
from seam_lightning.hardware import cpu_has_native_bf16  # noqa: E402


class SeamLightningCLI(LightningCLI):
    """LightningCLI that prints, after ``fit``, where checkpoints, logs and the export went.

    The shipped configs train in ``bf16-mixed``. On a CPU without native bf16 (no
    AVX512-BF16/AMX on x86) autocast emulates it and a step runs an order of magnitude
    slower than in fp32, so there the run falls back to ``32-true`` with a warning;
    ``--bf16_on_cpu=always`` keeps bf16 all the same.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--bf16_on_cpu", choices=["auto", "always"], default="auto",
                            help="bf16 precision on a CPU without native bf16: 'auto' trains in fp32 "
                                 "instead (an order of magnitude faster there), 'always' keeps bf16")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config["trainer"]
        precision = str(trainer.get("precision"))
        if (config.get("bf16_on_cpu", "auto") == "auto" and precision.startswith("bf16")
                and _runs_on_cpu(trainer.get("accelerator")) and not cpu_has_native_bf16()):
            rank_zero_warn(f"trainer.precision={precision} on a CPU without native bf16 would be emulated and run "
                           "an order of magnitude slower: training in 32-true instead (--bf16_on_cpu=always keeps it)")
            trainer["precision"] = "32-true"

    def after_fit(self) -> None:
        trainer, model = self.trainer, self.model
        # `log_dir` is a collective (rank 0 broadcasts it): every rank must ask, or rank 0
        # waits on peers that have already left and the run exits non-zero.
        log_dir = trainer.log_dir
        if not trainer.is_global_zero:
            return
        metrics = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        summary = {
            "stage": type(model).__name__,
            "global_step": trainer.global_step,
            "checkpoint": trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
            if trainer.checkpoint_callback else None,
            "log_dir": log_dir,
            "export_dir": str(Path(model.export_dir).resolve()) if getattr(model, "export_dir", None) else None,
            "metrics": metrics,
        }
        if hasattr(model, "ppo_step"):  # manual optimisation: global_step counts optimizer updates
            summary["ppo_steps"] = model.ppo_step
        summary.update(peak_memory_gb())
        if log_dir:
            write_json(Path(log_dir) / "summary.json", summary, allow_nan=True)
        ppo = f" ({summary['ppo_steps']} PPO steps)" if "ppo_steps" in summary else ""
        print(f"[seam-lightning] {summary['stage']} done after {summary['global_step']} steps{ppo}")
        for key in ("checkpoint", "log_dir", "export_dir", "peak_rss_gb", "peak_cuda_gb"):
            if key not in summary:
                continue
            print(f"  {key:<10} {summary[key]}")
        for name, value in sorted(metrics.items()):
            print(f"  {name:<22} {value:.4f}")


def _runs_on_cpu(accelerator: object) -> bool:
    """Whether the Trainer's ``accelerator`` setting resolves to the CPU on this machine."""
    if isinstance(accelerator, str) and accelerator in ("auto", "gpu", "cuda", "mps"):
        return accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()
    return accelerator == "cpu"


def peak_memory_gb() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory on a GPU), in GB."""
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    peak = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9, 3)}
    if torch.cuda.is_available():
        peak["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return peak


def build_cli(args: list[str] | None = None, run: bool = True) -> SeamLightningCLI:
    """The CLI (``args`` as on the command line; None reads ``sys.argv``); ``run=False`` only builds it."""
    return SeamLightningCLI(
        LightningModule,
        RLHFDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        # Checkpoints are renamed into place: a run killed while saving keeps its last good one.
        trainer_defaults={"plugins": [{"class_path": "seam_lightning.checkpoint_io.AtomicCheckpointIO"}]},
        args=args,
        run=run,
    )


USER_ERRORS = (DataError, ValueError, FileNotFoundError)
"""Errors in the user's data or configuration: shown as one line, unless debugging."""


def main(args: list[str] | None = None) -> None:
    """Run the command (``args`` as on the command line; None reads ``sys.argv``).

    ``seam-lightning score …`` runs :mod:`seam_lightning.score_cli`; anything else is the
    LightningCLI (``fit``, ``validate``, …). A bad data file or setting ends the command
    with one line naming the file, record and field, and exit status 2; ``--debug`` (or
    ``SEAM_LIGHTNING_DEBUG=1``) shows the traceback instead.
    """
    from_command_line = args is None
    given = list(sys.argv[1:] if from_command_line else args)
    args = [a for a in given if a != "--debug"]
    if len(args) < len(given):
        # Through the environment, so the ranks Lightning launches (which inherit it) debug too.
        os.environ["SEAM_LIGHTNING_DEBUG"] = "1"
    if from_command_line:
        # LightningCLI reads sys.argv itself (given args too, it warns), and DDP relaunches with it.
        sys.argv[1:] = args
    debug = os.environ.get("SEAM_LIGHTNING_DEBUG", "") not in ("", "0")
    try:
        if args[:1] == ["score"]:
            from seam_lightning.score_cli import main as score_main

            score_main(args[1:])
        else:
            build_cli(None if from_command_line else args)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"seam-lightning: error: {e}\n(run with --debug or SEAM_LIGHTNING_DEBUG=1 for the traceback)",
              file=sys.stderr)
        raise SystemExit(2) from None
