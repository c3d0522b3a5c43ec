"""One small training job, run by the distributed and fault tests as a real process.

    python tests/ddp_job.py --stage sft --devices 2 --batch-size 2 --model DIR --data DIR --out DIR

Lightning's DDP launcher starts the other ranks by running this same command again,
so each job is exactly what a user's script does: build modules, a Trainer, fit.
Rank 0 writes ``<out>/result.json`` (per-step metrics, SEAM selection and scores,
augmented examples) and ``<out>/weights.pt`` (the trainable weights at the end).
Several stages (``--stage sft,reward``) or data folders (``--data A,B``) run one
after the other in the same processes (one start-up for all), each writing to
``<out>/<stage>-<data index>/``. Fault options kill the process with SIGKILL at a
chosen point, as a crash would (``--kill-rank`` only that rank), or make one rank's
SEAM scoring fail (``--fault``): its source raises, or its reward model gives a NaN.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
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
    """Rank 0 keeps the per-step metrics; fault options kill the process (``kill_rank``: only that rank's)."""

    def __init__(self, names, kill_at_step, kill_rank=None):
        self.names, self.kill_at_step, self.kill_rank, self.steps = names, kill_at_step, kill_rank, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = getattr(pl_module, "ppo_step", trainer.global_step)
        self.steps.append({"step": step, **{n: trainer.callback_metrics[n].item() for n in self.names}})
        mine = self.kill_rank in (None, trainer.global_rank)
        if self.kill_at_step is not None and step == self.kill_at_step and mine:
            print(f"ddp_job: rank {trainer.global_rank} kills itself (SIGKILL) after step {step} at {time.time():.3f}",
                  file=sys.stderr, flush=True)
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


class FailingSource(ListSource):
    """A fixed-table source whose endpoint gives up on rank 1 only, on that rank's ``fail_on_call``-th request."""

    def __init__(self, table, fail_on_call=2):
        super().__init__(table)
        self.fail_on_call = fail_on_call

    def candidates(self, instructions, responses, num_candidates):
        if torch.distributed.get_rank() == 1 and self.calls + 1 == self.fail_on_call:
            print(f"ddp_job: rank 1's source fails at {time.time():.3f}", file=sys.stderr, flush=True)
            raise RuntimeError("endpoint gave up")
        return super().candidates(instructions, responses, num_candidates)


NAN_MARKER = "\u00a4"
"""A character no test text holds: ``write_nan_reward_model`` gives its tokens NaN embeddings."""
NAN_ID = 13
"""The RL record whose first candidate ``--fault nan-rank1`` marks; odd, so rank 1 of 2 scores it (second chunk)."""


def write_nan_reward_model(model_dir: Path, out: Path) -> Path:
    """The reward model of ``model_dir`` (a fixed head) whose reward is NaN for any text with ``NAN_MARKER``.

    The marker's tokens get NaN embeddings: a sequence holding them attends to NaN,
    every other sequence is untouched (rows of a batch do not mix).
    """
    from seam_lightning.models import load_tokenizer
    from seam_lightning.models.loading import load_reward_model

    torch.manual_seed(0)
    model = load_reward_model(str(model_dir))
    tokenizer = load_tokenizer(str(model_dir))
    marker_ids = tokenizer(NAN_MARKER, add_special_tokens=False).input_ids  # its two bytes; no ASCII text has them
    with torch.no_grad():
        model.get_input_embeddings().weight[marker_ids] = float("nan")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


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
    if stage == "seam" or (stage == "ppo" and args.prune):
        table = candidate_table(data_dir / "rl.jsonl")
        if args.fault == "nan-rank1":
            instruction = json.loads((data_dir / "rl.jsonl").read_text().splitlines()[NAN_ID])["instruction"]
            table[instruction][0] = f"{NAN_MARKER} {table[instruction][0]}"
        if args.kill_on_call:
            source = KillingSource(table, args.kill_on_call)
        else:
            source = FailingSource(table) if args.fault == "source-rank1" else ListSource(table)
        callbacks.append(SeamCallback(source, fraction=args.fraction, num_candidates=3, every_n_epochs=0,
                                      reference_policy=args.model, reward_model=args.reward_model or args.model,
                                      prompts_per_chunk=4, progress=False))
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
    parser.add_argument("--kill-rank", type=int, help="--kill-at-step kills this rank only (default: every rank)")
    parser.add_argument("--kill-on-call", type=int, help="SIGKILL on this call of the candidate source")
    parser.add_argument("--fault", choices=["source-rank1", "nan-rank1"],
                        help="SEAM scoring fails on rank 1 only: its candidate source raises RuntimeError('endpoint "
                             f"gave up') on its second chunk, or record {NAN_ID} gets a candidate with NAN_MARKER "
                             "(give --reward-model a write_nan_reward_model folder)")
    parser.add_argument("--prune", action="store_true", help="--stage ppo: prune the RL set with a SeamCallback")
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
    record = Record(METRICS[stage], args.kill_at_step, args.kill_rank)
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


@dataclass
class Failure:
    """How a job that was expected to fail ended: its exit status, its output (all ranks), how long it ran,
    and when (``time.time()``) its last rank had ended."""

    returncode: int
    output: str
    seconds: float
    ended_at: float


def run_failing(out: Path, *options: str, timeout: int = 120) -> Failure:
    """Run this job in a fresh process (a session of its own) and expect it to fail within ``timeout`` seconds.

    A job that does not end in time (a hang, e.g. a rank waiting for a dead peer until the
    process group's timeout) is killed with all its ranks, and the test fails saying so.
    """
    import contextlib
    import subprocess

    command = [sys.executable, __file__, "--out", str(out), *options]
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # rank 0 and the ranks it started
        output, _ = proc.communicate()
        raise AssertionError(f"the job hung: no end after {timeout} s (killed it). Output:\n{output[-5000:]}") from None
    seconds, ended_at = time.monotonic() - start, time.time()
    assert proc.returncode != 0, f"the job was expected to fail but succeeded:\n{output[-3000:]}"
    return Failure(proc.returncode, output, seconds, ended_at)


def result(out: Path) -> dict:
    """Rank 0's result of one run."""
    return json.loads((out / "result.json").read_text())
