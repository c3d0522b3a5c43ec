"""The drivers' outputs: JSON written atomically, markdown tables, confidence-interval text and matplotlib figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seam_lightning import files


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
