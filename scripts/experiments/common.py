"""What the four experiment scripts share: settings, training runs, Q_PM, the gold RM, JSON, tables and plots.

Everything runs in this process through the package's own classes (RLHFDataModule,
RewardModule, PPOModule, SeamCallback, SeamScorer), on the CPU in bf16 autocast
where the CPU computes bf16 natively (fp32 elsewhere: emulated bf16 is ~100x slower),
sized by command-line flags (``--quick`` for a run of a few minutes).

Q_PM is, by default (``--q-pm-judge gold_rm``), judge-free: the mean reward a *gold*
reward model gives to a policy's greedy responses to held-out prompts (demo://rl_val),
with a 95% t interval over the prompts. The gold RM is trained once, differently from
the training RM (see `ensure_gold_rm`), and reused from disk afterwards. With
``--q-pm-judge llm`` it is the paper's own measure instead: an LLM judge's mean rating
(0-10) of the same responses under Prompt 1, asked of any OpenAI-compatible endpoint
(``--judge-endpoint``, ``--judge-model``), every reply cached on disk by `LLMJudge`.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from seam_lightning import (DataSource, LoRASettings, PPOModule, RewardModule, RLHFDataModule,  # noqa: E402
                            SamplingSettings, SFTModule)
from seam_lightning.data.records import load_records  # noqa: E402
from seam_lightning import files  # noqa: E402
from seam_lightning.eval.judge import LLMJudge  # noqa: E402
from seam_lightning.eval.quality import generate_responses, preference_accuracy, reward_scores  # noqa: E402
from seam_lightning.eval.stats import mean_ci  # noqa: E402
from seam_lightning.models.loading import DEFAULT_MODEL, load_policy, load_reward_model, load_tokenizer  # noqa: E402
from seam_lightning.seam.scorer import SeamExample, SeamScorer  # noqa: E402
from seam_lightning.seam.sources import AdversarialSource, CandidateSource, ContrastSource, LLMSource  # noqa: E402
from seam_lightning.hardware import cpu_has_native_bf16  # noqa: E402
from seam_lightning.jsonl import append_jsonl, read_jsonl  # noqa: E402
from seam_lightning.llm.chat import ChatBackend, OpenAIBackend, TransformersBackend  # noqa: E402
from jsonargparse import ActionConfigFile, ArgumentParser  # noqa: E402

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
    return Trainer(accelerator=args.accelerator, devices=args.devices, strategy=args.strategy, precision=precision(args), logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   limit_val_batches=0, default_root_dir=str(root), callbacks=callbacks or [], **kwargs)


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


def llm_judge(args: argparse.Namespace) -> LLMJudge:
    """The paper's Prompt 1 judge on the OpenAI-compatible endpoint the flags name; replies cached on disk."""
    backend = OpenAIBackend(args.judge_model, base_url=args.judge_endpoint, api_key_env=args.judge_api_key_env)
    return LLMJudge(backend, cache_path=args.judge_cache, template="paper", progress=False)


def q_pm_label(args: argparse.Namespace) -> str:
    """What a Q_PM number is, for table headers and axis labels."""
    return "Q_PM: LLM-judge rating 0-10" if args.q_pm_judge == "llm" else "Q_PM: gold-RM reward"


def q_pm_judge(args: argparse.Namespace) -> dict[str, Any]:
    """Who gives Q_PM, made ready: the gold RM (trained once if missing, with its held-out accuracy) or the LLM
    judge."""
    if args.q_pm_judge == "llm":
        return {"judge": "llm", "model": args.judge_model, "endpoint": args.judge_endpoint, "prompt": "Prompt 1 "
                "(paper App. C.1)", "scale": "0-10", "cache": args.judge_cache}
    return {"judge": "gold_rm", **ensure_gold_rm(args)}


def q_pm_text(args: argparse.Namespace, judge: dict[str, Any]) -> str:
    """The settings line's account of Q_PM: on how many prompts, by whom, how good the judge is."""
    if judge["judge"] == "llm":
        return (f"Q_PM on {args.val_prompts} held-out prompts by LLM judge {judge['model']} at "
                f"{judge['endpoint'] or 'the default endpoint'} (Prompt 1, 0-10)")
    return (f"Q_PM on {args.val_prompts} held-out prompts by gold RM {judge['path']} "
            f"(held-out accuracy {judge['accuracy']:.3f} on {judge['pairs']} pairs)")


def rated(values: list[float | None]) -> list[float]:
    """The values a judge gave (an LLM judge's unparsable or refused replies are None)."""
    return [v for v in values if v is not None]


