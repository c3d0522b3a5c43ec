"""The blind-spot benchmark's results for people: its signal names, the RL-effect summary, tables and figure.

Pure functions of the result dicts `scripts/exp_blind_spot.py` builds (no model, no data).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from seam_lightning import files
from seam_lightning.eval.stats import mean_ci

RL_CONDITIONS = ("full", "seam", "random")
SIGNALS = {  # name -> (label in the table, kind)
    "seam_contrast": ("SEAM, contrast source", "SEAM"),
    "seam_policy": ("SEAM, policy samples ({judge})", "SEAM"),
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
"""The signals every detect cell holds."""
SOURCE_SIGNALS = {  # name -> (its entry in the result's "sources", label template filled from that entry)
    "seam_llm": ("llm", "SEAM, LLM source ({writer})"),
    "seam_adv": ("adv", "SEAM, adversarial source ({attack}, budget {query_budget})"),
}
"""The optional sources' signals (--llm-model, --adv), reported only where the run computed them."""


def signal_labels(result: dict) -> dict[str, str]:
    """Each reported signal's label, in table order: the SEAM rows (the optional sources' after the others where
    computed), then the baselines and ablations."""
    sources = result.get("sources") or {}
    optional = {name: template.format(**sources[entry]) for name, (entry, template) in SOURCE_SIGNALS.items()
                if entry in sources}
    judge = (result.get("sample_judge") or {}).get("label", "oracle judge: gold RM")  # results saved before the flag
    seam = {name: label.format(judge=judge) for name, (label, kind) in SIGNALS.items() if kind == "SEAM"}
    rest = {name: label for name, (label, kind) in SIGNALS.items() if kind != "SEAM"}
    return {**seam, **optional, **rest}


def loglik_label(name: str, result: dict) -> str:
    """A Table-1 row's name: the source, with the LLM writer or the attack where it is one of those."""
    sources = result.get("sources") or {}
    if name == "llm":
        return f"llm ({sources['llm']['writer']})"
    if name == "adversarial":
        adv = sources["adv"]
        n = len(adv["per_rm"])
        return f"adversarial ({adv['attack']}, budget {adv['query_budget']}; {n} flawed RM{'s' if n != 1 else ''})"
    return name


def ci_or_none(values: list[float]) -> dict | None:
    """Mean with its 95% t interval, or None where a region has no held-out prompt."""
    return mean_ci(values).to_dict() if values else None


def summarize_rl_effect(runs: list[dict], reference: list[float], val_in_b: list[bool], flawed: str) -> dict:
    """Per condition and region: the gold reward (95% CI over prompts × seeds) and the paired change vs full."""
    rows = {}
    full = {r["seed"]: r["gold_per_prompt"] for r in runs if r["condition"] == "full"}
    for condition in RL_CONDITIONS:
        mine = [r for r in runs if r["condition"] == condition]
        row = {"seeds": [r["seed"] for r in mine], "trained_on": mine[0]["trained_on"] if mine else None,
               "seconds": sum(r["seconds"] for r in mine)}
        for region, wanted in (("in_b", True), ("out_b", False)):
            values = [g for r in mine for g, b in zip(r["gold_per_prompt"], val_in_b) if b == wanted]
            deltas = [g - f for r in mine for g, f, b in zip(r["gold_per_prompt"], full[r["seed"]], val_in_b)
                      if b == wanted]
            row[region], row[f"{region}_delta_vs_full"] = ci_or_none(values), ci_or_none(deltas)
        rows[condition] = row
    pi_sft = {region: ci_or_none([g for g, b in zip(reference, val_in_b) if b == wanted])
              for region, wanted in (("in_b", True), ("out_b", False))}
    return {"flawed_rm": flawed, "held_out_prompts": len(val_in_b), "held_out_in_b": sum(val_in_b),
            "pi_sft": pi_sft, "conditions": rows, "runs": runs}


def token_logliks(prompts: list[dict]) -> list[float]:
    """log P_PM(r*|I) / len(r*) of every candidate of ``prompts`` (each with logprob_sums and lengths)."""
    return [lp / n for p in prompts for lp, n in zip(p["logprob_sums"], p["lengths"])]


