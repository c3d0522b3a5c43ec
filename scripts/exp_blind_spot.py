"""Does SEAM find a reward model's blind spot? A controlled benchmark with a known answer.

    python scripts/exp_blind_spot.py                       # demo: 3 ρ × 2 seeds, 160 D_rl prompts
    python scripts/exp_blind_spot.py --rhos 1 --seeds 0 --rl-effect   # one flawed RM, and PPO with it
    python scripts/exp_blind_spot.py --quick               # a few prompts and RM steps: mechanics only
    python scripts/exp_blind_spot.py --llm-model local: --adv         # also SEAM with the LLM and adversarial sources
    python scripts/exp_blind_spot.py --config scripts/experiments/configs/demo.yaml --accelerator gpu

Setting. Part B is a seeded-hash 20% of the demo's standard-library modules. A *flawed* RM is trained
on the preference pairs (--preference-data, demo://preference_train) with chosen and rejected swapped
for a share ρ of B's pairs; a *gold* RM on the unswapped pairs with another seed. The plant check is
each RM's preference accuracy on held-out pairs (--preference-val-data) inside and outside B. B is
defined over the demo's module names (each record's ``source``), so the data must be the demo's.

Detection. D_rl (the first --rl-prompts of --rl-data) is scored under π_SFT and each flawed RM; every
signal is a score per prompt, and AUROC and precision at the top 20% for "prompt in B" are reported
with 95% bootstrap intervals over prompts: SEAM with the contrast source and with the policy's own
samples (PolicySampleSource, judged by the gold RM: an *oracle* judge, labelled so; or with --sample-judge
llm by the paper's Prompt 1 at --judge-endpoint, a judge a user has), the baselines
(random; minus the flawed RM's reward of the golden response; the spread of the flawed RM's rewards
over the k policy samples, what OpenRLHF's dynamic filtering and verl's filter_groups look at; the
prompt's perplexity and the golden response's perplexity under π_SFT) and SEAM's parts as ablations.

Optional sources (off by default; the contrast source and the policy samples always run). --llm-model adds
the signal seam_llm: SEAM with LLMSource candidates, worse answers written with the paper's Prompt 2 by a
local causal LM (--llm-model local:<name or path>; 'local:' alone is π_SFT) or by a model at an
OpenAI-compatible endpoint (--llm-model NAME --llm-endpoint URL, its key in the environment variable that
--llm-api-key-env names, default OPENAI_API_KEY; replies cached in <out>/blind_spot/llm_candidates). They
depend on the prompt and golden answer alone, so they and their π_SFT log-likelihoods are computed once per
run (cell llm_side); a prompt the writer gives no usable answer gets SEAM 0, as for contrast. --adv adds
seam_adv: SEAM with AdversarialSource candidates, the contrast candidates attacked (--adv-attack, default
deepwordbug; --adv-query-budget RM queries each, default 20) until the flawed RM under test prefers them, so
per flawed RM. Each signal's detection under a flawed RM is a cell of its own (detect_llm; detect_adv, which
holds the attack too) keyed by its source's flags, merged into the tables, with the candidates' mean token
log-likelihood in the Table-1 comparison; the cells without them keep their keys, so a folder saved without
the sources is reused whole.

Effect on RL (--rl-effect). PPO with the flawed RM (--rl-rho, the first seed) on all of D_rl, on D_rl
without its top --fraction by SEAM (contrast source), and without a random --fraction, for each of
--rl-seeds, the same number of steps each (common.run_ppo: cli.yaml's PPO settings, at --ppo-lr and
the benchmark's token limits); the gold RM rewards each policy's greedy responses to held-out prompts
(--rl-val-data), inside and outside B.

Cost. The RM backbone is configurable (--rm-backbone, or 'first:N' blocks of --base for a cheap one);
the default is the full SmolLM2-135M with LoRA on its top 8 blocks + the scalar head, 250 steps of 8
pairs at lr 5e-4 (--rm-lr), in bf16 autocast where the CPU computes bf16 natively (--precision); texts
are cut to 48 instruction and 64 response tokens (--max-instruction-tokens, --max-response-tokens). The
PM side (candidates, samples, PM log-likelihoods, perplexities) is computed once and shared by all RMs. Every
finished cell (an RM, the PM side, the LLM candidates, a detection, a PPO run) is appended to
<out>/blind_spot/cells.jsonl under a key holding the settings it depends on, so a killed run resumes where it
stopped and a rerun with more --rhos/--seeds/--rl-seeds adds cells. Writes <out>/blind_spot.json, .md and .png.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch import seed_everything  # noqa: E402

from experiments.blind_spot import blind_spot_modules, flip_pairs, module_of, seam_variants, stable_unit  # noqa: E402
from experiments.blind_spot_report import SIGNALS, mean_token_loglik, plot, report  # noqa: E402
from experiments.blind_spot_rl import RL_ONLY, rl_effect  # noqa: E402
from experiments.blind_spot_scoring import (TOKEN_BUDGET, detection, limits, load_rm,  # noqa: E402
                                            prompt_perplexities, rm_rewards, score_candidates, seam_scorer)
from experiments.blind_spot_sources import (adv_settings, adversarial_detection, llm_detection,  # noqa: E402
                                            llm_settings, llm_side, sources_summary, with_sources)
from experiments.common import (Cells, autocast, data_rows, device, experiment_parser, lora, top_layers,  # noqa: E402
                                trainer)
from experiments.judges import llm_judge  # noqa: E402
from experiments.sources import add_source_args  # noqa: E402
from seam_lightning import DataSource, RewardModule, RLHFDataModule, SamplingSettings  # noqa: E402
from seam_lightning import files  # noqa: E402
from seam_lightning.data.formatting import PromptFormatter  # noqa: E402
from seam_lightning.eval.quality import preference_accuracy  # noqa: E402
from seam_lightning.models.loading import (DEFAULT_MODEL, load_policy, load_reward_model, load_tokenizer,  # noqa: E402
                                           resolve_model_path)
from seam_lightning.seam.perplexity import golden_perplexities  # noqa: E402
from seam_lightning.seam.sources import ContrastSource, PolicySampleSource, RewardJudge  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The common experiment flags (hardware, sizes, token limits, --rm-lr, --config YAML) plus the benchmark's own;
    the token limits default to 48 instruction / 64 response tokens here."""
    parser = experiment_parser(__doc__.split("\n\n")[0])
    a = parser.add_argument
    a("--rm-backbone", default=DEFAULT_MODEL, help="the RM backbone: a model name/folder, or 'first:N' (the first N blocks of --base)")
    a("--rm-steps", type=int, default=None, help="RM training steps (default 250, quick 2)")
    a("--gold-rm-steps", type=int, default=None, help="the gold RM's training steps (default: --rm-steps); flawed "
                                                      "RMs trained longer than the gold one reuse its cells")
    a("--rm-lora-layers", type=int, default=8, help="LoRA on the top N blocks of the RM backbone (cli.yaml: 8)")
    a("--share", type=float, default=0.2, help="share of the demo modules in part B")
    a("--partition-seed", type=int, default=0, help="seed of the hash choosing B (and the flipped pairs)")
    a("--rhos", type=float, nargs="+", default=None, help="flip shares ρ (default 1 0.5 0.25)")
    a("--seeds", type=int, nargs="+", default=None, help="flawed-RM seeds (default 0 1, quick 0)")
    a("--gold-seed", type=int, default=1000, help="the gold RM's seed")
    a("--pref-limit", type=int, default=None, help="use only the first N preference pairs")
    a("--samples", type=int, default=None, help="k policy samples per prompt (default 4, quick 2)")
    a("--sample-judge", choices=["gold_rm", "llm"], default="gold_rm",
      help="who decides which policy samples are worse than the golden answer: gold_rm (the gold RM, an oracle "
           "here, labelled so) or llm (the paper's Prompt 1 by --judge-model at --judge-endpoint, replies cached)")
    a("--resamples", type=int, default=1000, help="bootstrap resamples")
    a("--rl-effect", action="store_true", help="also run PPO with the flawed RM on full vs SEAM-pruned vs "
                                               "random-pruned D_rl (per --rl-seeds), judged by the gold RM")
    a("--rl-seeds", type=int, nargs="+", default=None, help="PPO seeds of the RL-effect runs (default 0 1 2, quick 0)")
    a("--rl-rho", type=float, default=1.0, help="the flawed RM (ρ, first of --seeds) the RL-effect runs train with")
    a("--fraction", type=float, default=0.2, help="share of D_rl the RL-effect runs prune (paper: 0.2)")
    add_source_args(parser, adv_query_budget=20, without_llm="with it, the signal seam_llm is added (off by default)")
    a("--adv", action="store_true", help="add the signal seam_adv (off by default): SEAM with AdversarialSource "
                                         "candidates, the contrast candidates attacked per flawed RM (--adv-attack, "
                                         "--adv-query-budget)")
    parser.set_defaults(candidates=None, lora_layers=8, max_instruction_tokens=48, max_response_tokens=64)
    args = parser.parse_args(argv)
    full = dict(rm_steps=250, rhos=[1.0, 0.5, 0.25], seeds=[0, 1], rl_prompts=160, pref_val=400, candidates=5,
                samples=4, new_tokens=32, rl_seeds=[0, 1, 2], ppo_steps=10, val_prompts=100)
    quick = dict(rm_steps=2, rhos=[1.0, 0.5], seeds=[0], rl_prompts=8, pref_val=8, candidates=2, samples=2,
                 new_tokens=4, rl_seeds=[0], ppo_steps=1, val_prompts=8)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.sample_judge == "llm" and not args.judge_model:
        raise SystemExit("--sample-judge llm needs --judge-model NAME (and --judge-endpoint URL for a local server)")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def sample_judge(args: argparse.Namespace) -> dict:
    """Who judges the policy samples, for keys and labels: the gold RM (an oracle) or the LLM judge."""
    if args.sample_judge == "llm":
        return {"judge": "llm", "model": args.judge_model, "endpoint": args.judge_endpoint,
                "label": f"judge: LLM {args.judge_model}, Prompt 1"}
    return {"judge": "gold_rm", "label": "oracle judge: gold RM"}


