"""Benchmark one PPO step, phase by phase, beside its physical floor on this machine.

    python scripts/bench_ppo.py                 # tiny and default model; float32, and bf16-mixed where native
    python scripts/bench_ppo.py --model default --dtype float32 --steps 3 --threads 1
    python scripts/bench_ppo.py --model tiny --dtype float32,bf16-mixed,bfloat16

Settings are the default job's (cli.yaml): 8 prompts of demo://rl_train per step, 32 new
tokens, 2 PPO epochs × mini-batches of 4, LoRA r 16 on the top 8 blocks of the policy and
of the value model, the reward model sharing the value model's backbone (here the policy's
own weights with a new random head: speed is the same as a trained RM's). ``--dtype``:
``float32`` (Trainer precision 32-true), ``bf16-mixed`` (fp32 weights under bf16 autocast,
as cli.yaml runs) or ``bfloat16`` (bf16 weights, fp32 adapters). By default bf16 runs only
where the CPU computes it natively (AVX512-BF16, AMX): elsewhere PyTorch emulates it, a PPO
step of the default model takes over 10 minutes, and the CLI trains such configs in fp32.

The same run measures this machine's limits: the matmul rate (a large GEMM, fp32 and
bf16) and the memory read bandwidth (summing a 256 MB tensor). Each phase is timed with
the module's own code (its methods wrapped with timers) and set beside a floor:

- generation: the prompt forward at the matmul rate, then per new token the larger of
  (weights + KV cache read) / bandwidth and its FLOPs / matmul rate; weights are counted
  at the bytes read while decoding: under bf16-mixed PPOModule holds the frozen weights in
  bf16 for the step (``cast_frozen_weights_once``), so 2 bytes each, LoRA weights 4.
- each rollout forward (policy, reference, value, reward): FLOPs / matmul rate.
- the update: ``ppo_epochs`` forward + backward passes of the policy and the value model.

The floors count each distinct computation once: the blocks below the lowest LoRA
adapter are a frozen function of the tokens, the same for π and π_ref (the policy with its
adapters off), for the value model and the reward model sharing its backbone, and in every
update pass, so they are counted in the rollout's policy and value forwards only. The
rollout's policy forward itself is counted although generation computed those states
once already: its KV-cached log-probs are not equal to a full forward's (see
``SeededSampling``), so the forward is kept for exactness.

FLOPs are counted as ``experiments/flops.py`` says (2 per weight per token, causal attention,
backward through the adapted blocks only), over the real (unpadded) tokens.
The floors assume the machine's best large-GEMM rate at every shape, so small shapes
(decoding 8 rows, the tiny model's 64-wide layers) cannot reach them: the fraction
shows how far. The tiny model's weights fit in cache, so its generation floor (from the
memory bandwidth) is not a physical limit either: there the step is per-op overhead.

The last line is ``ppo_step_s=… floor_s=… fraction=…`` for the last (model, dtype) run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

import seam_lightning.modules.ppo as ppo_module  # noqa: E402
from seam_lightning import DataSource, LoRASettings, PPOModule, RLHFDataModule, SamplingSettings  # noqa: E402
from seam_lightning.hardware import cpu_has_native_bf16  # noqa: E402
from seam_lightning.models.loading import DEFAULT_MODEL  # noqa: E402

from experiments.flops import backward_flops, forward_flops, generation_floor, shape_of  # noqa: E402
from experiments.machine import matmul_rates, read_bandwidth  # noqa: E402
from experiments.tiny_model import tiny_model_dir  # noqa: E402

PRECISION = {"float32": ("float32", "32-true"), "bf16-mixed": ("float32", "bf16-mixed"),
             "bfloat16": ("bfloat16", "32-true")}


# -- this machine's limits ------------------------------------------------------------------------


@dataclass
class Machine:
    flops: dict[torch.dtype, float]
    bandwidth: float

    @staticmethod
    def measure(bf16: bool) -> Machine:
        return Machine(matmul_rates(bf16), read_bandwidth())


# -- timing the module's phases --------------------------------------------------------------------


@dataclass
class StepTimes:
    phases: dict[str, float] = field(default_factory=dict)
    responses: object = None

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds


class PhaseTimer(Callback):
    """Wraps the module's phase methods with timers; one StepTimes per training step."""

    def __init__(self):
        self.steps: list[StepTimes] = []
        self._in_reference = False
        self._in_rollout = False

    def setup(self, trainer, module, stage):
        if getattr(module, "_bench_wrapped", False):
            return
        module._bench_wrapped = True
        timer = self

        def timed(name_fn, fn):
            def wrapper(*args, **kwargs):
                started = time.perf_counter()
                out = fn(*args, **kwargs)
                name = name_fn(out)
                if name:
                    timer.steps[-1].add(name, time.perf_counter() - started)
                return out
            return wrapper

        sample = module._sample

        def sample_and_keep(*args, **kwargs):
            started = time.perf_counter()
            out = sample(*args, **kwargs)
            timer.steps[-1].add("generation", time.perf_counter() - started)
            timer.steps[-1].responses = out
            return out

        module._sample = sample_and_keep
        module._logprobs = timed(lambda _: "reference forward" if timer._in_reference else "policy forward",
                                 module._logprobs)
        module._scores = timed(lambda _: "reward forward", module._scores)
        module.update = timed(lambda _: "update", module.update)
        reference, rollout = module.reference, module.rollout

        @contextmanager
        def flagged_reference():
            with reference() as model:
                timer._in_reference = True
                try:
                    yield model
                finally:
                    timer._in_reference = False

        def flagged_rollout(*args, **kwargs):
            timer._in_rollout = True
            try:
                return rollout(*args, **kwargs)
            finally:
                timer._in_rollout = False

        module.reference, module.rollout = flagged_reference, timed(lambda _: "rollout", flagged_rollout)
        # A module-level function: wrap the original once, whichever timer ran before.
        values = getattr(ppo_module, "_unwrapped_response_values", ppo_module.response_values)
        ppo_module._unwrapped_response_values = values
        ppo_module.response_values = timed(lambda _: "value forward" if timer._in_rollout else None, values)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.steps.append(StepTimes())
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps[-1].add("ppo step", time.perf_counter() - self._started)


