"""A scoring's report for people: what SEAM found, as markdown with figures.

``report.md`` holds the settings, the summary numbers (the SEAM distribution, the
reward model's misjudgement rate, the share of prompts without candidates), two
figures (``seam_distribution.png``: the SEAM histogram; ``candidates.png``: every
candidate's reward above the golden response's against its mean token log-likelihood
under the policy, i.e. the two factors of Eq. 2) and the worst prompts with their
worst candidates and the numbers that made them worst.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from seam_lightning.data.records import Record
from seam_lightning.files import atomic_path, write_text_atomic
from seam_lightning.seam.scorer import SeamResult

WORST_PROMPTS = 20
CANDIDATES_SHOWN = 3
TEXT_SHOWN = 400  # characters of a prompt or response shown in the report


def candidate_terms(result: SeamResult) -> list[float]:
    """Each candidate's term of Eq. 2: exp(mean token log-prob) · max(R(r*) − R(r), 0)."""
    return [math.exp(lp / n) * max(reward - result.golden_reward, 0.0) if n else 0.0
            for lp, n, reward in zip(result.candidate_logprob_sums, result.candidate_lengths,
                                     result.candidate_rewards)]


def summary_numbers(results: list[SeamResult], selected: set[int]) -> dict[str, float]:
    """The scoring in a few numbers: the report's, the command's summary line and SeamCallback's seam/* metrics.

    Quantiles interpolate linearly between order statistics (``torch.quantile``'s default).
    The misjudgement rate and the candidates' mean token log-likelihood are over all
    candidates of all prompts; both are NaN when no prompt has a candidate.
    """
    seam = sorted(r.seam for r in results)
    candidates = [(reward, r.golden_reward, lp / n if n else math.nan)
                  for r in results
                  for reward, lp, n in zip(r.candidate_rewards, r.candidate_logprob_sums, r.candidate_lengths)]
    return {
        "prompts": len(results),
        "selected": len(selected),
        "seam_mean": math.fsum(seam) / len(seam) if seam else math.nan,
        "seam_median": _quantile(seam, 0.5),
        "seam_q90": _quantile(seam, 0.9),
        "seam_max": seam[-1] if seam else math.nan,
        "candidates": len(candidates),
        "misjudgement_rate": (sum(c > g for c, g, _ in candidates) / len(candidates)) if candidates else math.nan,
        "candidate_token_loglik": (math.fsum(t for _, _, t in candidates) / len(candidates)) if candidates
        else math.nan,
        "without_candidates": sum(not r.candidate_rewards for r in results),
        "without_candidates_share": (sum(not r.candidate_rewards for r in results) / len(results)
                                     if results else math.nan),
    }


def selection_metrics(results: list[SeamResult], selected: set[int], previous: set[int]) -> dict[str, float]:
    """What SeamCallback logs of one selection: its size, its overlap with the previous one and
    :func:`summary_numbers` under the ``seam/`` names."""
    metrics = {
        "seam/selected": float(len(selected)),
        "seam/overlap_with_previous": len(selected & previous) / len(selected) if previous and selected else float("nan"),
    }
    if not results:
        return metrics
    numbers = summary_numbers(results, selected)
    metrics.update({
        "seam/mean": numbers["seam_mean"],
        "seam/q50": numbers["seam_median"],
        "seam/q90": numbers["seam_q90"],
        "seam/max": numbers["seam_max"],
        "seam/misjudgement_rate": numbers["misjudgement_rate"],
        "seam/candidate_token_loglik": numbers["candidate_token_loglik"],
        "seam/prompts_without_candidates": float(numbers["without_candidates"]),
        "seam/selected_share": len(selected) / len(results),
    })
    return metrics


def quantile_summary(name: str, values) -> dict[str, float]:
    """Mean, median, 90% quantile and maximum of ``values`` as ``<name>/mean`` etc. (nothing for no values)."""
    x = torch.tensor(list(values), dtype=torch.float64)
    if not len(x):
        return {}
    return {f"{name}/mean": x.mean().item(), f"{name}/q50": x.quantile(0.5).item(),
            f"{name}/q90": x.quantile(0.9).item(), f"{name}/max": x.max().item()}