def rm_backbone(args: argparse.Namespace, root: Path) -> str:
    """The RM backbone: ``first:N`` builds (once) a folder with the first N blocks of --base; else the name itself."""
    if not args.rm_backbone.startswith("first:"):
        return args.rm_backbone
    from transformers import AutoModelForCausalLM
    blocks = int(args.rm_backbone.split(":", 1)[1])
    path = root / f"backbone-first{blocks}"
    if path.exists():
        return str(path)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.base), torch_dtype=torch.float32)
    config = model.config
    blocks = min(blocks, config.num_hidden_layers)
    model.model.layers = model.model.layers[:blocks]
    config.num_hidden_layers = blocks
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:blocks]
    with files.atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        load_tokenizer(args.base).save_pretrained(tmp)
    return str(path)


def train_rm(args: argparse.Namespace, backbone: str, pairs_path: Path, seed: int, steps: int,
             export_dir: Path) -> float:
    """A pairwise RM (RewardModule, LoRA on the top blocks + head), ``steps`` steps on ``pairs_path``; returns seconds.

    Runs on the experiment's hardware and precision (bf16-mixed where bf16 is native, see
    ``experiments.common.precision``).
    """
    start = time.monotonic()
    seed_everything(seed, verbose=False)
    data = RLHFDataModule(sft=None, sft_val=None, rl=None, rl_val=None, preference_val=None,
                          preference=DataSource(str(pairs_path)), batch_size=args.batch_size,
                          max_instruction_tokens=args.max_instruction_tokens,
                          max_response_tokens=args.max_response_tokens, seed=seed)
    module = RewardModule(model=backbone, lora=lora(top_layers(backbone, args.rm_lora_layers), dropout=0.05),
                          learning_rate=args.rm_lr, warmup_steps=min(10, steps), export_dir=str(export_dir))
    trainer(args, export_dir.parent, max_steps=steps).fit(module, datamodule=data)
    return time.monotonic() - start