def paired_differences(values: list[float | None], reference: list[float | None]) -> list[float]:
    """Per-prompt ``values - reference`` over the prompts both were rated on."""
    return [a - b for a, b in zip(values, reference) if a is not None and b is not None]


class Judges:
    """Q_PM's judge (gold RM or LLM judge, ``--q-pm-judge``) and the training RM, loaded once.

    Both score a policy's greedy responses to held-out prompts (``--rl-val-data`` unless
    other instructions are given). ``tokenizer``: the policies' tokenizer (default args.sft);
    ``train_rm=False`` leaves the training-RM reward out (the ladder drivers have many RMs).
    """

    def __init__(self, args: argparse.Namespace, tokenizer: str | None = None, train_rm: bool = True):
        self.instructions = [r.text["instruction"] for r in
                             load_records(DataSource(args.rl_val_data, limit=args.val_prompts), ("instruction",))]
        self.tokenizer = load_tokenizer(tokenizer or args.sft)
        self.args, self.device = args, device(args)
        self.llm = llm_judge(args) if args.q_pm_judge == "llm" else None
        self.gold = load_reward_model(args.gold_rm).to(self.device).eval() if self.llm is None else None
        self.train_rm = load_reward_model(args.rm).to(self.device).eval() if train_rm else None
        self.new_tokens = args.new_tokens

    def q_pm_scores(self, instructions: list[str], responses: list[str]) -> list[float | None]:
        """Per response: the LLM judge's rating (None where its reply held none) or the gold RM's reward."""
        if self.llm is not None:
            return self.llm.rate(instructions, responses)
        with torch.inference_mode(), autocast(self.args):
            return self._rewards(self.gold, instructions, responses)

    def _rewards(self, model: torch.nn.Module, instructions: list[str], responses: list[str]) -> list[float]:
        return reward_scores(model, self.tokenizer, instructions, responses, progress=False,
                             max_instruction_tokens=self.args.max_instruction_tokens,
                             max_response_tokens=self.args.max_response_tokens).tolist()

    def evaluate(self, policy: torch.nn.Module, instructions: list[str] | None = None) -> dict[str, Any]:
        """Q_PM (mean ± CI over the rated prompts) and training-RM reward of ``policy``'s greedy responses.

        The training-RM number is what PPOModule logs as val/reward (greedy responses, the RM's score).
        """
        instructions = self.instructions if instructions is None else instructions
        with torch.inference_mode(), autocast(self.args):
            responses = generate_responses(policy, self.tokenizer, instructions, self.new_tokens, batch_size=12,
                                           max_instruction_tokens=self.args.max_instruction_tokens,
                                           progress=False)
        scores = self.q_pm_scores(instructions, responses)
        if not rated(scores):
            raise SystemExit(f"the LLM judge rated none of {len(scores)} answers (see the warnings above)")
        result = {"q_pm": mean_ci(rated(scores)).to_dict(), "q_pm_per_prompt": scores,
                  "unrated": len(scores) - len(rated(scores)),
                  "mean_length_chars": sum(map(len, responses)) / len(responses)}
        if self.train_rm is not None:
            with torch.inference_mode(), autocast(self.args):
                rm = self._rewards(self.train_rm, instructions, responses)
            result.update(rm_reward=mean_ci(rm).to_dict(), rm_per_prompt=rm)
        return result

    def evaluate_path(self, path: str, instructions: list[str] | None = None) -> dict[str, Any]:
        """`evaluate` of a saved policy (e.g. π_SFT, the reference row of every table)."""
        policy = load_policy(path).to(self.device).eval()
        try:
            return self.evaluate(policy, instructions)
        finally:
            del policy
            gc.collect()


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
    info = {"key": key, "path": str(path), "accuracy": rm_accuracy(args, load_reward_model(str(path)), load_tokenizer(str(path)),
                                                                 args.pref_val),
            "pairs": args.pref_val, "trained_seconds": trained_seconds}
    write_json(cache, info)
    print(f"[gold RM] {path}: held-out preference accuracy {info['accuracy']:.3f} on {args.pref_val} pairs", flush=True)
    return info


def contrast_source(args: argparse.Namespace) -> ContrastSource:
    """SEAM_Contrast over demo://sft_train as in cli.yaml (MiniLM encoder, band [0.8, 0.9])."""
    return ContrastSource(corpus=DataSource(args.corpus_data, limit=args.corpus_limit), band=(0.8, 0.9))


LOCAL_LLM = "local:"
"""--llm-model's prefix for a local causal LM (``local:<name or path>``; ``local:`` alone: π_SFT)."""