def mean_token_loglik(pm: dict, llm: dict | None = None, adversarial: list[dict] = ()) -> dict:
    """Table 1's number per source: the mean over candidates of (log P_PM(r*|I) / len(r*)), as (mean, candidates).

    ``llm``: the LLM candidates' cell; ``adversarial``: the detect_adv cells (pooled over the flawed RMs attacked).
    """
    contrast, kept, all_samples = [], [], []
    for p in pm["prompts"]:
        n_c = p["n_contrast"]
        per = [lp / n for lp, n in zip(p["logprob_sums"], p["lengths"])]
        contrast += per[:n_c]
        all_samples += per[n_c:]
        kept += [v for v, k in zip(per[n_c:], p["sample_kept"]) if k]
    mean = lambda xs: (float(np.mean(xs)) if xs else math.nan, len(xs))  # noqa: E731
    out = {"contrast": mean(contrast), "policy_sample_kept": mean(kept), "policy_sample_all": mean(all_samples)}
    if llm is not None:
        out["llm"] = mean(token_logliks(llm["prompts"]))
    if adversarial:
        out["adversarial"] = mean([v for cell in adversarial for v in token_logliks(cell["prompts"])])
    return out


def fmt(ci: dict) -> str:
    return f"{ci['value']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"


def report(out: Path, result: dict) -> str:
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
        for name, label in signal_labels(result).items():
            lines.append(f"| {label} | " + " | ".join(fmt(c["detection"][name][metric]) for c in result["cells"]) + " |")
    ll = result["mean_token_loglik"]
    lines += ["", "### Candidates' mean token log-likelihood under π_SFT (paper Table 1: llm −1.81, contrast −3.07, "
              "adversarial −9.2 to −9.9)", "", "| source | mean token log-lik | candidates |", "|---|---|---|"]
    for name, (value, n) in ll.items():
        lines.append(f"| {loglik_label(name, result)} | {value:.2f} | {n} |")
    lines += source_notes(result.get("sources") or {})
    effect = result.get("rl_effect")
    if effect:
        ci = lambda c: f"{c['mean']:.3f} [{c['low']:.3f}, {c['high']:.3f}]" if c else "-"  # noqa: E731
        lines += ["", f"### RL effect: PPO with {effect['flawed_rm']} on full vs pruned D_rl, gold-RM reward of "
                  f"greedy responses to {effect['held_out_prompts']} held-out prompts ({effect['held_out_in_b']} in B) "
                  "[95% CI over prompts × seeds]", "",
                  "| condition | RL prompts | in B | Δ vs full, in B | outside B | Δ vs full, outside B | seeds |",
                  "|---|---|---|---|---|---|---|",
                  f"| π_SFT (no PPO) | - | {ci(effect['pi_sft']['in_b'])} | - | {ci(effect['pi_sft']['out_b'])} | - | - |"]
        for name, row in effect["conditions"].items():
            lines.append(f"| {name} | {row['trained_on']} | {ci(row['in_b'])} | {ci(row['in_b_delta_vs_full'])} | "
                         f"{ci(row['out_b'])} | {ci(row['out_b_delta_vs_full'])} | {len(row['seeds'])} |")
    text = "\n".join(lines) + "\n"
    files.write_text_atomic(out / "blind_spot.md", text)
    return text


def source_notes(sources: dict) -> list[str]:
    """A line per optional source on what it produced: prompts without candidates score SEAM 0."""
    lines = [""] if sources else []
    if "llm" in sources:
        s = sources["llm"]["stats"]
        lines.append(f"LLM source ({sources['llm']['writer']}): {s['candidates']} candidates for {s['prompts']} "
                     f"prompts, {s['empty']} prompts with none; {s['requests']} requests, {s['cache_hits']} from the "
                     f"cache, {s['refused']} refused; {sources['llm']['seconds']['total']:.0f} s.")
    for rm in sources.get("adv", {}).get("per_rm", []):
        a = rm["attack_stats"]
        lines.append(f"Adversarial source, ρ={rm['rho']} s{rm['seed']}: {rm['stats']['candidates']} candidates for "
                     f"{rm['stats']['prompts']} prompts ({rm['stats']['empty']} with none): {a['attacked']} seeds "
                     f"attacked, {a['succeeded']} succeeded, {a['already_misjudged']} already misjudged, "
                     f"{a['queries']} RM queries; {rm['seconds']['total']:.0f} s.")
    return lines


def plot(path: Path, result: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rhos = sorted({c["rho"] for c in result["cells"]}, reverse=True)
    labels = signal_labels(result)
    names = list(labels)
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
    axes[0][0].set_yticklabels([labels[n] for n in names], fontsize=7)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
