"""Does SEAM find a reward model's blind spot? A controlled benchmark with a known answer.

    python scripts/exp_blind_spot.py                  # demo config: 3 ρ × 2 seeds, 160 D_rl prompts
    python scripts/exp_blind_spot.py --quick          # a few prompts and RM steps: mechanics only
    python scripts/exp_blind_spot.py --rhos 1 --seeds 0   # one cell

Setting. Part B is a seeded-hash 20% of the demo's standard-library modules. A *flawed* RM is trained
on demo://preference_train with chosen and rejected swapped for a share ρ of B's pairs; a *gold* RM on
the unswapped pairs with another seed. The plant check is each RM's preference accuracy on
demo://preference_val inside and outside B.

Detection. D_rl (the first --rl-prompts demo://rl_train prompts) is scored under π_SFT and each flawed
RM; every signal is a score per prompt, and AUROC and precision at the top 20% for "prompt in B" are
reported with 95% bootstrap intervals over prompts: SEAM with the contrast source and with the policy's
own samples (PolicySampleSource, judged by the gold RM: an *oracle* judge, labelled so), the baselines
(random; minus the flawed RM's reward of the golden response; the spread of the flawed RM's rewards over
the k policy samples, what OpenRLHF's dynamic filtering and verl's filter_groups look at; the prompt's
perplexity and the golden response's perplexity under π_SFT) and SEAM's parts as ablations.

Cost. The RM backbone is configurable (--rm-backbone); the demo default is SmolLM2-135M cut to its
first 8 of 30 blocks (LoRA on its top 4 + the scalar head, lr 1e-3, 80 steps of 8 pairs), fp32 (this CPU has no native bf16). The PM
side (candidates, samples, PM log-likelihoods, perplexities) is computed once and shared by all RMs.
Every finished cell is appended to <out>/blind_spot/cells.jsonl (rewritten atomically), so a killed run
resumes where it stopped, and a rerun with more --rhos/--seeds adds cells (other settings: another --out). Writes <out>/blind_spot.json, blind_spot.md and blind_spot.png.
"""

from __future__ import annotations

import argparse
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
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from experiments.blind_spot import (auroc, blind_spot_modules, bootstrap, flip_pairs, module_of,  # noqa: E402
                                    precision_at, seam_variants, stable_unit)
from seam_lightning import DataSource, LoRASettings, RewardModule, RLHFDataModule, SamplingSettings  # noqa: E402
from seam_lightning import files  # noqa: E402
from seam_lightning.data.collate import IGNORE_INDEX  # noqa: E402
from seam_lightning.data.demo import resolve_demo_uri  # noqa: E402
from seam_lightning.data.formatting import PromptFormatter  # noqa: E402
from seam_lightning.eval.quality import preference_accuracy, reward_scores  # noqa: E402
from seam_lightning.models.batching import pad_id_of, run_sequences  # noqa: E402
from seam_lightning.models.forward import response_logprob_sums  # noqa: E402
from seam_lightning.models.loading import DEFAULT_MODEL, load_policy, load_reward_model, load_tokenizer, resolve_model_path  # noqa: E402
from seam_lightning.seam.perplexity import golden_perplexities, perplexity  # noqa: E402
from seam_lightning.seam.scorer import SeamExample, SeamScorer  # noqa: E402
from seam_lightning.seam.sources import ContrastSource, PolicySampleSource, RewardJudge  # noqa: E402