def add_source_args(parser: ArgumentParser, adv_query_budget: int, without_llm: str) -> None:
    """The flags of the LLM (SEAM_GPT) and adversarial (SEAM_Adv) candidate sources.

    ``adv_query_budget``: the driver's default RM queries per attacked candidate; ``without_llm``: what the
    driver does without --llm-model (for its help).
    """
    p = parser.add_argument
    p("--llm-model", default=None, help="SEAM_GPT's writer of worse answers (LLMSource, the paper's Prompt 2; paper: "
                                        f"gpt-4-0613): a model NAME at --llm-endpoint, or '{LOCAL_LLM}<name or path>' "
                                        f"for a local causal LM ('{LOCAL_LLM}' alone: π_SFT); {without_llm}")
    p("--llm-endpoint", default=None, help="its OpenAI-compatible base URL (default $OPENAI_BASE_URL, else OpenAI's)")
    p("--llm-api-key-env", default="OPENAI_API_KEY", help="environment variable holding that endpoint's key")
    p("--adv-attack", default="deepwordbug", help="SEAM_Adv's attack (AdversarialSource: deepwordbug, pwws, ga, …)")
    p("--adv-query-budget", type=int, default=adv_query_budget, help="RM queries per attacked candidate")


def llm_backend(args: argparse.Namespace, policy: str) -> ChatBackend:
    """--llm-model's chat model: ``local:<name or path>`` samples a local causal LM on the run's device (``local:``
    alone: ``policy``, π_SFT); any other name is asked at the OpenAI-compatible --llm-endpoint."""
    if args.llm_model.startswith(LOCAL_LLM):
        return TransformersBackend(args.llm_model[len(LOCAL_LLM):] or policy, device=str(device(args)))
    return OpenAIBackend(args.llm_model, base_url=args.llm_endpoint, api_key_env=args.llm_api_key_env)


def llm_source(args: argparse.Namespace, policy: str, cache_dir: str | Path) -> LLMSource:
    """SEAM_GPT candidates from --llm-model (the paper's Prompt 2), every reply cached under ``cache_dir``."""
    return LLMSource(llm_backend(args, policy), progress=False, seed=0, cache_dir=str(cache_dir))


def adversarial_source(args: argparse.Namespace, seeds: CandidateSource, **formatting: Any) -> AdversarialSource:
    """SEAM_Adv candidates: ``seeds``' candidates attacked (--adv-attack, --adv-query-budget RM queries each) until
    the RM prefers them to the golden answer; ``formatting``: the RM's token limits (AdversarialSource's defaults
    without). The victim is the RM a SeamCallback offers, or one bound with ``bind``."""
    return AdversarialSource(attack=args.adv_attack, seeds=seeds, query_budget=args.adv_query_budget, progress=False,
                             device=str(device(args)), **formatting)


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


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as JSON atomically; paths and the like as strings, NaN (e.g. an undefined ρ) kept."""
    return files.write_json(path, payload, default=str, allow_nan=True)


def write_table(path: str | Path, headers: list[str], rows: list[list[Any]]) -> str:
    """The markdown table of ``rows``, printed and written to ``path`` (atomically); returns its text."""
    text = markdown_table(headers, rows)
    print(text)
    files.write_text_atomic(path, text + "\n")
    return text


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; floats get 3 decimals."""
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def ci_text(ci: dict[str, float]) -> str:
    """'mean [low, high]' of a MeanCI dict."""
    return f"{ci['mean']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def figure(width: float = 6, height: float = 4, ncols: int = 1):
    """A new (figure, axes) from matplotlib on the Agg backend (no display needed); ``ncols`` > 1: a row of axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(1, ncols, figsize=(width, height))


def save_figure(fig, ax, path: str | Path, title: str) -> Path:
    """Title the axes, write the figure to ``path`` as a PNG and free it."""
    import matplotlib.pyplot as plt
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def bar_plot(path: str | Path, labels: list[str], cis: list[dict[str, float]], title: str, ylabel: str,
             reference: float | None = None, reference_label: str = "") -> Path:
    """Bars of means with 95% CI error bars (and an optional horizontal reference line)."""
    fig, ax = figure()
    means = [c["mean"] for c in cis]
    errors = [[c["mean"] - c["low"] for c in cis], [c["high"] - c["mean"] for c in cis]]
    ax.bar(labels, means, yerr=errors, capsize=6, color="tab:blue", alpha=0.8)
    if reference is not None:
        ax.axhline(reference, color="gray", linestyle="--", label=reference_label)
        ax.legend()
    ax.set_ylabel(ylabel)
    return save_figure(fig, ax, path, title)