# -- one configuration -------------------------------------------------------------------------


def run(model: str, dtype_name: str, args) -> tuple[float, float]:
    """Time ``args.steps`` PPO steps (after one warm-up step); print phases beside floors; (step s, floor s).

    The machine's rates are measured again right before, so that a machine shared with
    other jobs is measured in the state the steps then run in.
    """
    weights, precision = PRECISION[dtype_name]
    compute = torch.bfloat16 if dtype_name != "float32" else torch.float32
    machine = Machine.measure(bf16=compute == torch.bfloat16)
    rates = "; ".join(f"matmul {str(k).removeprefix('torch.')} {v / 1e9:.1f} GFLOP/s" for k, v in machine.flops.items())
    print(f"\n{model}, {dtype_name}: {torch.get_num_threads()} threads; "
          f"read bandwidth {machine.bandwidth / 1e9:.1f} GB/s; {rates}; attention {args.attn}, "
          f"while sampling {args.generation_attn or args.attn}")
    seed_everything(0, verbose=False)
    from transformers import AutoConfig
    from seam_lightning.models.loading import resolve_model_path

    layers = min(args.lora_layers, AutoConfig.from_pretrained(resolve_model_path(model)).num_hidden_layers)
    lora = LoRASettings(r=16, alpha=32, dropout=0.0, layers=list(range(-layers, 0)))
    steps = args.steps + 1
    module = PPOModule(policy=model, reward_model=model, lora=lora, value_lora=lora, dtype=weights,
                       reuse_frozen_blocks=not args.no_reuse, attn_implementation=args.attn,
                       generation_attn_implementation=args.generation_attn,
                       sampling=SamplingSettings(max_new_tokens=args.new_tokens), learning_rate=2e-4,
                       ppo_epochs=args.ppo_epochs, mini_batch_size=args.mini_batch_size, kl_coef=0.05, kl_target=None,
                       reward_normalization="running", missing_eos_penalty=1.0, max_ppo_steps=steps,
                       evaluate_at_start=False, seed=0)
    data = RLHFDataModule(sft=None, sft_val=None, preference=None, preference_val=None,
                          rl=DataSource("demo://rl_train", limit=args.prompts * steps), rl_val=None,
                          batch_size=args.prompts, max_instruction_tokens=128, max_response_tokens=96, drop_last=True)
    timer = PhaseTimer()
    trainer = Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, max_epochs=-1, callbacks=[timer],
                      default_root_dir=tempfile.mkdtemp())
    trainer.fit(module, datamodule=data)

    # Under bf16-mixed PPOModule holds the frozen weights in bf16 for the step (cast_frozen_weights_once):
    # decoding reads them at 2 bytes each.
    held_in_bf16 = precision == "bf16-mixed" and module.hparams.cast_frozen_weights_once
    frozen_bytes = 2 if held_in_bf16 else None
    policy = shape_of(module.policy, "lm_head", frozen_bytes)
    value = shape_of(module.value_model, "score", frozen_bytes)
    measured = timer.steps[1:]  # the first step warms up kernels and caches
    floors: dict[str, float] = {}
    for step in measured:
        r = step.responses
        lengths = r.attention_mask.sum(-1).tolist()
        prompt_lengths = r.attention_mask[:, :r.start].sum(-1).tolist()
        response_positions = int(r.response_mask.sum())  # the head is needed there only
        rate = machine.flops[compute]
        kv_bytes = 4 if compute == torch.float32 else 2
        # Frozen blocks below the lowest adapter compute the same hidden states for π and π_ref
        # (the policy with adapters off), for the value model and the RM sharing its backbone,
        # and for every update pass: the floor counts them once, in the rollout's first forward.
        shared_reference = policy.first_adapted if module.reference_policy is None else 0
        shared_reward = value.first_adapted if module.shares_reward_backbone else 0
        step_floor = {
            "generation": generation_floor(policy, prompt_lengths, r.tokens.shape[1], kv_bytes, rate,
                                           machine.bandwidth),
            "policy forward": forward_flops(policy, lengths, response_positions) / rate,
            "reference forward": forward_flops(policy, lengths, response_positions, shared_reference) / rate,
            "value forward": forward_flops(value, lengths, response_positions) / rate,
            "reward forward": forward_flops(value, lengths, len(lengths), shared_reward) / rate,
            "update": args.ppo_epochs * (
                forward_flops(policy, lengths, response_positions, policy.first_adapted)
                + backward_flops(policy, lengths, response_positions)
                + forward_flops(value, lengths, response_positions, value.first_adapted)
                + backward_flops(value, lengths, response_positions)) / rate,
        }
        # Phases the module no longer runs (e.g. a forward it saved) have no floor either.
        step_floor = {k: v for k, v in step_floor.items() if k in step.phases}
        step_floor["rollout"] = sum(v for k, v in step_floor.items() if k not in ("update", "rollout"))
        step_floor["ppo step"] = step_floor["rollout"] + step_floor["update"]
        for k, v in step_floor.items():
            floors[k] = floors.get(k, 0.0) + v / len(measured)
    times = {k: sum(s.phases.get(k, 0.0) for s in measured) / len(measured) for k in measured[0].phases}
    tokens = sum(sum(s.responses.attention_mask.sum(-1).tolist()) for s in measured) / len(measured)
    millions = (sum(policy.frozen_per_block) + policy.head) / 1e6
    print(f"\n== {model}, {dtype_name}: {millions:.1f} M policy weights ({policy.weight_bytes / 2**20:.0f} MiB read "
          f"per decoded token), {sum(policy.lora_per_block) / 1e6:.2f} M LoRA; {args.prompts} prompts, {tokens:.0f} "
          f"real tokens per step; mean of {len(measured)} step(s) ==")
    print(f"{'phase':<18} {'seconds':>8} {'floor s':>8} {'fraction':>8}")
    order = ["generation", "policy forward", "reference forward", "value forward", "reward forward", "rollout",
             "update", "ppo step"]
    for name in order:
        if name in times:
            print(f"{name:<18} {times[name]:>8.3f} {floors[name]:>8.3f} {floors[name] / times[name]:>8.3f}")
    return times["ppo step"], floors["ppo step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny,default", help="comma-separated: tiny, default, or a model name")
    parser.add_argument("--dtype", default=None, help="comma-separated: " + ", ".join(PRECISION)
                        + " (default: float32, and bf16-mixed where the CPU has native bf16)")
    parser.add_argument("--steps", type=int, default=2, help="measured PPO steps per configuration (after a warm-up)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per PPO step")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--lora-layers", type=int, default=8, help="LoRA on the top N blocks")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "seam_grouped"],
                        help="PPOModule(attn_implementation=...): the models' attention in every phase")
    parser.add_argument("--generation-attn", default=None, choices=["sdpa", "eager", "seam_grouped"],
                        help="PPOModule(generation_attn_implementation=...): the attention while sampling")
    parser.add_argument("--no-reuse", action="store_true",
                        help="PPOModule(reuse_frozen_blocks=False): run the frozen blocks in every forward")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dtype is None:
        native = cpu_has_native_bf16()
        dtypes = ["float32", "bf16-mixed"] if native else ["float32"]
        if not native:
            print("bf16-mixed skipped: this CPU has no native bf16 (emulated: over 10 min a step; "
                  "--dtype bf16-mixed forces it)")
    else:
        dtypes = args.dtype.split(",")
    for d in dtypes:
        if d not in PRECISION:
            parser.error(f"--dtype {d}: choose from {', '.join(PRECISION)}")

    result = (0.0, 0.0)
    for name in args.model.split(","):
        model = tiny_model_dir() if name == "tiny" else DEFAULT_MODEL if name == "default" else name
        for d in dtypes:
            result = run(model, d, args)
    step, floor = result
    print(f"\nppo_step_s={step:.3f} floor_s={floor:.3f} fraction={floor / step:.3f}")


if __name__ == "__main__":
    main()