def plant_check(args, model, tokenizer, val: list[dict], in_b: frozenset[str]) -> dict:
    """Preference accuracy on held-out pairs inside and outside B."""
    out, model = {}, model.to(device(args))
    for name, rows in (("in_b", [r for r in val if module_of(r["source"]) in in_b]),
                       ("out_b", [r for r in val if module_of(r["source"]) not in in_b])):
        cols = [[r[f] for r in rows] for f in ("instruction", "chosen", "rejected")]
        with torch.inference_mode(), autocast(args):
            out[name] = preference_accuracy(model, tokenizer, *cols, batch_size=16, **limits(args)) if rows else math.nan
        out[f"{name}_pairs"] = len(rows)
    return out




def pm_side(args, policy_name: str, gold_path: str, rl: list[dict]) -> dict:
    """Once for all RMs: contrast candidates, k policy samples (judged by the gold RM), PM log-likelihoods, perplexities."""
    with torch.inference_mode(), autocast(args):
        return _pm_side(args, policy_name, gold_path, rl)


def _pm_side(args, policy_name: str, gold_path: str, rl: list[dict]) -> dict:
    start = time.monotonic()
    instructions, golden = [r["instruction"] for r in rl], [r["response"] for r in rl]
    contrast = ContrastSource(corpus=DataSource(args.corpus_data, limit=args.corpus_limit), band=(0.8, 0.9))
    contrast_candidates = contrast.candidates(instructions, golden, args.candidates)
    t_contrast = time.monotonic() - start
    policy, tokenizer = load_policy(policy_name).to(device(args)).eval(), load_tokenizer(policy_name)
    gold, gold_tok = load_reward_model(gold_path).to(device(args)).eval(), load_tokenizer(gold_path)
    judge = llm_judge(args) if args.sample_judge == "llm" else RewardJudge(
        gold, gold_tok, oracle=True, name="gold RM", max_instruction_tokens=args.max_instruction_tokens,
        max_response_tokens=args.max_response_tokens)
    source = PolicySampleSource(policy, tokenizer, judge, samples_per_prompt=args.samples, seed=0,
                                sampling=SamplingSettings(max_new_tokens=args.new_tokens),
                                max_instruction_tokens=args.max_instruction_tokens)
    t0 = time.monotonic()
    kept = source.candidates(instructions, golden, args.samples)
    t_samples = time.monotonic() - t0
    samples = [s.samples for s in source.last_samples]
    # PM log-likelihoods of every contrast candidate and every sample (the kept ones are among them).
    t0 = time.monotonic()
    results = score_candidates(seam_scorer(args, policy, tokenizer, gold, gold_tok), rl,
                               [c + s for c, s in zip(contrast_candidates, samples)])
    t_loglik = time.monotonic() - t0
    formatter = PromptFormatter(tokenizer, args.max_instruction_tokens, args.max_response_tokens)
    golden_ppl = golden_perplexities(policy, formatter, [(i, q, r) for i, (q, r) in enumerate(zip(instructions, golden))],
                                     TOKEN_BUDGET)
    prompts = []
    for i, res in enumerate(results):
        n_c = len(contrast_candidates[i])
        prompts.append({
            "contrast": contrast_candidates[i], "samples": samples[i],
            "sample_kept": [s in kept[i] for s in samples[i]],
            "logprob_sums": res.candidate_logprob_sums, "lengths": res.candidate_lengths, "n_contrast": n_c,
            "gold_golden": res.golden_reward, "gold_candidates": res.candidate_rewards,
            "golden_ppl": golden_ppl[i]})
    for p, ppl in zip(prompts, prompt_perplexities(policy, tokenizer, instructions)):
        p["prompt_ppl"] = ppl
    stats = {"contrast": vars(contrast.last_stats) if contrast.last_stats else None,
             "policy_sample": vars(source.last_stats)}
    return {"policy": policy_name, "prompts": prompts, "stats": stats, "seconds": {
        "contrast": t_contrast, "samples_and_judge": t_samples, "pm_loglik": t_loglik,
        "total": time.monotonic() - start}}