TOKEN_BUDGET = 4096
SIGNALS = {  # name -> (label in the table, kind)
    "seam_contrast": ("SEAM, contrast source", "SEAM"),
    "seam_policy": ("SEAM, policy samples (oracle judge: gold RM)", "SEAM"),
    "random": ("random", "baseline"),
    "neg_golden_reward": ("− flawed RM reward of golden response", "baseline"),
    "reward_spread": ("std of flawed RM reward over k policy samples", "baseline"),
    "prompt_ppl": ("prompt perplexity under π_SFT", "baseline"),
    "golden_ppl": ("golden-response perplexity under π_SFT (paper §7)", "baseline"),
    "misjudgement_rate": ("ablation: misjudgement rate alone (contrast)", "ablation"),
    "weighted_count": ("ablation: likelihood weighting alone (contrast)", "ablation"),
    "excess_unweighted": ("ablation: misjudgement size, no likelihood (contrast)", "ablation"),
    "no_length_norm": ("ablation: SEAM without length normalisation (contrast)", "ablation"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--out", default="results", help="output folder (default results/)")
    a("--quick", action="store_true", help="a few prompts and RM steps (mechanics only)")
    a("--sft", default="runs/sft/export", help="π_SFT; the bundled model when this folder is missing")
    a("--base", default=DEFAULT_MODEL, help="the model the RM backbone is cut from")
    a("--rm-backbone", default="first:8", help="'first:N' (the first N blocks of --base) or a model name/folder")
    a("--rm-steps", type=int, default=None, help="RM training steps (default 80, quick 2)")
    a("--rm-lr", type=float, default=1e-3, help="RM learning rate (reward.yaml: 5e-4)")
    a("--lora-layers", type=int, default=4, help="LoRA on the top N blocks of the RM backbone")
    a("--batch-size", type=int, default=8, help="preference pairs per RM step")
    a("--max-instruction-tokens", type=int, default=48)
    a("--max-response-tokens", type=int, default=64)
    a("--share", type=float, default=0.2, help="share of the demo modules in part B")
    a("--partition-seed", type=int, default=0, help="seed of the hash choosing B (and the flipped pairs)")
    a("--rhos", type=float, nargs="+", default=None, help="flip shares ρ (default 1 0.5 0.25)")
    a("--seeds", type=int, nargs="+", default=None, help="flawed-RM seeds (default 0 1, quick 0)")
    a("--gold-seed", type=int, default=1000, help="the gold RM's seed")
    a("--rl-prompts", type=int, default=None, help="D_rl: first N demo://rl_train prompts (default 160, quick 8)")
    a("--pref-val", type=int, default=None, help="demo://preference_val pairs for the plant check (default 200)")
    a("--pref-limit", type=int, default=None, help="use only the first N demo://preference_train pairs")
    a("--candidates", type=int, default=None, help="contrast candidates per prompt (default 5, quick 2)")
    a("--corpus-limit", type=int, default=None, help="first N demo://sft_train rows as contrast corpus")
    a("--samples", type=int, default=None, help="k policy samples per prompt (default 4, quick 2)")
    a("--new-tokens", type=int, default=None, help="max new tokens per policy sample (default 32, quick 4)")
    a("--resamples", type=int, default=1000, help="bootstrap resamples")
    a("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    full = dict(rm_steps=80, rhos=[1.0, 0.5, 0.25], seeds=[0, 1], rl_prompts=160, pref_val=200, candidates=5,
                samples=4, new_tokens=32)
    quick = dict(rm_steps=2, rhos=[1.0, 0.5], seeds=[0], rl_prompts=8, pref_val=8, candidates=2, samples=2,
                 new_tokens=4)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def jsonl(path: str) -> list[dict]:
    with open(path if "://" not in path else resolve_demo_uri(path), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Cells:
    """Finished cells by key, kept in one JSONL file that is rewritten atomically after each new cell."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = {r["key"]: r for r in jsonl(str(path))} if path.exists() else {}

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, key: str, row: dict) -> dict:
        self.rows[key] = {"key": key, **row}
        files.write_text_atomic(self.path, "".join(json.dumps(r, default=str) + "\n" for r in self.rows.values()))
        return self.rows[key]


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


def train_rm(args: argparse.Namespace, backbone: str, pairs_path: Path, seed: int, export_dir: Path) -> float:
    """A pairwise RM (RewardModule, LoRA on the top blocks + head) on ``pairs_path``, fp32; returns seconds."""
    start = time.monotonic()
    seed_everything(seed, verbose=False)
    data = RLHFDataModule(sft=None, sft_val=None, rl=None, rl_val=None, preference_val=None,
                          preference=DataSource(str(pairs_path)), batch_size=args.batch_size,
                          max_instruction_tokens=args.max_instruction_tokens,
                          max_response_tokens=args.max_response_tokens, seed=seed)
    from transformers import AutoConfig
    layers = min(args.lora_layers, AutoConfig.from_pretrained(resolve_model_path(backbone)).num_hidden_layers)
    module = RewardModule(model=backbone, lora=LoRASettings(r=16, alpha=32, dropout=0.05, target_modules="all-linear",
                                                            layers=list(range(-layers, 0))),
                          learning_rate=args.rm_lr, warmup_steps=min(10, args.rm_steps), export_dir=str(export_dir))
    Trainer(accelerator="cpu", devices=1, precision="32-true", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
            default_root_dir=str(export_dir.parent), max_steps=args.rm_steps).fit(module, datamodule=data)
    return time.monotonic() - start


def limits(args: argparse.Namespace) -> dict:
    return dict(max_instruction_tokens=args.max_instruction_tokens, max_response_tokens=args.max_response_tokens,
                progress=False)


def plant_check(args, model, tokenizer, val: list[dict], in_b: frozenset[str]) -> dict:
    """Preference accuracy on held-out pairs inside and outside B."""
    out = {}
    for name, rows in (("in_b", [r for r in val if module_of(r["source"]) in in_b]),
                       ("out_b", [r for r in val if module_of(r["source"]) not in in_b])):
        cols = [[r[f] for r in rows] for f in ("instruction", "chosen", "rejected")]
        with torch.inference_mode():
            out[name] = preference_accuracy(model, tokenizer, *cols, batch_size=16, **limits(args)) if rows else math.nan
        out[f"{name}_pairs"] = len(rows)
    return out


def prompt_perplexities(policy, tokenizer, instructions: list[str]) -> list[float]:
    """Perplexity of each instruction's own tokens under the policy, read as text after a document boundary (EOS)."""
    eos = tokenizer.eos_token_id
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in instructions]
    sequences = [[eos] + x for x in ids]
    labels = [[IGNORE_INDEX] + x for x in ids]
    with torch.inference_mode():
        sums = run_sequences(policy, response_logprob_sums, sequences, pad_id_of(tokenizer), "right", TOKEN_BUDGET, labels)
    return [perplexity(s, len(x)) for s, x in zip(sums, ids)]


def pm_side(args, policy_name: str, gold_path: str, rl: list[dict], cells: Cells) -> dict:
    """Once for all RMs: contrast candidates, k policy samples (judged by the gold RM), PM log-likelihoods, perplexities."""
    done = cells.get("pm_side")
    if done:
        return done
    start = time.monotonic()
    instructions, golden = [r["instruction"] for r in rl], [r["response"] for r in rl]
    contrast = ContrastSource(corpus=DataSource("demo://sft_train", limit=args.corpus_limit), band=(0.8, 0.9))
    contrast_candidates = contrast.candidates(instructions, golden, args.candidates)
    t_contrast = time.monotonic() - start
    policy, tokenizer = load_policy(policy_name).eval(), load_tokenizer(policy_name)
    gold, gold_tok = load_reward_model(gold_path).eval(), load_tokenizer(gold_path)
    judge = RewardJudge(gold, gold_tok, oracle=True, name="gold RM", max_instruction_tokens=args.max_instruction_tokens,
                        max_response_tokens=args.max_response_tokens)
    source = PolicySampleSource(policy, tokenizer, judge, samples_per_prompt=args.samples, seed=0,
                                sampling=SamplingSettings(max_new_tokens=args.new_tokens),
                                max_instruction_tokens=args.max_instruction_tokens)
    t0 = time.monotonic()
    kept = source.candidates(instructions, golden, args.samples)
    t_samples = time.monotonic() - t0
    samples = [s.samples for s in source.last_samples]
    # PM log-likelihoods of every contrast candidate and every sample (the kept ones are among them).
    scorer = SeamScorer(policy, gold, tokenizer, reward_tokenizer=gold_tok, token_budget=TOKEN_BUDGET, progress=False,
                        max_instruction_tokens=args.max_instruction_tokens, max_response_tokens=args.max_response_tokens)
    examples = [SeamExample(i, q, r, c + s) for i, (q, r, c, s) in enumerate(zip(instructions, golden,
                                                                                  contrast_candidates, samples))]
    t0 = time.monotonic()
    results = list(scorer.score(examples))
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
    return cells.put("pm_side", {"policy": policy_name, "prompts": prompts, "stats": stats, "seconds": {
        "contrast": t_contrast, "samples_and_judge": t_samples, "pm_loglik": t_loglik,
        "total": time.monotonic() - start}})


def signals(args, pm: dict, rm_path: str, rl: list[dict], cell_seed: int) -> dict[str, list[float]]:
    """Every signal per prompt under one flawed RM (larger = more suspicious)."""
    rm, tok = load_reward_model(rm_path).eval(), load_tokenizer(rm_path)
    prompts = pm["prompts"]
    questions, answers, owner = [], [], []
    for i, (r, p) in enumerate(zip(rl, prompts)):
        for text in [r["response"], *p["contrast"], *p["samples"]]:
            questions.append(r["instruction"]), answers.append(text), owner.append(i)
    with torch.inference_mode():
        rewards = reward_scores(rm, tok, questions, answers, batch_size=16, **limits(args)).tolist()
    per: list[list[float]] = [[] for _ in rl]
    for i, value in zip(owner, rewards):
        per[i].append(value)
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


def detection(args, sig: dict[str, list[float]], labels: list[bool], seed: int) -> dict:
    return {name: {"auroc": bootstrap(auroc, values, labels, args.resamples, seed),
                   "precision_at_20": bootstrap(lambda s, y: precision_at(s, y, 0.2), values, labels, args.resamples, seed)}
            for name, values in sig.items()}


def mean_token_loglik(pm: dict) -> dict:
    """Table 1's number per source: the mean over candidates of (log P_PM(r*|I) / len(r*))."""
    contrast, kept, all_samples = [], [], []
    for p in pm["prompts"]:
        n_c = p["n_contrast"]
        per = [lp / n for lp, n in zip(p["logprob_sums"], p["lengths"])]
        contrast += per[:n_c]
        all_samples += per[n_c:]
        kept += [v for v, k in zip(per[n_c:], p["sample_kept"]) if k]
    mean = lambda xs: (float(np.mean(xs)) if xs else math.nan, len(xs))  # noqa: E731
    return {"contrast": mean(contrast), "policy_sample_kept": mean(kept), "policy_sample_all": mean(all_samples)}


def fmt(ci: dict) -> str:
    return f"{ci['value']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"


def report(args, out: Path, result: dict) -> str:
    """The markdown tables: plant check, detection per ρ (mean over seeds, and each seed's interval), Table-1 numbers."""
    lines = ["### Plant check: preference accuracy on demo://preference_val", "",
             "| RM | ρ | seed | steps | in B | outside B | train s |", "|---|---|---|---|---|---|---|"]
    for rm in result["rms"]:
        lines.append(f"| {rm['name']} | {rm['rho']} | {rm['seed']} | {rm['steps']} | {rm['plant']['in_b']:.3f} "
                     f"(n={rm['plant']['in_b_pairs']}) | {rm['plant']['out_b']:.3f} (n={rm['plant']['out_b_pairs']}) "
                     f"| {rm['train_seconds']:.0f} |")
    for metric, title in (("auroc", "AUROC"), ("precision_at_20", "precision at the top 20%")):
        lines += ["", f"### Detection of 'prompt in B': {title} [95% bootstrap interval over prompts]", "",
                  "| signal | " + " | ".join(f"ρ={c['rho']} s{c['seed']}" for c in result["cells"]) + " |",
                  "|---" * (len(result["cells"]) + 1) + "|"]
        for name, (label, _) in SIGNALS.items():
            lines.append(f"| {label} | " + " | ".join(fmt(c["detection"][name][metric]) for c in result["cells"]) + " |")
    ll = result["mean_token_loglik"]
    lines += ["", "### Candidates' mean token log-likelihood under π_SFT (paper Table 1: llm −1.81, contrast −3.07, "
              "adversarial −9.2 to −9.9)", "", "| source | mean token log-lik | candidates |", "|---|---|---|"]
    for name, (value, n) in ll.items():
        lines.append(f"| {name} | {value:.2f} | {n} |")
    text = "\n".join(lines) + "\n"
    files.write_text_atomic(out / "blind_spot.md", text)
    return text


def plot(path: Path, result: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rhos = sorted({c["rho"] for c in result["cells"]}, reverse=True)
    names = list(SIGNALS)
    fig, axes = plt.subplots(1, len(rhos), figsize=(3.5 + 4 * len(rhos), 5), sharey=True, squeeze=False)
    for ax, rho in zip(axes[0], rhos):
        cells = [c for c in result["cells"] if c["rho"] == rho]
        for s, cell in enumerate(cells):
            vals = [cell["detection"][n]["auroc"] for n in names]
            y = np.arange(len(names)) + 0.35 * s
            ax.errorbar([v["value"] for v in vals], y, xerr=[[v["value"] - v["low"] for v in vals],
                                                           [v["high"] - v["value"] for v in vals]],
                        fmt="o", capsize=3, label=f"seed {cell['seed']}")
        ax.axvline(0.5, color="gray", linestyle="--")
        ax.set_title(f"ρ = {rho}", fontsize=10)
        ax.set_xlabel("AUROC, prompt in B (95% bootstrap)", fontsize=9)
        ax.set_xlim(0, 1)
    axes[0][0].set_yticks(np.arange(len(names)) + 0.17)
    axes[0][0].set_yticklabels([SIGNALS[n][0] for n in names], fontsize=7)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    out = Path(args.out)
    root = out / "blind_spot"
    root.mkdir(parents=True, exist_ok=True)
    cells = Cells(root / "cells.jsonl")
    # A cells file belongs to one configuration: resuming with other settings would mix results.
    fingerprint = json.loads(json.dumps({k: v for k, v in sorted(vars(args).items())
                                         if k not in ("out", "threads", "rhos", "seeds", "quick")}))
    if cells.get("settings") and cells.get("settings")["settings"] != fingerprint:
        raise SystemExit(f"{root / 'cells.jsonl'} holds results of other settings: pass another --out")
    if not cells.get("settings"):
        cells.put("settings", {"settings": fingerprint})
    policy_name = args.sft if Path(args.sft).exists() else DEFAULT_MODEL
    print(f"[blind spot] π_SFT = {policy_name}" + ("" if policy_name == args.sft else f" ({args.sft} not found)"))
    in_b = blind_spot_modules(args.share, args.partition_seed)
    train_pairs = jsonl("demo://preference_train")[:args.pref_limit]
    val = jsonl("demo://preference_val")[:args.pref_val]
    rl = jsonl("demo://rl_train")[:args.rl_prompts]
    labels = [module_of(r["source"]) in in_b for r in rl]
    print(f"[blind spot] B: {len(in_b)} modules; D_rl {len(rl)} prompts, {sum(labels)} in B")
    backbone = rm_backbone(args, root)

    def rm_cell(name: str, rho: float, seed: int) -> dict:
        key = f"rm:{name}"
        if cells.get(key):
            return cells.get(key)
        pairs, flipped = flip_pairs(train_pairs, in_b, rho, args.partition_seed)
        path = files.write_text_atomic(root / "data" / f"{name}.jsonl",
                                       "".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs))
        export = root / "rms" / name
        seconds = train_rm(args, backbone, path, seed, export)
        plant = plant_check(args, load_reward_model(str(export)).eval(), load_tokenizer(str(export)), val, in_b)
        print(f"[blind spot] RM {name}: {flipped} pairs flipped, accuracy in B {plant['in_b']:.3f}, "
              f"outside {plant['out_b']:.3f}, {seconds:.0f} s")
        return cells.put(key, {"name": name, "rho": rho, "seed": seed, "steps": args.rm_steps, "flipped": flipped,
                               "path": str(export), "plant": plant, "train_seconds": seconds})

    gold = rm_cell(f"gold_seed{args.gold_seed}", 0.0, args.gold_seed)
    pm = pm_side(args, policy_name, gold["path"], rl, cells)
    rms, detections = [gold], []
    for rho in args.rhos:
        for seed in args.seeds:
            rm = rm_cell(f"flawed_rho{rho}_seed{seed}", rho, seed)
            rms.append(rm)
            key = f"detect:{rho}:{seed}"
            if not cells.get(key):
                t0 = time.monotonic()
                det = detection(args, signals(args, pm, rm["path"], rl, seed), labels, seed)
                cells.put(key, {"rho": rho, "seed": seed, "detection": det, "seconds": time.monotonic() - t0})
            detections.append(cells.get(key))
    result = {"settings": {k: v for k, v in vars(args).items()}, "policy": policy_name, "rm_backbone": backbone,
              "b_modules": sorted(in_b), "rl_prompts": len(rl), "rl_in_b": sum(labels), "rms": rms,
              "cells": detections, "pm_side": {"stats": pm["stats"], "seconds": pm["seconds"]},
              "mean_token_loglik": mean_token_loglik(pm), "wall_seconds_this_run": time.monotonic() - started,
              "rl_effect": "not run (see docs/results.md)"}
    files.write_json(out / "blind_spot.json", result, default=str, allow_nan=True)
    print(report(args, out, result))
    plot(out / "blind_spot.png", result)
    return result


if __name__ == "__main__":
    main()
