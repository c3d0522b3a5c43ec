"""Memory of one SFT / reward-model / PPO training step: measured on the default model, estimated for larger ones.

    python scripts/bench_memory.py                  # SFT, RM, PPO in float32 and bfloat16 (a few minutes, 2 CPU cores)
    python scripts/bench_memory.py --quick          # float32 SFT only, then the tables (< 1 min)
    python scripts/bench_memory.py --stages sft,rm --dtypes bfloat16
    python scripts/bench_memory.py --no-measure     # the accounting tables only (instant)
    python scripts/bench_memory.py --json m.json    # also keep the measurements; --from-json m.json reprints them

1. Measured. Each case runs in a fresh Python process (``--child``): import everything, read the resident
   set size (RSS), build the Lightning module (``bundled:SmolLM2-135M-Instruct``, LoRA r=16 on every block
   linear, weights in the case's dtype) and read every weight once, read RSS again, reset the kernel's
   peak-RSS mark (``VmHWM``, through ``/proc/self/clear_refs``; a 1 ms sampler where that is refused) and
   run one training step under ``Trainer(max_steps=1, accelerator="cpu")``. Cases: SFT (SFTModule, batch
   4 x 128 tokens, 64 of them response tokens; also with ``gradient_checkpointing=True``), RM (RewardModule,
   4 pairs = 8 sequences of 128 tokens) and PPO (PPOModule, policy = reward model = the bundled model,
   4 prompts of 64 tokens, 16 sampled tokens, one mini-batch of 4, one PPO epoch, one PPO step). Printed
   per case: the parameter bytes each model holds (unique parameters; with LoRA the reference policy is
   the policy with its adapters off, and with value LoRA on the RM the frozen RM is the value model with
   its adapters off, so they hold nothing of their own), RSS after loading and the step's peak RSS, both
   above the baseline after imports, and the peak of the bytes autograd saved for the backward pass
   (every tensor that reaches a ``saved_tensors_hooks`` pack hook, parameters excluded, shared storages
   counted once; "logits" are those whose last dimension is the vocabulary). ``ru_maxrss`` is not used:
   it cannot be reset, and a child started by ``vfork`` (as ``subprocess`` does) inherits its parent's
   mark. CPU RSS is not GPU memory: no CUDA context or caching allocator here, and CPU dropout keeps a
   float mask where CUDA keeps a bool one; read the measured numbers as the model's tensors.

2. Accounting. :func:`estimate` (``experiments/memory_estimate.py``) is a pure function that adds up the parts of one step's peak (see its
   docstring and the printed assumptions): weights, LoRA parameters with gradients and AdamW state,
   activations (Korthikanti et al. 2022's 34·h bytes per token per layer at 2 bytes, plus the fp32 copies
   of each adapted linear's input that peft keeps on a bf16 base), logits. It is compared with the
   measurements above, calibrated on them (the activation constant that fits what each step saved) and
   extrapolated to Llama-3.2-1B, Llama-2-7B, Mistral-7B and Llama-2-13B in bf16 with LoRA r=16
   all-linear, 8 x 512 tokens, with and without gradient checkpointing, with which of 24/48/80 GB GPUs
   each fits (10% kept free).

Timings are printed for information only; nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiments.memory_estimate import (ADAPTER_BYTES, GIB, KORTHIKANTI_VALUES, estimate,  # noqa: E402
                                         lora_activation_bytes, lora_param_count, print_assumptions,
                                         print_extrapolation, print_markdown)
from experiments.memory_meter import PeakRSS, SavedTensorMeter, release_free_memory, rss_bytes  # noqa: E402

MIB = 2**20
DEFAULT_MODEL = "bundled:SmolLM2-135M-Instruct"  # seam_lightning.models.loading.DEFAULT_MODEL, without importing torch

# -- one measured case, in a fresh process -------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One measured configuration (a fresh process each)."""

    stage: str  # "sft", "rm", "ppo"
    dtype: str = "float32"
    checkpointing: bool = False
    batch: int = 4
    seq_len: int = 128  # SFT / RM: prompt + response; PPO: prompt (seq_len // 2) + new_tokens
    new_tokens: int = 16
    lora_r: int = 16
    model: str = DEFAULT_MODEL

    @property
    def label(self) -> str:
        return f"{self.stage} {self.dtype}" + (" +ckpt" if self.checkpointing else "")

    @property
    def prompt_len(self) -> int:
        return self.seq_len // 2


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def long_text(i: int, words: int = 200) -> str:
    """Plain English far longer than any limit here, different per example."""
    base = ("the quick brown fox jumps over the lazy dog while a careful reader checks every number twice "
            "before writing it down").split()
    return f"Example {i}: " + " ".join(base[(i + j) % len(base)] for j in range(words))