def write_report(directory: str | Path, results: list[SeamResult], records: list[Record], selected: set[int],
                 settings: Mapping[str, object], action: str = "pruned") -> Path:
    """Write ``report.md`` and its figures into ``directory``; returns the report's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    numbers = summary_numbers(results, selected)
    _plot_distribution(directory / "seam_distribution.png", results, selected)
    _plot_candidates(directory / "candidates.png", results)
    texts = {r.id: r.text for r in records}
    lines = ["# SEAM scoring report", "", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in settings.items()]
    lines += [
        "", "## Summary", "",
        f"- {numbers['prompts']} prompts scored, {numbers['selected']} {action} "
        f"({numbers['selected'] / max(numbers['prompts'], 1):.1%}).",
        f"- SEAM: mean {numbers['seam_mean']:.4g}, median {numbers['seam_median']:.4g}, "
        f"90th percentile {numbers['seam_q90']:.4g}, max {numbers['seam_max']:.4g} (larger: the reward "
        "model rewards answers the policy is likely to write above the golden one).",
        f"- Misjudgement rate: {numbers['misjudgement_rate']:.1%} of {numbers['candidates']} candidates "
        "are rewarded above their prompt's golden response.",
        f"- Prompts without candidates (SEAM 0 by definition): {numbers['without_candidates_share']:.1%}.",
        "", "![SEAM distribution](seam_distribution.png)", "",
        "![Candidates: reward above the golden response vs likelihood under the policy](candidates.png)", "",
        f"## The {min(WORST_PROMPTS, len(results))} prompts with the largest SEAM", "",
    ]
    worst = sorted(results, key=lambda r: (-r.seam, r.id))[:WORST_PROMPTS]
    for rank, result in enumerate(worst, start=1):
        lines += _prompt_section(rank, result, texts[result.id], result.id in selected, action)
    path = directory / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _prompt_section(rank: int, result: SeamResult, text: Mapping[str, str], selected: bool, action: str) -> list[str]:
    lines = [f"### {rank}. id {result.id}: SEAM {result.seam:.4g}{f' ({action})' if selected else ''}", "",
             "Prompt:", "", _quoted(text["instruction"]), "",
             f"Golden response (reward {result.golden_reward:.4g}):", "", _quoted(text["response"]), ""]
    terms = candidate_terms(result)
    order = [c for c in sorted(range(len(terms)), key=lambda c: -terms[c]) if terms[c] > 0][:CANDIDATES_SHOWN]
    if not order:
        return lines + [f"No candidate of {len(terms)} is rewarded above the golden response.", ""]
    for c in order:
        mean_loglik = result.candidate_logprob_sums[c] / max(result.candidate_lengths[c], 1)
        shown = result.candidates[c] if c < len(result.candidates) else "(text not recorded)"
        lines += [f"Candidate {c}: reward {result.candidate_rewards[c]:.4g} "
                  f"({result.candidate_rewards[c] - result.golden_reward:+.4g} vs golden), mean token "
                  f"log-likelihood {mean_loglik:.3f} over {result.candidate_lengths[c]} tokens, "
                  f"term {terms[c]:.4g}", "", _quoted(shown), ""]
    return lines


def _quoted(text: str) -> str:
    """``text`` as a markdown block quote, cut to TEXT_SHOWN characters."""
    cut = text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN] + " …"
    return "\n".join(f"> {line}" if line else ">" for line in cut.splitlines() or [""])


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _plot_distribution(path: Path, results: list[SeamResult], selected: set[int]) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    kept = [r.seam for r in results if r.id not in selected]
    chosen = [r.seam for r in results if r.id in selected]
    top = max((r.seam for r in results), default=0.0) or 1.0
    bins = [top * i / 40 for i in range(41)]
    ax.hist([kept, chosen], bins=bins, stacked=True, label=["kept", "selected"], color=["#8fa9c8", "#c8553d"])
    ax.set_yscale("log")
    ax.set_xlabel("SEAM (Eq. 2)")
    ax.set_ylabel("prompts")
    zeros = sum(r.seam == 0 for r in results)
    ax.set_title(f"{len(results)} prompts; {zeros} with SEAM 0", fontsize=10)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _plot_candidates(path: Path, results: list[SeamResult]) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = [lp / max(n, 1) for r in results for lp, n in zip(r.candidate_logprob_sums, r.candidate_lengths)]
    ys = [reward - r.golden_reward for r in results for reward in r.candidate_rewards]
    ax.scatter(xs, ys, s=6, alpha=0.5, color="#3d6c8f")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("candidate's mean token log-likelihood under the policy")
    ax.set_ylabel("R(r*) − R(r)")
    ax.set_title("above the line: the reward model prefers the candidate to the golden response", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
