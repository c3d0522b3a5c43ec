"""Benchmark SEAM scoring: naive vs padded vs ours, side by side in one process.

    python scripts/bench_seam.py                    # default model, 4 prompts x 30 candidates
    python scripts/bench_seam.py --quick            # tiny random model built from a config
    python scripts/bench_seam.py --prompts 8 --candidates 30 --sweep
    python scripts/bench_seam.py --repeats 3        # methods take turns for 3 rounds; medians

For P demo RL prompts with N candidates each (golden responses of other demo
SFT examples), every method computes the PM's summed log-prob of each candidate
and the RM's reward of each candidate and of the golden response, then SEAM:

(a) naive: one forward per (I, r*) for the PM and one for the RM, batch 1,
    with the full-vocabulary log-softmax (what the official SEAM code does);
(b) padded: fixed-size batches sorted by length, full-vocabulary log-softmax;
(c) ours: `SeamScorer` (each prompt's KV cache computed once and shared by its
    candidates, token-budget batches, output head on response tokens only, and on a CPU
    seam_grouped attention while scoring), fp32;
    and all three again with bf16 weights where the CPU computes bf16 natively
    (`seam-lightning score --dtype bfloat16`), so each ratio compares like precision
    with like; and ours with fp32 weights under bf16 autocast ("ours-autocast": how
    SeamCallback scores inside a bf16-mixed training run, frozen weights cast once).

Prints candidates/s, speed-ups, achieved FLOP/s (the work each method runs, counted as
``experiments/flops.py`` counts it for ``bench_ppo.py``: 2 per weight per token, causal
attention, the PM head where it runs, the input embedding a lookup) against the FLOP/s
of a large matmul measured in the same run, peak memory, the largest SEAM difference between methods, and
how ours scales with N and with prompt length. The last line is
`speedup_vs_naive=X speedup_vs_padded=Y speedup_vs_naive_fp32=W flop_fraction=Z`: ours in
bf16 (fp32 without native bf16) against the baselines in the same precision, against naive fp32,
and its achieved FLOP/s over the same-run matmul rate of that precision.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from experiments.flops import Shape, forward_flops, shape_of, shared_prompt_flops  # noqa: E402
from experiments.machine import matmul_rates  # noqa: E402
from experiments.memory_meter import PeakRSS  # noqa: E402
from experiments.tiny_model import tiny_model_dir  # noqa: E402
from seam_lightning.data.collate import pad  # noqa: E402
from seam_lightning.data.formatting import PromptFormatter  # noqa: E402
from seam_lightning.data.records import DataSource, load_records  # noqa: E402
from seam_lightning.hardware import cpu_has_native_bf16  # noqa: E402
from seam_lightning.models.forward import position_ids_from_mask, sequence_rewards  # noqa: E402
from seam_lightning.models.frozen_blocks import shared_frozen_blocks  # noqa: E402
from seam_lightning.models.loading import DEFAULT_MODEL, load_policy, load_reward_model, load_tokenizer  # noqa: E402
from seam_lightning.models.mixed_precision import frozen_linear_weights_in  # noqa: E402
from seam_lightning.seam.score import seam_score  # noqa: E402
from seam_lightning.seam.scorer import SeamExample, SeamScorer  # noqa: E402


def demo_examples(prompts: int, candidates: int, repeat_instruction: int = 1, seed: int = 0) -> list[SeamExample]:
    """P demo RL prompts, each with N golden responses of other demo SFT examples as candidates."""
    fields = ("instruction", "response")
    rl = load_records(DataSource("demo://rl_train", limit=prompts), fields)
    pool = [r.text["response"] for r in load_records(DataSource("demo://sft_train"), fields)]
    rng = random.Random(seed)
    return [SeamExample(r.id, " ".join([r.text["instruction"]] * repeat_instruction), r.text["response"],
                        rng.sample(pool, candidates)) for r in rl]


# -- baselines ---------------------------------------------------------------------------------


def _full_logits_logprob_sums(policy, ids, mask, prompt_lengths):
    """Summed response log-probs through the full [B, T, V] log-softmax, as the official code does."""
    logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits.float()
    logprobs = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    columns = torch.arange(ids.shape[1] - 1).unsqueeze(0)
    wanted = (columns >= torch.tensor(prompt_lengths).unsqueeze(1) - 1) & (mask[:, 1:] == 1)
    return (logprobs * wanted).sum(-1)


def baseline_seam(policy, reward_model, formatter: PromptFormatter, examples, batch_size: int | None):
    """SEAM per example with batch-1 forwards (batch_size=None) or fixed-size length-sorted right-padded batches,
    and the passes run: (model, rows, padded width)."""
    pad_id = formatter.tokenizer.pad_token_id
    pm_rows, rm_rows = [], []
    for e, ex in enumerate(examples):
        prompt = formatter.prompt_ids(ex.instruction).ids
        rm_rows.append((e, -1, prompt + formatter.response_ids(ex.response).ids, len(prompt)))
        for c, cand in enumerate(ex.candidates):
            seq = prompt + formatter.response_ids(cand).ids
            pm_rows.append((e, c, seq, len(prompt)))
            rm_rows.append((e, c, seq, len(prompt)))
    logprob, reward, passes = {}, {}, []
    for rows, kind in ((pm_rows, "pm"), (rm_rows, "rm")):
        if batch_size is not None:
            rows = sorted(rows, key=lambda r: -len(r[2]))
        size = batch_size or 1
        for start in range(0, len(rows), size):
            part = rows[start:start + size]
            ids, mask = pad([r[2] for r in part], pad_id, "right")
            passes.append((kind, *ids.shape))
            if kind == "pm":
                values = _full_logits_logprob_sums(policy, ids, mask, [r[3] for r in part])
                logprob.update({(r[0], r[1]): v for r, v in zip(part, values.tolist())})
            else:
                reward.update({(r[0], r[1]): v for r, v in zip(part, sequence_rewards(reward_model, ids, mask).tolist())})
    seams = []
    for e, ex in enumerate(examples):
        n = len(ex.candidates)
        lengths = [len(formatter.response_ids(c).ids) for c in ex.candidates]
        seams.append(float(seam_score(
            torch.tensor([[logprob[e, c] for c in range(n)]], dtype=torch.float64),
            torch.tensor([lengths], dtype=torch.float64),
            torch.tensor([[reward[e, c] for c in range(n)]], dtype=torch.float64),
            torch.tensor([reward[e, -1]], dtype=torch.float64))[0]))
    return seams, passes


def readable_length(ids: list[int], pad_id: int | None) -> int:
    """Tokens up to the one an RM reads its reward at: the last that is not a pad id (0: none, the prompt's last)."""
    n = len(ids)
    while n and ids[n - 1] == pad_id:
        n -= 1
    return n


def work_of_ours(pm: Shape, rm: Shape, formatter: PromptFormatter, examples, shared_blocks: int = 0
                 ) -> tuple[int, float]:
    """Tokens and FLOPs our scorer needs, counted as ``experiments/flops.py`` counts them for ``bench_ppo.py``.

    PM: each prompt once, then each candidate but its last token (a state that predicts
    nothing), the LM head on every candidate token. RM: each prompt once, then the golden
    response and each candidate up to the token its reward is read at, the score head once
    per response. With ``shared_blocks`` bottom blocks the two compute alike, those run once
    for both, on the tokens either needs. Padding and skipped work are not counted: this is
    the work, not the time.
    """
    pad_id = formatter.tokenizer.pad_token_id
    tokens, flops = 0, 0.0
    for ex in examples:
        prompt = len(formatter.prompt_ids(ex.instruction).ids)
        candidates = [formatter.response_ids(c).ids for c in ex.candidates]
        golden = formatter.response_ids(ex.response).ids
        pm_run = [len(c) - 1 for c in candidates]
        rm_run = [readable_length(r, pad_id) for r in (golden, *candidates)]
        tokens += 2 * prompt + sum(pm_run) + sum(rm_run)
        flops += (shared_prompt_flops(pm, prompt, pm_run, sum(map(len, candidates)), from_block=shared_blocks)
                  + shared_prompt_flops(rm, prompt, rm_run, len(rm_run), from_block=shared_blocks))
        if shared_blocks:
            either = [rm_run[0]] + [max(p, r) for p, r in zip(pm_run, rm_run[1:])]
            flops += shared_prompt_flops(pm, prompt, either, 0, to_block=shared_blocks)
    return tokens, flops


def work_of_baseline(pm: Shape, rm: Shape, passes: list[tuple[str, int, int]]) -> float:
    """FLOPs the baselines run, padding included: full sequences, the PM's head on every position."""
    return sum(forward_flops(pm if kind == "pm" else rm, [width] * rows, head_positions=rows * width)
               for kind, rows, width in passes)


def logical_tokens(formatter: PromptFormatter, examples) -> int:
    """Tokens of every (I∘r*) for the PM and (I∘r*), (I∘r) for the RM, unpadded: the work without sharing."""
    total = 0
    for ex in examples:
        prompt = len(formatter.prompt_ids(ex.instruction).ids)
        cands = [len(formatter.response_ids(c).ids) for c in ex.candidates]
        total += sum(2 * (prompt + c) for c in cands) + prompt + len(formatter.response_ids(ex.response).ids)
    return total


def timed(fn):
    """(result, seconds, peak resident bytes) of ``fn()``.

    The peak is the kernel's high-water mark reset before the run (:class:`PeakRSS`): a sampling
    thread beside the run would compete with torch's threads for the 2 cores, and it slowed
    the scorer's many small operations by 5–9%.
    """
    meter = PeakRSS()
    meter.reset()
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start, meter.peak()


def take_turns(methods: dict, repeats: int) -> dict:
    """Per method, (result, seconds, peak bytes) of its median-time run (the upper one of an even count).

    The methods take turns for ``repeats`` rounds: this machine's speed drifts by ±20% over
    minutes, and turns spread the drift over all methods alike.
    """
    rounds: dict = {name: [] for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            rounds[name].append(timed(method))
    return {name: sorted(runs, key=lambda run: run[1])[len(runs) // 2] for name, runs in rounds.items()}


def bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()  # emulated bf16 is ~100x slower than fp32: not worth timing


def ours(policy, reward_model, tokenizer, examples, budget: int | None, autocast: bool = False, chunk: int = 64,
         attention: str | None = "auto", share_blocks: bool = True):
    scorer = SeamScorer(policy, reward_model, tokenizer, token_budget=budget, prompts_per_chunk=chunk, progress=False,
                        attn_implementation=attention, share_frozen_blocks=share_blocks)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    # As SeamCallback scores under autocast: the frozen weights held in bf16 while it runs.
    with context, frozen_linear_weights_in(torch.bfloat16 if autocast else None, policy, reward_model):
        return [r.seam for r in scorer.score(examples)]


# -- main ----------------------------------------------------------------------------------------


def build_models(args):
    if args.quick:
        path = tiny_model_dir()
        return (load_policy(path, attn_implementation=args.attn), load_reward_model(path, attn_implementation=args.attn),
                load_tokenizer(path))
    reward = args.reward_model if Path(args.reward_model).exists() else args.model
    if reward != args.reward_model:
        print(f"({args.reward_model} not found: the RM is {args.model} with a new random head; speed is the same)")
    return (load_policy(args.model, attn_implementation=args.attn),
            load_reward_model(reward, attn_implementation=args.attn), load_tokenizer(args.model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="policy (PM)")
    parser.add_argument("--reward-model", default="runs/reward/export", help="RM (default: the default job's)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16, help="fixed batch size of the padded baseline")
    parser.add_argument("--token-budget", type=int, default=None, help="tokens per pass (default: by device)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every method, taking turns; medians")
    parser.add_argument("--sweep", action="store_true", help="also time ours for N in 1, 8, 30 and longer prompts")
    parser.add_argument("--quick", action="store_true", help="tiny random model (seconds)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "seam_grouped"], help="the models' attention")
    args = parser.parse_args()
    torch.manual_seed(0)

    policy, reward_model, tokenizer = build_models(args)
    policy.eval(), reward_model.eval()
    params = sum(p.numel() for p in policy.parameters()), sum(p.numel() for p in reward_model.parameters())
    formatter = PromptFormatter(tokenizer, 128, 192)
    examples = demo_examples(args.prompts, args.candidates)
    n_cands = args.prompts * args.candidates
    print(f"device: cpu, {torch.get_num_threads()} threads; PM {params[0] / 1e6:.1f} M and RM {params[1] / 1e6:.1f} M "
          f"parameters; {args.prompts} prompts x {args.candidates} candidates; median of {args.repeats} round(s)")

    use_bf16 = bf16_supported()
    flops = matmul_rates(use_bf16)
    print("peak matmul (best of 1 s of runs): " + "; ".join(
        f"{str(dtype).removeprefix('torch.')} {rate / 1e9:.1f} GFLOP/s" for dtype, rate in flops.items()))

    methods = {
        "naive": lambda: baseline_seam(policy, reward_model, formatter, examples, None),
        "padded": lambda: baseline_seam(policy, reward_model, formatter, examples, args.batch_size),
        "ours": lambda: ours(policy, reward_model, tokenizer, examples, args.token_budget),
    }
    if use_bf16:  # every method again with bf16 weights, so each ratio compares like precision with like
        pm16, rm16 = copy.deepcopy(policy).to(torch.bfloat16), copy.deepcopy(reward_model).to(torch.bfloat16)
        methods["naive-bf16"] = lambda: baseline_seam(pm16, rm16, formatter, examples, None)
        methods["padded-bf16"] = lambda: baseline_seam(pm16, rm16, formatter, examples, args.batch_size)
        methods["ours-bf16"] = lambda: ours(pm16, rm16, tokenizer, examples, args.token_budget)
        # fp32 weights under bf16 autocast: how SeamCallback scores inside a bf16-mixed run
        methods["ours-autocast"] = lambda: ours(policy, reward_model, tokenizer, examples, args.token_budget, True)
    suffix = "-bf16" if use_bf16 else ""
    with torch.inference_mode():
        shared = shared_frozen_blocks(policy, reward_model)
    shared_blocks = shared[0].index if shared else 0
    print(f"PM and RM share their bottom {shared_blocks} of {len(shared[0].blocks)} blocks (the same weights): ours "
          f"runs them once for both" if shared else "PM and RM share no blocks: ours runs each in full")
    if shared:  # the same without that, for models of different bases
        pm, rm = (pm16, rm16) if use_bf16 else (policy, reward_model)
        methods[f"ours{suffix}-unshared"] = lambda: ours(pm, rm, tokenizer, examples, args.token_budget,
                                                          share_blocks=False)
    with torch.inference_mode():
        ours(policy, reward_model, tokenizer, examples[:1], args.token_budget)  # warm-up
        results = take_turns(methods, args.repeats)

    pm_shape, rm_shape = shape_of(policy, "lm_head"), shape_of(reward_model, "score")
    run_tokens, run_flops = work_of_ours(pm_shape, rm_shape, formatter, examples, shared_blocks)
    unshared_flops = work_of_ours(pm_shape, rm_shape, formatter, examples)[1]
    reference = results["naive"][0][0]
    width = max(map(len, results))
    print(f"\n{'method':<{width}} {'cand/s':>8} {'seconds':>8} {'GFLOP/s':>8} {'peak MB':>8} {'max |dSEAM|':>12}")
    for name, (value, seconds, peak) in results.items():
        seams = value[0] if isinstance(value, tuple) else value
        if isinstance(value, tuple):
            work = work_of_baseline(pm_shape, rm_shape, value[1])
        else:
            work = unshared_flops if name.endswith("-unshared") else run_flops
        achieved = work / seconds
        diff = max(abs(a - b) for a, b in zip(seams, reference))
        print(f"{name:<{width}} {n_cands / seconds:>8.2f} {seconds:>8.2f} {achieved / 1e9:>8.1f} {peak / 2**20:>8.0f} {diff:>12.2e}")
    print(f"(GFLOP/s: the FLOPs each method runs, per experiments/flops.py, over its seconds; the baselines' "
          f"include padding and the PM head on every position. Ours shares prompts, runs the PM head on "
          f"response tokens only{' and the shared blocks once' if shared else ''}: {run_tokens} tokens over both models "
          f"and {run_flops / 1e12:.3f} TFLOP ({unshared_flops / 1e12:.3f} without shared blocks), where full "
          f"sequences are {logical_tokens(formatter, examples)} tokens)")

    if args.sweep:
        print("\nours (fp32) vs N and prompt length:")
        with torch.inference_mode():
            for n in (1, 8, 30):
                for repeat in (1, 4):
                    subset = demo_examples(args.prompts, n, repeat_instruction=repeat)
                    _, seconds, peak = timed(lambda: ours(policy, reward_model, tokenizer, subset, args.token_budget))
                    prompt = sum(len(formatter.prompt_ids(e.instruction).ids) for e in subset) / len(subset)
                    print(f"  N={n:<3} prompt {prompt:>5.0f} tokens: {len(subset) * n / seconds:>8.2f} cand/s, "
                          f"{seconds:>6.2f} s, peak {peak / 2**20:.0f} MB")

        print(f"\nours (fp32), N=8: peak memory vs number of prompts (streamed in chunks of {args.prompts}):")
        with torch.inference_mode():
            for prompts in (args.prompts, 4 * args.prompts):
                subset = demo_examples(prompts, 8)
                _, seconds, peak = timed(lambda: ours(policy, reward_model, tokenizer, subset, args.token_budget,
                                                      chunk=args.prompts))
                print(f"  {prompts:>4} prompts: {seconds:>6.2f} s, peak {peak / 2**20:.0f} MB")

        # The scorer's CPU defaults (512-token passes, seam_grouped attention) against the alternatives.
        pm, rm, label = (pm16, rm16, "bf16 weights") if use_bf16 else (policy, reward_model, "fp32")
        settings = [(budget, "auto") for budget in (256, 512, 1024, 2048)] + [(512, None), (2048, None)]
        with torch.inference_mode():
            medians = take_turns({(budget, attention): partial(ours, pm, rm, tokenizer, examples, budget,
                                                               attention=attention)
                                  for budget, attention in settings}, args.repeats)
        print(f"\nours ({label}) vs token budget and attention while scoring (median of {args.repeats}):")
        for (budget, attention), (_, seconds, _) in medians.items():
            name = "auto (seam_grouped on a CPU)" if attention == "auto" else "the models' own"
            print(f"  {budget:>5} tokens per pass, {name:<28}: {seconds:>6.2f} s")

    # Ratios of like precision: ours in bf16 against the baselines in bf16 (fp32 where bf16 is not native),
    # and against the naive fp32 path, the one the official code runs.
    rate = flops[torch.bfloat16 if use_bf16 else torch.float32]
    if shared:
        seconds = results[f"ours{suffix}-unshared"][1]
        print(f"\nwithout shared blocks: speedup_vs_naive_fp32={results['naive'][1] / seconds:.2f} "
              f"flop_fraction={unshared_flops / seconds / rate:.2f}")
    ours_seconds = results["ours" + suffix][1]
    best_flops = run_flops / ours_seconds
    print(f"\nspeedup_vs_naive={results['naive' + suffix][1] / ours_seconds:.2f} "
          f"speedup_vs_padded={results['padded' + suffix][1] / ours_seconds:.2f} "
          f"speedup_vs_naive_fp32={results['naive'][1] / ours_seconds:.2f} "
          f"flop_fraction={best_flops / rate:.2f}")


if __name__ == "__main__":
    main()
