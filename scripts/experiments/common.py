"""What the experiment drivers share: flags, hardware, resumable cells, training runs, the gold RM and SEAM scores.

Everything runs in this process through the package's own classes (RLHFDataModule,
RewardModule, PPOModule, SeamCallback, SeamScorer), on the CPU in bf16 autocast
where the CPU computes bf16 natively (fp32 elsewhere: emulated bf16 is ~100x slower),
sized by command-line flags (``--quick`` for a run of a few minutes). Q_PM's judges are
in `experiments.judges`, the candidate sources in `experiments.sources`, and the
JSON, tables and figures in `experiments.outputs`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from jsonargparse import ActionConfigFile, ArgumentParser  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from experiments.outputs import write_json  # noqa: E402
from seam_lightning import (DataSource, LoRASettings, PPOModule, RewardModule, RLHFDataModule,  # noqa: E402
                            SamplingSettings, SFTModule)
from seam_lightning.data.demo import resolve_demo_uri  # noqa: E402
from seam_lightning.data.records import load_records  # noqa: E402
from seam_lightning.eval.quality import preference_accuracy  # noqa: E402
from seam_lightning.hardware import cpu_has_native_bf16  # noqa: E402
from seam_lightning.jsonl import append_jsonl, read_jsonl  # noqa: E402
from seam_lightning.models.loading import DEFAULT_MODEL, load_policy, load_reward_model, load_tokenizer  # noqa: E402
from seam_lightning.seam.scorer import SeamExample, SeamScorer  # noqa: E402

Q_PM_JUDGES = ("gold_rm", "llm")
BF16 = cpu_has_native_bf16()


def device(args: argparse.Namespace) -> torch.device:
    """Where the evaluation and scoring models run: the first GPU when the accelerator asks for one."""
    wants_gpu = args.accelerator in ("gpu", "cuda") or (args.accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if wants_gpu else "cpu")


def precision(args: argparse.Namespace) -> str:
    """The Trainer precision: the one asked for, else bf16-mixed where bf16 is native, else 32-true."""
    if args.precision:
        return args.precision
    return "bf16-mixed" if device(args).type == "cuda" or BF16 else "32-true"


def autocast(args: argparse.Namespace | None = None):
    """bf16 autocast on the run's device where bf16 is native (as ``precision``); a no-op elsewhere."""
    where = device(args).type if args is not None else "cpu"
    enabled = precision(args).startswith("bf16") if args is not None else BF16
    return torch.autocast(where, dtype=torch.bfloat16, enabled=enabled)


GRID_SETTINGS = ("rl_data", "rl_val_data", "preference_data", "preference_val_data", "corpus_data", "sft_data",
                 "sft_val_data", "sft", "rm", "base", "gold_rm", "rl_prompts", "val_prompts", "ppo_steps", "new_tokens",
                 "candidates", "pref_val", "corpus_limit", "lora_layers", "batch_size", "accelerator", "devices",
                 "strategy", "precision", "q_pm_judge", "judge_model", "judge_endpoint")


LATER_SETTINGS = dict(max_instruction_tokens=128, max_response_tokens=96, sft_lr=1e-4, rm_lr=5e-4, ppo_lr=2e-4)
"""Settings that were fixed at these values before they became flags: a cell key or model hash holds one only
where it differs (`later_settings`), so cells and models saved before stay valid."""