def signals(args, pm: dict, rm, tok, rl: list[dict], cell_seed: int) -> dict[str, list[float]]:
    """Every signal of SIGNALS per prompt under one flawed RM ``rm`` with its tokenizer (larger = more suspicious)."""
    prompts = pm["prompts"]
    per = rm_rewards(args, rm, tok, rl, [p["contrast"] + p["samples"] for p in prompts])
    out: dict[str, list[float]] = {k: [] for k in SIGNALS}
    for i, (p, values) in enumerate(zip(prompts, per)):
        golden, n_c = values[0], p["n_contrast"]
        contrast = seam_variants(p["logprob_sums"][:n_c], p["lengths"][:n_c], values[1:1 + n_c], golden)
        kept = [j for j, k in enumerate(p["sample_kept"]) if k]
        policy = seam_variants([p["logprob_sums"][n_c + j] for j in kept], [p["lengths"][n_c + j] for j in kept],
                               [values[1 + n_c + j] for j in kept], golden)
        sample_rewards = values[1 + n_c:]
        out["seam_contrast"].append(contrast["seam"])
        out["seam_policy"].append(policy["seam"])
        out["random"].append(stable_unit(f"random:{cell_seed}:{i}"))
        out["neg_golden_reward"].append(-golden)
        out["reward_spread"].append(float(np.std(sample_rewards)) if sample_rewards else 0.0)
        out["prompt_ppl"].append(p["prompt_ppl"])
        out["golden_ppl"].append(p["golden_ppl"])
        for k in ("misjudgement_rate", "weighted_count", "excess_unweighted", "no_length_norm"):
            out[k].append(contrast[k])
    return out