def build_datamodule(case: Case, tokenizer, folder: Path):
    """Examples that fill exactly ``case.batch`` sequences of prompt_len + response tokens."""
    from seam_lightning.data import DataSource, RLHFDataModule
    from seam_lightning.data.formatting import PromptFormatter

    template = len(PromptFormatter(tokenizer, 10**6, 10**6).prompt_ids("x").ids) \
        - len(tokenizer("x", add_special_tokens=False)["input_ids"])
    if template >= case.prompt_len:
        raise ValueError(f"the chat template alone takes {template} tokens; raise --seq-len")
    n = case.batch
    none = dict(sft=None, sft_val=None, preference=None, preference_val=None, rl=None, rl_val=None)
    if case.stage == "sft":
        rows = [{"instruction": long_text(i), "response": long_text(i + 1)} for i in range(n)]
        none["sft"] = DataSource(write_jsonl(folder / "sft.jsonl", rows))
    elif case.stage == "rm":
        rows = [{"instruction": long_text(i), "chosen": long_text(i + 1), "rejected": long_text(i + 2)}
                for i in range(n)]
        none["preference"] = DataSource(write_jsonl(folder / "prefs.jsonl", rows))
    else:
        rows = [{"instruction": long_text(i), "response": long_text(i + 1)} for i in range(n)]
        none["rl"] = DataSource(write_jsonl(folder / "rl.jsonl", rows))
    return RLHFDataModule(**none, batch_size=n, max_instruction_tokens=case.prompt_len - template,
                          max_response_tokens=case.seq_len - case.prompt_len)


def build_module(case: Case):
    """The Lightning module of the case with its models loaded."""
    from seam_lightning import LoRASettings, PPOModule, RewardModule, SFTModule
    from seam_lightning.modules.ppo import NO_DROPOUT
    from seam_lightning.rl.generation import SamplingSettings

    common = dict(dtype=case.dtype, gradient_checkpointing=case.checkpointing)
    if case.stage in ("sft", "rm"):
        cls = SFTModule if case.stage == "sft" else RewardModule
        module = cls(model=case.model, lora=LoRASettings(r=case.lora_r), warmup_steps=0, **common)
    else:
        lora = LoRASettings(r=case.lora_r, dropout=NO_DROPOUT.dropout)
        module = PPOModule(policy=case.model, reward_model=case.model, lora=lora, value_lora=lora,
                           sampling=SamplingSettings(max_new_tokens=case.new_tokens), ppo_epochs=1,
                           mini_batch_size=case.batch, max_ppo_steps=1, evaluate_at_start=False, **common)
    # Modules that load their models in Lightning's configure_model hook do it here (it runs once);
    # for the others this is Lightning's no-op.
    module.configure_model()
    return module


def models_by_role(module, stage: str) -> dict:
    """The module's models by role; None for a role that holds no weights of its own.

    With LoRA the reference policy is the policy with its adapters off; with value LoRA on the RM,
    PPOModule may read the reward from the value model with its adapters off (``shares_reward_backbone``).
    """
    if stage == "sft":
        return {"policy": module.model}
    if stage == "rm":
        return {"reward_model": module.model}
    return {role: getattr(module, name, None) for role, name in (
        ("policy", "policy"), ("reference", "reference_policy"), ("reward_model", "reward_model"),
        ("value_model", "value_model"))}


def unique_params(model) -> list:
    seen, params = set(), []
    for p in model.parameters():
        if p.untyped_storage().data_ptr() not in seen:
            seen.add(p.untyped_storage().data_ptr())
            params.append(p)
    return params


def touch(params) -> None:
    """Read every weight once: weights loaded by mmap from a same-dtype file count in RSS only once read."""
    import torch

    with torch.no_grad():
        for p in params:
            p.detach().sum()


def param_bytes(model) -> tuple[int, int]:
    """(bytes of the unique parameters, trainable parameter count) of a model (None: 0, 0)."""
    if model is None:
        return 0, 0
    params = unique_params(model)
    return sum(p.numel() * p.element_size() for p in params), sum(p.numel() for p in params if p.requires_grad)