def later_settings(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """Those of ``names`` (keys of LATER_SETTINGS) whose value in ``args`` differs from the former fixed one."""
    return {k: getattr(args, k) for k in names if getattr(args, k, LATER_SETTINGS[k]) != LATER_SETTINGS[k]}


def cell_key(args: argparse.Namespace, experiment: str, **cell: Any) -> dict[str, Any]:
    """What one cell's result depends on: the experiment, the run's shared settings and the cell's own."""
    return {"experiment": experiment, **{k: getattr(args, k, None) for k in GRID_SETTINGS},
            **later_settings(args, *LATER_SETTINGS), **cell}


class Cells:
    """The finished cells of a grid (one PPO run, one scoring, …), appended as each finishes.

    ``run(key, compute)`` returns the saved result of ``key`` when a previous (killed or
    finished) run of the same grid saved it, else computes, saves (one fsynced line) and
    returns it; so a rerun resumes where the last one stopped. Keys are JSON-able settings.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.saved = {entry["key"]: entry["result"] for entry in
                      read_jsonl(self.path, lambda e: e, what="experiment cells")[0]} if self.path.exists() else {}

    def run(self, key: dict[str, Any], compute) -> Any:
        name = json.dumps(key, sort_keys=True)
        if name in self.saved:
            print(f"[cells] {name}: saved result reused", flush=True)
            return self.saved[name]
        result = compute()
        append_jsonl(self.path, [{"key": name, "result": result}])
        self.saved[name] = result
        return result


def experiment_parser(doc: str) -> ArgumentParser:
    """A parser with every common flag, reading YAML too: ``--config configs/demo.yaml`` (later flags win).

    jsonargparse types and checks each value, and ``--print_config`` shows the settings a run
    would use, so a config written for one machine runs unchanged on another.
    """
    parser = ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML of these settings (configs/demo.yaml, "
                                                                  "configs/paper.yaml)")
    add_common_args(parser)
    return parser


def add_common_args(parser: ArgumentParser) -> None:
    """Flags every experiment takes: data, models, hardware, sizes, output folder, --quick."""
    p = parser.add_argument
    p("--out", default="results", help="folder for <name>.json, <name>.png and caches (default results/)")
    p("--rl-data", default="demo://rl_train", help="D_rl (any DataSource path: JSONL, Parquet, CSV, datasets)")
    p("--rl-val-data", default="demo://rl_val", help="held-out prompts for Q_PM")
    p("--preference-data", default="demo://preference_train", help="D_r, for the RMs an experiment trains")
    p("--preference-val-data", default="demo://preference_val", help="held-out pairs for Q_RM")
    p("--corpus-data", default="demo://sft_train", help="the SEAM_Contrast corpus (instruction/response)")
    p("--sft-data", default="demo://sft_train", help="D_p, for the policies an experiment fine-tunes")
    p("--sft-val-data", default="demo://sft_val", help="D_p's held-out split (the sanity check's D_p test set)")
    p("--accelerator", default="cpu", help="Lightning accelerator: cpu, gpu, auto")
    p("--devices", default=1, type=int, help="devices per training run")
    p("--strategy", default="auto", help="Lightning strategy (ddp for several devices)")
    p("--precision", default=None, help="Lightning precision (default: bf16-mixed on a GPU or a CPU with native "
                                        "bf16, else 32-true)")
    p("--quick", action="store_true", help="few prompts and steps: finishes in a few minutes")
    p("--sft", default="runs/sft/export", help="π_SFT, the policy PPO starts from (default job's SFT export)")
    p("--rm", default="runs/reward/export", help="the training reward model (default job's RM export)")
    p("--base", default=DEFAULT_MODEL, help="the base model (gold RM backbone; the no-SFT PM of the overlap study)")
    p("--gold-rm", default=None, help="the gold RM judging Q_PM (default runs/gold_reward[_quick]/export; "
                                      "trained once if missing)")
    p("--gold-steps", type=int, default=None, help="training steps of a missing gold RM (default 60, quick 12)")
    p("--q-pm-judge", choices=list(Q_PM_JUDGES), default="gold_rm",
      help="who gives Q_PM: gold_rm (the gold RM's mean reward, judge-free) or llm (the paper's Prompt 1 "
           "rating 0-10 by --judge-model at --judge-endpoint, replies cached)")
    p("--judge-model", default=None, help="the LLM judge's model name at the endpoint (e.g. gpt-4o), with "
                                          "--q-pm-judge llm")
    p("--judge-endpoint", default=None, help="an OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                                             "(default $OPENAI_BASE_URL, else OpenAI's)")
    p("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the endpoint's key")
    p("--judge-cache", default=None, help="JSONL file of cached judge replies (default: the package cache, "
                                          "per endpoint and model)")
    p("--rl-prompts", type=int, default=None, help="D_rl size: first N demo://rl_train prompts (default 64, quick 16)")
    p("--val-prompts", type=int, default=None, help="held-out demo://rl_val prompts for Q_PM (default 24, quick 8)")
    p("--ppo-steps", type=int, default=None, help="PPO steps of 8 prompts per run (default 6, quick 2)")
    p("--new-tokens", type=int, default=None, help="max new tokens per response (default 32, quick 16)")
    p("--candidates", type=int, default=None, help="SEAM_Contrast candidates per prompt (default 30, quick 10)")
    p("--pref-val", type=int, default=None, help="demo://preference_val pairs for RM accuracy (default 200, quick 32)")
    p("--corpus-limit", type=int, default=None, help="use only the first N demo://sft_train rows as contrast corpus")
    p("--lora-layers", type=int, default=8, help="LoRA on the top N transformer blocks (cli.yaml: 8)")
    p("--batch-size", type=int, default=8, help="RL prompts per PPO step / pairs per RM step")
    p("--max-instruction-tokens", type=int, default=128, help="instruction tokens kept in training, generation "
                                                               "and scoring (cli.yaml: 128)")
    p("--max-response-tokens", type=int, default=96, help="response tokens kept in training and scoring "
                                                          "(cli.yaml: 96)")
    p("--sft-lr", type=float, default=1e-4, help="SFT learning rate, LoRA (sft.yaml: 1e-4; paper App. C.1: 1e-4)")
    p("--rm-lr", type=float, default=5e-4, help="RM learning rate, LoRA (reward.yaml: 5e-4; paper App. C.1: 2e-5)")
    p("--ppo-lr", type=float, default=2e-4, help="PPO learning rate, LoRA (cli.yaml: 2e-4; paper App. C.1: 1.4e-5)")
    p("--threads", type=int, default=None, help="torch CPU threads (1 is much faster on a busy machine)")


def resolve(args: argparse.Namespace, models: tuple[str, ...] = ("sft", "rm"), **quick_defaults: Any
            ) -> argparse.Namespace:
    """Fill unset size flags: the full defaults, or the quick ones with --quick (script-specific ones too).

    ``models``: the model flags the experiment reads, which must exist (the ladder drivers train their own).
    """
    full = dict(rl_prompts=64, val_prompts=24, ppo_steps=6, new_tokens=32, candidates=30, pref_val=200,
                gold_steps=60)
    quick = dict(rl_prompts=16, val_prompts=8, ppo_steps=2, new_tokens=16, candidates=10, pref_val=32,
                 gold_steps=12)
    for key, (full_value, quick_value) in quick_defaults.items():
        full[key], quick[key] = full_value, quick_value
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gold_rm is None:
        args.gold_rm = "runs/gold_reward_quick/export" if args.quick else "runs/gold_reward/export"
    for path in (getattr(args, name) for name in models):
        if not path.startswith("bundled:") and not Path(path).exists():
            raise SystemExit(f"{path} not found: run `python scripts/default_job.py` first or pass --sft/--rm")
    if args.q_pm_judge == "llm" and not args.judge_model:
        raise SystemExit("--q-pm-judge llm needs --judge-model NAME (and --judge-endpoint URL for a local server)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def lora(layers: int, dropout: float = 0.0) -> LoRASettings:
    """LoRA as in cli.yaml (r 16, alpha 32, all linear layers) on the top ``layers`` blocks."""
    return LoRASettings(r=16, alpha=32, dropout=dropout, target_modules="all-linear", layers=list(range(-layers, 0)))


def top_layers(model: str, wanted: int) -> int:
    """``wanted`` capped at the model's depth (tiny test models have 2 blocks)."""
    from transformers import AutoConfig
    from seam_lightning.models.loading import resolve_model_path

    return min(wanted, AutoConfig.from_pretrained(resolve_model_path(model)).num_hidden_layers)


def trainer(args: argparse.Namespace, root: str | Path, callbacks: list | None = None, **kwargs: Any) -> Trainer:
    """A quiet Trainer on the run's hardware (see ``precision``): no logger, checkpoints or validation."""
    return Trainer(accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
                   precision=precision(args), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                   default_root_dir=str(root), callbacks=callbacks or [], **kwargs)


def run_ppo(args: argparse.Namespace, reward_model: str, seed: int, callbacks: list | None = None,
            root: str | Path | None = None, policy: str | None = None) -> PPOModule:
    """PPO from ``policy`` (default args.sft; also the KL reference) with ``reward_model`` for args.ppo_steps steps
    at args.ppo_lr (otherwise cli.yaml's settings); the trained module."""
    policy = policy or args.sft
    seed_everything(seed, verbose=False)
    data = RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None,
                          rl=DataSource(args.rl_data, limit=args.rl_prompts), rl_val=None,
                          batch_size=args.batch_size, max_instruction_tokens=args.max_instruction_tokens,
                          max_response_tokens=args.max_response_tokens, seed=seed,
                          drop_last=True)  # every PPO step has batch_size prompts, in every condition
    layers = top_layers(policy, args.lora_layers)
    module = PPOModule(policy=policy, reward_model=reward_model, lora=lora(layers), value_lora=lora(layers),
                       sampling=SamplingSettings(max_new_tokens=args.new_tokens, temperature=1.0, top_k=0, top_p=1.0),
                       learning_rate=args.ppo_lr, ppo_epochs=2, mini_batch_size=min(4, args.batch_size), kl_coef=0.05,
                       kl_target=None, reward_normalization="running", missing_eos_penalty=1.0,
                       max_ppo_steps=args.ppo_steps, evaluate_at_start=False, seed=seed)
    trainer(args, root or Path(args.out) / "lightning", callbacks, max_epochs=-1).fit(module, datamodule=data)
    return module