# Settings that say what to run, not what a cell computes; the RL-effect runs' own settings; and common flags
# newer than the first cells: --sft-lr, which no cell reads, and --ppo-lr, in the RL-effect keys only where it
# differs from its former fixed value (common.later_settings), so cells saved before stay valid.
RUN_ONLY = ("config", "out", "threads", "quick", "rhos", "seeds", "rl_effect", "rl_seeds", "rl_rho")
NEWER = ("sft_lr", "ppo_lr")
# The optional sources' flags: their signals live in cells of their own, keyed by llm_settings / adv_settings, so
# the cells without them keep their keys.
SOURCES = ("llm_model", "llm_endpoint", "llm_api_key_env", "adv", "adv_attack", "adv_query_budget")
CELL_SKIP = RUN_ONLY + RL_ONLY + NEWER + SOURCES + ("gold_rm_steps", "sample_judge")
"""What the shared ``settings`` of every cell key leave out."""


# The common judge flags were in every cell key, at these defaults, before this benchmark read them. They matter
# only for --sample-judge llm, which keys its cells by sample_judge(); the shared settings keep the defaults.
JUDGE_DEFAULTS = {"q_pm_judge": "gold_rm", "judge_model": None, "judge_endpoint": None,
                  "judge_api_key_env": "OPENAI_API_KEY", "judge_cache": None}


def settings_of(args: argparse.Namespace, skip: tuple[str, ...]) -> dict:
    """The JSON-able settings a cell depends on (everything but ``skip``)."""
    return json.loads(json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in skip}, default=str))










