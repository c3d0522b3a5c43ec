"""Which attention implementation to run where: the PPO step's attention-heavy parts, interleaved in one process.

    python scripts/bench_attention.py                       # default model, bf16 autocast where native
    python scripts/bench_attention.py --rounds 7 --implementations sdpa,seam_grouped
    python scripts/bench_attention.py --quick               # tiny random model (seconds)

For each implementation (``sdpa``, ``eager``, ``seam_grouped``) this times, on the same
model, prompts and seeds as one PPO step of the default job (8 demo RL prompts, 32 new
tokens, the frozen weights held in bf16 under bf16 autocast as PPOModule holds them):

- ``decode``: seeded sampling of the responses (``sample_responses``; prefill and KV-cached
  decoding), with the attention switched for decoding only, as
  ``PPOModule(generation_attn_implementation=...)`` does;
- ``train``: a forward and backward pass over the prompt∘response batch in mini-batches
  of 4 (the update's shape), gradients into the top 8 blocks.

The implementations take turns round by round (sdpa, eager, seam_grouped, sdpa, …), so a
machine whose speed drifts (a shared CPU) slows them alike; each figure is the median
over ``--rounds`` rounds. Each implementation must draw the same tokens in every round
(checked); across implementations bf16 rounding may flip a seeded draw, so "same tokens"
is the share of token positions equal to the first implementation's, and every train pass
runs on the first implementation's responses (same shapes for all).
Last line: ``best_decode=NAME best_train=NAME``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from experiments.tiny_model import tiny_model_dir  # noqa: E402
from seam_lightning.data.collate import pad  # noqa: E402
from seam_lightning.data.formatting import PromptFormatter  # noqa: E402
from seam_lightning.data.records import DataSource, load_records  # noqa: E402
from seam_lightning.hardware import cpu_has_native_bf16  # noqa: E402
from seam_lightning.models.forward import response_logits  # noqa: E402
from seam_lightning.models.frozen_blocks import decoder_blocks  # noqa: E402
from seam_lightning.models.loading import DEFAULT_MODEL, load_policy, load_tokenizer  # noqa: E402
from seam_lightning.models.mixed_precision import frozen_linear_weights_in  # noqa: E402
from seam_lightning.models.attention import attention_implementation  # noqa: E402
from seam_lightning.rl.generation import SamplingSettings, sample_responses  # noqa: E402

IMPLEMENTATIONS = ("sdpa", "eager", "seam_grouped")


def prompts(tokenizer, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` demo RL prompts, chat-formatted and left-padded, as PPOModule gets them."""
    formatter = PromptFormatter(tokenizer, 128, 96)
    records = load_records(DataSource("demo://rl_train", limit=n), ("instruction",))
    return pad([formatter.prompt_ids(r.text["instruction"]).ids for r in records], tokenizer.pad_token_id, "left")


def decode(policy, ids, mask, tokenizer, new_tokens: int, name: str):
    return sample_responses(policy, ids, mask, SamplingSettings(max_new_tokens=new_tokens), tokenizer.eos_token_id,
                            tokenizer.pad_token_id, seeds=list(range(len(ids))), attn_implementation=name)


def train_pass(policy, responses, mini_batch: int) -> None:
    """Forward and backward of the update's shape: mini-batches of the sampled batch, loss on the response."""
    for start in range(0, len(responses.sequences), mini_batch):
        rows = slice(start, start + mini_batch)
        logits = response_logits(policy, responses.sequences[rows], responses.attention_mask[rows], responses.start)
        logits.logsumexp(-1).mean().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--trained-layers", type=int, default=8, help="blocks that get gradients (LoRA's top 8)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny random model built from a config")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.implementations.split(",")
    model = tiny_model_dir() if args.quick else args.model
    tokenizer = load_tokenizer(model)
    policy = load_policy(model, attn_implementation="sdpa").eval()
    layers = decoder_blocks(policy)
    for p in policy.parameters():
        p.requires_grad_(False)
    for block in layers[-args.trained_layers:]:
        for p in block.parameters():
            p.requires_grad_(True)
    ids, mask = prompts(tokenizer, args.prompts)
    bf16 = cpu_has_native_bf16()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    times = {name: {"decode": [], "train": []} for name in names}
    tokens, reference = {}, None
    with autocast, frozen_linear_weights_in(torch.bfloat16 if bf16 else None, policy) as swapped:
        print(f"{model}: {len(layers)} blocks, {args.prompts} prompts x {args.new_tokens} new tokens, "
              f"{'bf16 autocast' if bf16 else 'fp32'}, {swapped} frozen weight tensors held in bf16, "
              f"{torch.get_num_threads()} threads, {args.rounds} rounds")
        for round_ in range(args.rounds + 1):  # round 0 warms up every kernel
            for name in names:
                started = time.perf_counter()
                with torch.no_grad():
                    responses = decode(policy, ids, mask, tokenizer, args.new_tokens, name)
                decoded = time.perf_counter() - started
                if name in tokens and not torch.equal(tokens[name], responses.tokens):
                    raise SystemExit(f"{name}: seeded sampling drew other tokens in round {round_}")
                tokens[name] = responses.tokens
                reference = reference if name != names[0] else responses  # every train pass: the same batch
                started = time.perf_counter()
                with attention_implementation(policy, name):
                    train_pass(policy, reference, args.mini_batch_size)
                trained = time.perf_counter() - started
                policy.zero_grad(set_to_none=True)
                if round_:
                    times[name]["decode"].append(decoded)
                    times[name]["train"].append(trained)

    print(f"\n{'attention':<14} {'decode s':>9} {'train s':>9} {'same tokens':>12}   (median of {args.rounds}; min-max)")
    for name in names:
        d, t = times[name]["decode"], times[name]["train"]
        same = (tokens[name] == tokens[names[0]]).float().mean().item()
        print(f"{name:<14} {statistics.median(d):9.3f} {statistics.median(t):9.3f} {same:12.3f}   "
              f"decode {min(d):.3f}-{max(d):.3f}, train {min(t):.3f}-{max(t):.3f}")
    best = {phase: min(names, key=lambda n: statistics.median(times[n][phase])) for phase in ("decode", "train")}
    print(f"\nbest_decode={best['decode']} best_train={best['train']}")


if __name__ == "__main__":
    main()