def train_sft(args: argparse.Namespace, model: str, examples: int, epochs: int, seed: int,
              export_dir: str | Path) -> SFTModule:
    """SFT as in sft.yaml (LoRA top blocks, lr --sft-lr, 10 warm-up steps) on the first ``examples`` rows of D_p
    (``--sft-data``), ``epochs`` passes over them."""
    seed_everything(seed, verbose=False)
    data = RLHFDataModule(sft=DataSource(args.sft_data, limit=examples), sft_val=None, preference=None,
                          preference_val=None, rl=None, rl_val=None, batch_size=args.batch_size,
                          max_instruction_tokens=args.max_instruction_tokens,
                          max_response_tokens=args.max_response_tokens, seed=seed)
    steps = epochs * math.ceil(examples / args.batch_size)
    module = SFTModule(model=model, lora=lora(top_layers(model, args.lora_layers), dropout=0.05),
                       learning_rate=args.sft_lr, warmup_steps=min(10, steps), export_dir=str(export_dir))
    trainer(args, Path(export_dir).parent, max_steps=steps).fit(module, datamodule=data)
    return module


def train_reward_model(args: argparse.Namespace, model: str, steps: int, seed: int, export_dir: str | Path,
                       preference_limit: int | None = None, augmented: str | Path | None = None) -> RewardModule:
    """A pairwise RM as in reward.yaml (LoRA top blocks, lr --rm-lr, 10 warm-up steps) on D_r (+ augmented pairs)."""
    seed_everything(seed, verbose=False)
    data = RLHFDataModule(sft=None, sft_val=None, rl=None, rl_val=None, preference_val=None,
                          preference=DataSource(args.preference_data, limit=preference_limit),
                          preference_augmented=DataSource(str(augmented)) if augmented else None,
                          batch_size=args.batch_size, max_instruction_tokens=args.max_instruction_tokens,
                          max_response_tokens=args.max_response_tokens, seed=seed)
    module = RewardModule(model=model, lora=lora(top_layers(model, args.lora_layers), dropout=0.05),
                          learning_rate=args.rm_lr, warmup_steps=min(10, steps), export_dir=str(export_dir))
    trainer(args, Path(export_dir).parent, max_steps=steps).fit(module, datamodule=data)
    return module