def short_hash(key: dict) -> str:
    """A folder name for what a cell trains: two cells of other settings never share a model folder."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    out = Path(args.out)
    root = out / "blind_spot"
    root.mkdir(parents=True, exist_ok=True)
    # Every cell's key holds the settings it depends on, so a rerun with other settings adds cells
    # beside the old ones instead of mixing with them, and a killed run resumes where it stopped.
    cells = Cells(root / "cells.jsonl")
    settings = {**settings_of(args, CELL_SKIP), **JUDGE_DEFAULTS}
    # The gold RM and the PM side (judged by it) depend on the gold RM's steps only: flawed RMs trained
    # longer reuse them. Everything after them depends on both when the two differ.
    gold_steps = args.rm_steps if args.gold_rm_steps is None else args.gold_rm_steps
    gold_settings = {**settings, "rm_steps": gold_steps}
    if gold_steps != args.rm_steps:
        settings = {**settings, "gold_rm_steps": gold_steps}
    policy_name = args.sft if args.sft.startswith("bundled:") or Path(args.sft).exists() else DEFAULT_MODEL
    print(f"[blind spot] π_SFT = {policy_name}" + ("" if policy_name == args.sft else f" ({args.sft} not found)"))
    in_b = blind_spot_modules(args.share, args.partition_seed)
    train_pairs = data_rows(args.preference_data)[:args.pref_limit]
    val = data_rows(args.preference_val_data)[:args.pref_val]
    rl = data_rows(args.rl_data)[:args.rl_prompts]
    labels = [module_of(r["source"]) in in_b for r in rl]
    print(f"[blind spot] B: {len(in_b)} modules; D_rl {len(rl)} prompts, {sum(labels)} in B")
    backbone = rm_backbone(args, root)

    def rm_cell(name: str, rho: float, seed: int, steps: int, cell_settings: dict) -> dict:
        key = {"experiment": "blind_spot", "settings": cell_settings, "cell": "rm", "rho": rho, "seed": seed}

        def train() -> dict:
            pairs, flipped = flip_pairs(train_pairs, in_b, rho, args.partition_seed)
            folder = f"{name}-{short_hash(key)}"
            path = files.write_text_atomic(root / "data" / f"{folder}.jsonl",
                                           "".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs))
            export = root / "rms" / folder
            seconds = train_rm(args, backbone, path, seed, steps, export)
            plant = plant_check(args, load_reward_model(str(export)).eval(), load_tokenizer(str(export)), val, in_b)
            print(f"[blind spot] RM {name}: {flipped} pairs flipped, accuracy in B {plant['in_b']:.3f}, "
                  f"outside {plant['out_b']:.3f}, {seconds:.0f} s", flush=True)
            return {"name": name, "rho": rho, "seed": seed, "steps": steps, "flipped": flipped,
                    "path": str(export), "plant": plant, "train_seconds": seconds}

        return cells.run(key, train)

    gold = rm_cell(f"gold_seed{args.gold_seed}", 0.0, args.gold_seed, gold_steps, gold_settings)
    # The policy samples kept, and so the PM side and every detection, depend on their judge; the RMs, the
    # optional sources and the RL effect (pruned by contrast SEAM) do not. Keyed only when not the default,
    # so cells saved before the flag existed stay valid.
    judged = {} if args.sample_judge == "gold_rm" else {"sample_judge": sample_judge(args)}
    pm = cells.run({"experiment": "blind_spot", "settings": gold_settings, "cell": "pm_side", "policy": policy_name,
                    **judged}, lambda: pm_side(args, policy_name, gold["path"], rl))
    llm = None if not args.llm_model else cells.run(
        {"experiment": "blind_spot", "settings": gold_settings, "cell": "llm_side", "policy": policy_name,
         **llm_settings(args)}, lambda: llm_side(args, policy_name, gold["path"], rl, root))

    # A flawed RM is loaded once for the cells that score with it (those already saved load nothing).
    flawed_rm = functools.lru_cache(maxsize=1)(functools.partial(load_rm, args))

    def source_cells(rm: dict, rho: float, seed: int) -> dict[str, dict]:
        """The optional sources' detection under one flawed RM, each a cell of its own."""
        key, out = {"experiment": "blind_spot", "settings": settings, "rho": rho, "seed": seed}, {}
        if llm is not None:
            out["llm"] = cells.run({**key, "cell": "detect_llm", **llm_settings(args)},
                                   lambda: llm_detection(args, llm, *flawed_rm(rm["path"]), rl, labels, seed))
        if args.adv:
            out["adv"] = cells.run({**key, "cell": "detect_adv", **adv_settings(args)},
                                   lambda: adversarial_detection(args, pm, policy_name, *flawed_rm(rm["path"]), rl,
                                                                  labels, seed))
        return out

    rms, detections, contrast_seam, adv = [gold], [], {}, []
    for rho in args.rhos:
        for seed in args.seeds:
            rm = rm_cell(f"flawed_rho{rho}_seed{seed}", rho, seed, args.rm_steps, settings)
            rms.append(rm)

            def detect(rm=rm, rho=rho, seed=seed) -> dict:
                t0 = time.monotonic()
                sig = signals(args, pm, *flawed_rm(rm["path"]), rl, seed)
                return {"rho": rho, "seed": seed, "detection": detection(args, sig, labels, seed),
                        "seam_contrast": sig["seam_contrast"], "seconds": time.monotonic() - t0}

            cell = cells.run({"experiment": "blind_spot", "settings": settings, "cell": "detect", "rho": rho,
                              "seed": seed, **judged}, detect)
            extra = source_cells(rm, rho, seed)
            detections.append(with_sources(cell, extra))
            adv += [{"rho": rho, "seed": seed, **extra["adv"]}] if "adv" in extra else []
            contrast_seam[rho, seed] = (rm, cell["seam_contrast"])
    effect = None
    if args.rl_effect:
        if (args.rl_rho, args.seeds[0]) not in contrast_seam:
            raise SystemExit(f"--rl-rho {args.rl_rho} is not among --rhos {args.rhos}")
        flawed, seam = contrast_seam[args.rl_rho, args.seeds[0]]
        effect = rl_effect(args, cells, settings, policy_name, flawed, gold, rl, seam, in_b, root)
    result = {"settings": settings_of(args, ("config",)), "policy": policy_name, "rm_backbone": backbone,
              "b_modules": sorted(in_b), "rl_prompts": len(rl), "rl_in_b": sum(labels), "rms": rms,
              "sample_judge": sample_judge(args),
              "cells": detections, "pm_side": {"stats": pm["stats"], "seconds": pm["seconds"]},
              "sources": sources_summary(args, llm, adv), "mean_token_loglik": mean_token_loglik(pm, llm, adv),
              "wall_seconds_this_run": time.monotonic() - started, "rl_effect": effect}
    files.write_json(out / "blind_spot.json", result, default=str, allow_nan=True)
    print(report(out, result))
    plot(out / "blind_spot.png", result)
    return result


if __name__ == "__main__":
    main()