def run_case(case: Case) -> dict:
    """Load, then one training step; memory as described in the module docstring."""
    import peft  # noqa: F401  (everything imported before the baseline)
    from lightning.pytorch import Callback, Trainer, seed_everything

    import seam_lightning  # noqa: F401

    release_free_memory()
    baseline = rss_bytes()
    peak = PeakRSS()
    started = time.perf_counter()
    module = build_module(case)
    models = models_by_role(module, case.stage)
    all_params = [p for m in models.values() if m is not None for p in unique_params(m)]
    touch(all_params)
    load_seconds = time.perf_counter() - started
    release_free_memory()
    loaded = rss_bytes()
    load_peak = peak.peak()

    shapes: dict[str, list] = {}

    class Shapes(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            shapes["input_ids"] = list(batch["input_ids"].shape)
            if "labels" in batch:
                shapes["response_tokens"] = int((batch["labels"][:, 1:] != -100).sum())

    config = next(m for m in models.values() if m is not None).config
    meter = SavedTensorMeter(all_params, config.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        data = build_datamodule(case, module.tokenizer, Path(tmp))
        seed_everything(0, verbose=False)
        trainer = Trainer(accelerator="cpu", max_steps=1 if case.stage != "ppo" else -1, max_epochs=1,
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                          default_root_dir=tmp, callbacks=[Shapes()])
        release_free_memory()
        before_step = rss_bytes()
        peak.reset()
        started = time.perf_counter()
        with meter.hooks():
            trainer.fit(module, datamodule=data)
        step_seconds = time.perf_counter() - started
        step_peak = peak.peak()
    held = {role: param_bytes(model) for role, model in models.items()}
    everything = {p.untyped_storage().data_ptr(): p.numel() * p.element_size() for p in all_params}
    result = {
        "case": asdict(case), "input_ids": shapes.get("input_ids"), "response_tokens": shapes.get("response_tokens"),
        "hidden": config.hidden_size, "layers": config.num_hidden_layers, "vocab": config.vocab_size,
        "intermediate": config.intermediate_size,
        "kv_dim": config.num_key_value_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads),
        "n_params": sum(p.numel() for p in unique_params(models.get("policy") or models["reward_model"])
                        if not p.requires_grad),
        "param_bytes": {role: b for role, (b, _) in held.items()},
        "trainable": {role: n for role, (_, n) in held.items()},
        "param_bytes_total": sum(everything.values()),
        "shares_reward_backbone": bool(getattr(module, "shares_reward_backbone", False)),
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "baseline": baseline, "loaded": loaded, "load_peak": load_peak, "before_step": before_step,
        "step_peak": step_peak, "saved_peak": meter.peak, "saved_peak_logits": meter.peak_logits,
        "load_seconds": load_seconds, "step_seconds": step_seconds,
    }
    if case.stage == "ppo":
        result["response_length"] = float(trainer.callback_metrics["train/response_length"])
    return result


def child_main(case_json: str) -> None:
    result = run_case(Case(**json.loads(case_json)))
    print("RESULT " + json.dumps(result), flush=True)


def measure(case: Case, default_malloc: bool = False, threads: int = 1) -> dict:
    """Run one case in a fresh interpreter and return its result (or raise with its stderr).

    Unless ``default_malloc``, glibc serves every allocation over 64 KiB with its own mmap, so a freed
    tensor leaves RSS at once and the peak RSS follows the live tensors (by default glibc raises that
    threshold as it goes and keeps freed blocks in per-thread heaps: ~30% more peak RSS here).
    ``threads``: intra-op threads of the child. The memory does not depend on it; one thread keeps a
    step's time steady when other processes share the cores (two OpenMP threads that wait for each
    other made a PPO step 8x slower on a busy 2-core machine).
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if not default_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(asdict(case))], capture_output=True,
                          text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{case.label} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# -- comparing and printing -----------------------------------------------------------------------

CPU_MASK_BYTES = ADAPTER_BYTES  # CPU dropout keeps an fp32 noise tensor, not a bool mask (see ADAPTER_BYTES)


def measured_estimate(result: dict, act_values: float = KORTHIKANTI_VALUES) -> dict[str, float]:
    """:func:`estimate` for exactly the measured case (its tokens, dtype and LoRA parameters)."""
    case = Case(**result["case"])
    dtype_bytes = 4 if case.dtype == "float32" else 2
    lora = lora_param_count(result["hidden"], result["intermediate"], result["kv_dim"], result["layers"], case.lora_r)
    batch, width = result["input_ids"]
    if case.stage == "rm":
        batch //= 2
    if case.stage == "ppo":
        seq_len, response_len = width + case.new_tokens, case.new_tokens
    else:
        seq_len, response_len = width, (result["response_tokens"] or 0) / batch
    return estimate(result["n_params"], result["hidden"], result["layers"], result["vocab"], dtype_bytes, lora,
                    batch, seq_len, case.checkpointing, stage=case.stage, response_len=response_len,
                    intermediate=result["intermediate"], kv_dim=result["kv_dim"],
                    tied_embeddings=result.get("tied_embeddings", True),
                    lora_dropout=case.stage != "ppo", mask_bytes=CPU_MASK_BYTES, act_values=act_values,
                    shared_reward_backbone=result.get("shares_reward_backbone", False))


def calibrated_values(result: dict) -> float:
    """The ``act_values`` that a measured step (without checkpointing) saved for its backward pass.

    The saved-tensor peak less its logits, per token and layer, less the modelled LoRA copies
    (:func:`lora_activation_bytes` with CPU dropout masks), over hidden x dtype bytes.
    """
    case = Case(**result["case"])
    dtype_bytes = 4 if case.dtype == "float32" else 2
    h, layers = result["hidden"], result["layers"]
    rows, width = result["input_ids"]
    tokens = rows * width if case.stage != "ppo" else 2 * rows * (width + case.new_tokens)  # policy and value
    lora = lora_activation_bytes(h, result["intermediate"], dtype_bytes, case.stage != "ppo", CPU_MASK_BYTES)
    per_token_layer = (result["saved_peak"] - result["saved_peak_logits"]) / (tokens * layers)
    return (per_token_layer - lora) / (h * dtype_bytes)


def print_measured(results: list[dict]) -> None:
    print("\n== Measured: one training step of the default model (CPU, fresh process per case; MiB) ==")
    print(f"{'case':<20} {'batch':>9} {'policy':>7} {'ref':>5} {'RM':>7} {'value':>7} {'train.':>9} "
          f"{'loaded':>7} {'peak':>7} {'step':>7} {'saved':>7} {'logits':>7} {'load s':>7} {'step s':>7}")
    for r in results:
        case, pb = Case(**r["case"]), r["param_bytes"]

        def held(role):
            if role not in pb:
                return "-"
            if role == "reference" and pb[role] == 0:
                return "=pol"
            if role == "reward_model" and r.get("shares_reward_backbone"):
                return "=val"
            return f"{pb[role] / MIB:.0f}"

        shape = "x".join(map(str, r["input_ids"]))
        if case.stage == "ppo":
            shape = f"{r['input_ids'][0]}x{r['input_ids'][1]}+{r['response_length']:.0f}"
        print(f"{case.label:<20} {shape:>9} {held('policy'):>7} {held('reference'):>5} {held('reward_model'):>7} "
              f"{held('value_model'):>7} {sum(r['trainable'].values()) / 1e6:>8.2f}M "
              f"{(r['loaded'] - r['baseline']) / MIB:>7.0f} {(r['step_peak'] - r['baseline']) / MIB:>7.0f} "
              f"{(r['step_peak'] - r['before_step']) / MIB:>7.0f} {r['saved_peak'] / MIB:>7.0f} "
              f"{r['saved_peak_logits'] / MIB:>7.0f} {r['load_seconds']:>7.1f} {r['step_seconds']:>7.1f}")
    print("batch: rows x tokens (PPO: prompts x prompt tokens + mean response length). policy/ref/RM/value: MiB\n"
          "of unique parameters each model holds, LoRA adapters included (ref '=pol': the policy with adapters off;\n"
          "RM '=val': the value model with adapters off). train.: trainable parameters (fp32). loaded / peak: RSS\n"
          "after building the module / peak RSS of the step, above the RSS after imports. step: peak RSS of the\n"
          "step above the RSS just before it. saved / logits: peak bytes autograd kept for the backward pass / of\n"
          "them, tensors over the vocabulary. Seconds are for information (other processes share the cores).")


def print_comparison(results: list[dict], act_values: float) -> None:
    print(f"\n== Estimate vs measured, default model (MiB; activations at {act_values:.1f} values/token/layer/h) ==")
    print(f"{'case':<20} {'weights':>8} {'train.':>7} {'acts':>7} {'logits':>7} {'est.tot':>8} {'meas.pk':>8} "
          f"{'ratio':>6} {'est.acts+lg':>11} {'saved':>7} {'ratio':>6} {'calib.':>7}")
    for r in results:
        case = Case(**r["case"])
        est = {k: v * GIB / MIB for k, v in measured_estimate(r, act_values).items()}
        weights = est["policy"] + est["reference"] + est["reward_model"] + est["value_model"]
        step = est["activations"] + est["logits"]
        measured, saved = (r["step_peak"] - r["baseline"]) / MIB, r["saved_peak"] / MIB
        calib = "-" if case.checkpointing else f"{calibrated_values(r):.1f}"
        print(f"{case.label:<20} {weights:>8.0f} {est['trainable']:>7.0f} {est['activations']:>7.0f} "
              f"{est['logits']:>7.0f} {est['total']:>8.0f} {measured:>8.0f} {measured / est['total']:>6.2f} "
              f"{step:>11.0f} {saved:>7.0f} {saved / step:>6.2f} {calib:>7}")
    print("est.tot vs meas.pk: the estimate's total against the step's peak RSS above the post-import baseline\n"
          "(that also holds the tokenizer, Lightning, allocator slack and, in PPO, generation buffers).\n"
          "est.acts+lg vs saved: the estimated activations + logits against what autograd actually saved\n"
          "(checkpointed blocks save through their own hooks, so '+ckpt' rows see only what is outside them;\n"
          "the backward's transient gradients are in the estimate's logits but never saved).\n"
          "calib.: the act_values that fit what the step saved (less logits and the modelled LoRA copies, with\n"
          f"CPU dropout masks of 4 bytes); Korthikanti et al. 2022 with fused attention: {KORTHIKANTI_VALUES:.0f}.")


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="sft,rm,ppo", help="comma-separated: sft, rm, ppo")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16, float16")
    parser.add_argument("--quick", action="store_true", help="float32 SFT only")
    parser.add_argument("--no-measure", action="store_true", help="only the accounting tables")
    parser.add_argument("--no-checkpointing-case", action="store_true", help="skip SFT with gradient checkpointing")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--default-malloc", action="store_true",
                        help="measure with glibc's default allocation thresholds (more allocator slack in RSS)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each measured process")
    parser.add_argument("--act-values", type=float, default=None,
                        help=f"activation values/token/layer/h for the extrapolation (default: {KORTHIKANTI_VALUES:.0f}, "
                             "or a larger bf16 calibration of this run)")
    parser.add_argument("--json", help="also write the measured results to this JSON file")
    parser.add_argument("--from-json", help="print the tables from results a --json run wrote; measure nothing")
    parser.add_argument("--batch", type=int, default=8, help="extrapolation batch")
    parser.add_argument("--seq-len", type=int, default=512, help="extrapolation tokens per sequence")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def cases_from(args: argparse.Namespace) -> list[Case]:
    if args.no_measure:
        return []
    stages, dtypes = args.stages.split(","), args.dtypes.split(",")
    if args.quick:
        stages, dtypes = ["sft"], ["float32"]
    cases = []
    for stage in stages:
        for dtype in dtypes:
            cases.append(Case(stage, dtype, lora_r=args.lora_r, model=args.model))
            if stage == "sft" and not args.no_checkpointing_case and not args.quick:
                cases.append(Case(stage, dtype, checkpointing=True, lora_r=args.lora_r, model=args.model))
    return cases


def choose_act_values(args: argparse.Namespace, results: list[dict]) -> tuple[float, str]:
    """Korthikanti's constant, or this run's bf16 calibration where that is larger (or --act-values)."""
    if args.act_values is not None:
        return args.act_values, "given with --act-values"
    calibrations = {Case(**r["case"]).label: calibrated_values(r) for r in results
                    if r["case"]["dtype"] == "bfloat16" and not r["case"]["checkpointing"]}
    if not calibrations:
        return KORTHIKANTI_VALUES, "Korthikanti et al. 2022; no bf16 step measured in this run"
    seen = ", ".join(f"{label} {value:.1f}" for label, value in calibrations.items())
    return max(KORTHIKANTI_VALUES, *calibrations.values()), \
        f"the larger of Korthikanti et al. 2022's {KORTHIKANTI_VALUES:.0f} and this run's bf16 calibrations: {seen}"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(args.child)
        return
    started = time.perf_counter()
    results = json.loads(Path(args.from_json).read_text()) if args.from_json else []
    for case in [] if args.from_json else cases_from(args):
        print(f"measuring {case.label} ...", flush=True)
        results.append(measure(case, args.default_malloc, args.threads))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if results:
        print_measured(results)
        print_comparison(results, KORTHIKANTI_VALUES)
    act_values, source = choose_act_values(args, results)
    print(f"\nactivation values per token/layer/h used below: {act_values:.1f} ({source})")
    print_assumptions(args.lora_r, args.batch, args.seq_len)
    print_extrapolation(act_values, args.batch, args.seq_len, args.lora_r)
    print_markdown(act_values, args.batch, args.seq_len, args.lora_r)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