def rm_accuracy(args: argparse.Namespace, model: torch.nn.Module, tokenizer, limit: int) -> float:
    """Q_RM: preference accuracy on the first ``limit`` held-out pairs (``--preference-val-data``)."""
    fields = ("instruction", "chosen", "rejected")
    records = load_records(DataSource(args.preference_val_data, limit=limit), fields)
    return pair_accuracy(args, model, tokenizer, *([r.text[f] for r in records] for f in fields))


def pair_accuracy(args: argparse.Namespace, model: torch.nn.Module, tokenizer, instructions: list[str],
                  chosen: list[str], rejected: list[str]) -> float:
    """The share of pairs with R(I∘chosen) > R(I∘rejected), on the run's device and precision."""
    with torch.inference_mode(), autocast(args):
        return preference_accuracy(model.to(device(args)).eval(), tokenizer, instructions, chosen, rejected,
                                   max_instruction_tokens=args.max_instruction_tokens,
                                   max_response_tokens=args.max_response_tokens, progress=False)


def ensure_gold_rm(args: argparse.Namespace) -> dict[str, Any]:
    """The gold RM at args.gold_rm, trained once if missing; returns its description and held-out accuracy.

    It differs from the training RM in backbone (the base model ``args.base``, not the SFT
    export), data order (data seed 1 instead of 0) and run seed (1 vs 42), so it saw other
    preference pairs in its step budget. It is still trained on the same demo preference
    distribution, so it is a second opinion, not an independent human judge. Its accuracy
    on demo://preference_val is cached in ``<out>/gold_rm.json``.
    """
    path, trained_seconds = Path(args.gold_rm), None
    if not path.exists():
        print(f"[gold RM] training {args.base} for {args.gold_steps} steps -> {path}", flush=True)
        start = time.monotonic()
        train_reward_model(args, args.base, args.gold_steps, seed=1, export_dir=path)
        trained_seconds = time.monotonic() - start
    cache = Path(args.out) / "gold_rm.json"
    key = {"path": str(path.resolve()), "pref_val": args.pref_val, "mtime": path.stat().st_mtime,
           **later_settings(args, "max_instruction_tokens", "max_response_tokens")}
    if cache.exists() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())
    accuracy = rm_accuracy(args, load_reward_model(str(path)), load_tokenizer(str(path)), args.pref_val)
    info = {"key": key, "path": str(path), "accuracy": accuracy, "pairs": args.pref_val,
            "trained_seconds": trained_seconds}
    write_json(cache, info)
    print(f"[gold RM] {path}: held-out preference accuracy {info['accuracy']:.3f} on {args.pref_val} pairs", flush=True)
    return info


def data_rows(path: str) -> list[dict]:
    """The rows of a JSONL data file, or of a demo set (``demo://name``)."""
    with open(path if "://" not in path else resolve_demo_uri(path), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def rl_records(args: argparse.Namespace):
    """D_rl: the first args.rl_prompts demo://rl_train records (instruction, golden response)."""
    return load_records(DataSource(args.rl_data, limit=args.rl_prompts), ("instruction", "response"))


def seam_scores(args: argparse.Namespace, policy: str, reward_model: str, examples: list[SeamExample]
                ) -> dict[int, float]:
    """SEAM per RL id under one (PM, RM) pair, in the precision SeamCallback scores in under `trainer()`."""
    where = device(args)
    pm, rm = load_policy(policy).to(where).eval(), load_reward_model(reward_model).to(where).eval()
    scorer = SeamScorer(pm, rm, load_tokenizer(policy), reward_tokenizer=load_tokenizer(reward_model),
                        max_instruction_tokens=args.max_instruction_tokens,
                        max_response_tokens=args.max_response_tokens, progress=False)
    with torch.inference_mode(), autocast(args):
        return {r.id: r.seam for r in scorer.score(examples, total=len(examples))}
