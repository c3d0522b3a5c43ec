"""One small training job, run by the distributed and fault tests as a real process.

    python tests/ddp_job.py --stage sft --devices 2 --batch-size 2 --model DIR --data DIR --out DIR

Lightning's DDP launcher starts the other ranks by running this same command again,
so each job is exactly what a user's script does: build modules, a Trainer, fit.
Rank 0 writes ``<out>/result.json`` (per-step metrics, SEAM selection and scores,
augmented examples) and ``<out>/weights.pt`` (the trainable weights at the end).
Several stages (``--stage sft,reward``) or data folders (``--data A,B``) run one
after the other in the same processes (one start-up for all), each writing to
``<out>/<stage>-<data index>/``. Fault options kill the process with SIGKILL at a
chosen point, as a crash would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from doubles import ListSource, RLConsumer  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from seam_lightning import DataSource, LoRASettings, RLHFDataModule, SeamCallback, SFTModule  # noqa: E402
from seam_lightning.checkpoint_io import AtomicCheckpointIO  # noqa: E402
from seam_lightning.modules.ppo import PPOModule  # noqa: E402
from seam_lightning.modules.reward import RewardModule  # noqa: E402
from seam_lightning.rl.generation import SamplingSettings  # noqa: E402
from seam_lightning.seam.sources.contrast import ContrastSource  # noqa: E402

LORA = LoRASettings(r=4, dropout=0.0)
METRICS = {"sft": ["train/loss"], "reward": ["train/loss", "train/accuracy"],
           "ppo": ["train/reward", "train/kl", "train/kl_coef"], "seam": [], "augment": ["train/loss"]}


def count_o(instructions, responses):
    """A programmatic PPO reward: the number of letters 'o' in the response."""
    return [float(r.count("o")) for r in responses]


class Record(Callback):
    """Rank 0 keeps the per-step metrics; fault options kill the process at a chosen point."""

    def __init__(self, names, kill_at_step):
        self.names, self.kill_at_step, self.steps = names, kill_at_step, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = getattr(pl_module, "ppo_step", trainer.global_step)
        self.steps.append({"step": step, **{n: trainer.callback_metrics[n].item() for n in self.names}})
        if self.kill_at_step is not None and step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillingSource(ListSource):
    """A fixed-table source that dies (SIGKILL) when asked for its ``kill_on_call``-th chunk."""

    def __init__(self, table, kill_on_call):
        super().__init__(table)
        self.kill_on_call = kill_on_call

    def candidates(self, instructions, responses, num_candidates):
        if self.calls + 1 == self.kill_on_call:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().candidates(instructions, responses, num_candidates)


class KillingContrast(ContrastSource):
    """A ContrastSource that dies (SIGKILL) on its ``kill_on_call``-th request (counted per process)."""

    def __init__(self, kill_on_call, **kwargs):
        super().__init__(**kwargs)
        self.kill_on_call, self.calls = kill_on_call, 0

    def candidates(self, instructions, responses, num_candidates):
        self.calls += 1
        if self.calls == self.kill_on_call:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().candidates(instructions, responses, num_candidates)

    def config(self):
        # The source it stands in for: dying on a call does not change its candidates.
        config = {k: v for k, v in super().config().items() if k not in ("kill_on_call", "calls")}
        return config | {"class": f"{ContrastSource.__module__}.{ContrastSource.__qualname__}"}


def candidate_table(rl_path: Path) -> dict[str, list[str]]:
    """Candidates for each RL instruction: the golden responses of the next three rows."""
    rows = [json.loads(line) for line in rl_path.read_text().splitlines()]
    return {r["instruction"]: [rows[(i + k) % len(rows)]["response"] for k in (1, 2, 3)] for i, r in enumerate(rows)}


def build(args, stage: str, data: str):
    data_dir = Path(data)
    sources = {"sft": None, "preference": None, "rl": None}
    callbacks = []
    if stage in ("sft", "augment"):
        module = SFTModule(model=args.model, lora=LORA, learning_rate=1e-2, warmup_steps=0)
        sources["sft"] = DataSource(str(data_dir / "sft.jsonl"))
        sources["rl"] = DataSource(str(data_dir / "rl.jsonl"))
    elif stage == "reward":
        module = RewardModule(model=args.model, lora=LORA, learning_rate=1e-2, warmup_steps=0)
        sources["preference"] = DataSource(str(data_dir / "preference.jsonl"))
    elif stage == "ppo":
        module = PPOModule(policy=args.model, reward_model=None, reward_fn=count_o, lora=LORA, value_lora=LORA,
                           sampling=SamplingSettings(max_new_tokens=6), learning_rate=1e-2, ppo_epochs=2,
                           mini_batch_size=args.batch_size, kl_coef=0.1, kl_target=1.0, kl_horizon=20,
                           reward_normalization="batch", max_ppo_steps=args.steps, evaluate_at_start=False)
        sources["rl"] = DataSource(str(data_dir / "rl.jsonl"))
    else:  # seam
        module = RLConsumer(args.model)
        sources["rl"] = DataSource(str(data_dir / "rl.jsonl"))
    if stage == "seam":
        table = candidate_table(data_dir / "rl.jsonl")
        source = KillingSource(table, args.kill_on_call) if args.kill_on_call else ListSource(table)
        callbacks.append(SeamCallback(source, fraction=args.fraction, num_candidates=3, every_n_epochs=0,
                                      reference_policy=args.model, reward_model=args.model, prompts_per_chunk=4,
                                      progress=False))
    if stage == "augment":
        contrast = dict(corpus=DataSource(str(data_dir / "corpus.jsonl")), band=(0.3, 0.95),
                        cache_dir=str(Path(args.out) / "contrast_cache"))
        source = KillingContrast(args.kill_on_call, **contrast) if args.kill_on_call else ContrastSource(**contrast)
        callbacks.append(SeamCallback(source, mode="augment", fraction=0.5, num_candidates=2, every_n_epochs=1,
                                      likelihood_from="current", reward_model=args.reward_model, augmentations_per_prompt=2,
                                      prompts_per_chunk=4, progress=False))
    data = RLHFDataModule(sft=sources["sft"], sft_val=None, preference=sources["preference"], preference_val=None,
                          rl=sources["rl"], rl_val=None, batch_size=args.batch_size, seed=1)
    return module, data, callbacks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help=f"one of {sorted(METRICS)}, or several, comma-separated")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps (PPO steps for --stage ppo)")
    parser.add_argument("--epochs", type=int, default=-1)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--model", required=True)
    parser.add_argument("--reward-model")
    parser.add_argument("--data", required=True, help="data folder(s), comma-separated")
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint-every", type=int, help="save last.ckpt every n optimizer updates")
    parser.add_argument("--resume", action="store_true", help="resume from <out>/checkpoints/last.ckpt")
    parser.add_argument("--kill-at-step", type=int, help="SIGKILL after this training step")
    parser.add_argument("--kill-on-call", type=int, help="SIGKILL on this call of the candidate source")
    args = parser.parse_args(argv)

    runs = [(stage, data) for stage in args.stage.split(",") for data in args.data.split(",")]
    for index, (stage, data) in enumerate(runs):
        out = Path(args.out) if len(runs) == 1 else Path(args.out) / f"{stage}-{index}"
        fit(args, stage, data, out)


def fit(args, stage: str, data_dir: str, out: Path) -> None:
    if stage not in METRICS:
        raise SystemExit(f"unknown stage {stage!r}; choose from {sorted(METRICS)}")
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(0)
    module, data, callbacks = build(args, stage, data_dir)
    record = Record(METRICS[stage], args.kill_at_step)
    callbacks.append(record)
    checkpointing = args.checkpoint_every is not None
    if checkpointing:
        callbacks.append(ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0,
                                         every_n_train_steps=args.checkpoint_every))
    trainer = Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        max_steps=-1 if stage == "ppo" else args.steps, max_epochs=args.epochs, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=checkpointing,
        default_root_dir=out, callbacks=callbacks, limit_val_batches=0, plugins=[AtomicCheckpointIO()],
        reload_dataloaders_every_n_epochs=1 if stage == "augment" else 0,
    )
    ckpt = out / "checkpoints" / "last.ckpt" if args.resume else None
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    if not trainer.is_global_zero:
        return
    seam = next((c for c in callbacks if isinstance(c, SeamCallback)), None)
    result = {"steps": record.steps, "world_size": trainer.world_size}
    if seam is not None:
        result.update(selected=seam.selected_ids, scores={str(k): v for k, v in seam.scores.items()},
                      last_scoring=seam.last_scoring, rescorings=seam.rescorings,
                      added={k: [r.text for r in v] for k, v in data.added.items()})
    torch.save({n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}, out / "weights.pt")
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()


# -- used by the tests ---------------------------------------------------------------------

def write_data(directory: Path, n: int = 16) -> Path:
    """SFT, preference and RL files of ``n`` rows, and a small contrast corpus, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"What does `json.dumps` do? ({i})", "response": f"Serialize obj {i} to a JSON formatted str."}
            for i in range(n)]
    pairs = [{"instruction": r["instruction"], "chosen": r["response"], "rejected": f"Join path {i}."}
             for i, r in enumerate(rows)]
    names = ["json.loads", "json.dump", "os.path.join", "os.path.split", "re.compile", "math.sqrt",
             "random.choice", "shutil.copy", "pickle.dumps", "base64.b64encode", "itertools.chain", "functools.partial"]
    corpus = [{"instruction": f"What does `{m}` do?", "response": f"It is {m}: a standard library function."}
              for m in names]
    for name, table in (("sft", rows), ("rl", rows), ("preference", pairs), ("corpus", corpus)):
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in table))
    return directory


def run(out: Path, *options: str, killed: bool = False, timeout: int = 300) -> dict | None:
    """Run this job in a fresh process; returns rank 0's result (None when it was killed, as expected).

    With several stages or data folders it returns None; read each ``result(out / f"{stage}-{i}")``.
    """
    import subprocess

    command = [sys.executable, __file__, "--out", str(out), *options]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if killed:
        assert proc.returncode == -signal.SIGKILL, f"expected SIGKILL, got {proc.returncode}:\n{proc.stderr[-3000:]}"
        return None
    assert proc.returncode == 0, proc.stderr[-5000:]
    return result(out) if (out / "result.json").exists() else None


def result(out: Path) -> dict:
    """Rank 0's result of one run."""
    return json.loads((out / "result.json").read_text())
