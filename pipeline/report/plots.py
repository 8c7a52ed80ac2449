"""The report's PNGs (matplotlib, Agg): accuracy vs FLOPs with seed bands and fitted curves,
accuracy vs samples seen, and accuracy vs slice fraction at each budget."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.report.findings import CHANCE_MARGIN
from pipeline.report.data import Experiment, Line, fmt_budget, metric_label
from pipeline.report.fit import Fit


def _figure(title: str, xlabel: str, ylabel: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))  # small accuracies: 0 decimals repeat labels
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _finish(fig, ax, path: Path, chance: float | None) -> Path:
    import matplotlib.pyplot as plt

    if chance:
        ys = [y for line in ax.lines for y in line.get_ydata()]
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label=f"chance ({chance:.1%})")
        if ys and max(ys) <= chance + CHANCE_MARGIN:
            # Autoscaling would blow chance-level noise up to a full-height "trend": show it at
            # its real size and say so.
            ax.set_ylim(0, max(2 * chance, max(ys) + CHANCE_MARGIN))
            ax.text(0.02, 0.95, "every arm within 1 pp of chance: the differences are noise",
                    transform=ax.transAxes, fontsize=8, color="dimgrey", va="top")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _colours(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _band(ax, line: Line, xs: list[float], colour, label: str) -> None:
    means = [p.mean for p in line.points]
    low = [min(p.values) for p in line.points]
    high = [max(p.values) for p in line.points]
    ax.plot(xs, means, marker="o", color=colour, linewidth=2, label=label)
    if any(h > lo for h, lo in zip(high, low)):
        ax.fill_between(xs, low, high, color=colour, alpha=0.18, linewidth=0)


def _short(value: float, units: tuple[tuple[str, float], ...]) -> str:
    for suffix, scale in units:
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _log_axis(ax, units: tuple[tuple[str, float], ...]) -> None:
    """Log x with short labels (250G, 1T; 2k, 10k) at 1, 2 and 5 x 10^k: matplotlib's default
    labels every minor tick in 3x10^11 notation when the axis spans under a decade, and they
    run into each other."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v, units)))
    ax.xaxis.set_minor_formatter(NullFormatter())


FLOP_UNITS = (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6))
SAMPLE_UNITS = (("M", 1e6), ("k", 1e3))


def plot_flops(exp: Experiment, fits: dict[str, Fit | None], folder: Path, chance: float | None) -> Path:
    """Accuracy vs measured training FLOPs (log x): one line per arm, seed spread as a band,
    its fitted saturating power law dashed."""
    fig, ax = _figure(f"{exp.name}: {metric_label(exp.metric)} vs training FLOPs (band: seed min-max)",
                      "training FLOPs (log)", metric_label(exp.metric))
    _log_axis(ax, FLOP_UNITS)
    for line, colour in zip(exp.lines, _colours(len(exp.lines))):
        xs = [p.x_flops for p in line.points]
        _band(ax, line, xs, colour, line.label)
        fit = fits.get(line.label)
        if fit is not None:
            grid = np.geomspace(min(xs) / 1.3, max(xs) * 1.3, 100)
            ax.plot(grid, fit(grid), linestyle="--", color=colour, linewidth=1, alpha=0.8)
    return _finish(fig, ax, folder / f"{exp.name}_flops.png", chance)


def plot_samples(exp: Experiment, folder: Path, chance: float | None) -> Path:
    """Accuracy vs samples seen (log x): where cheaper samples (FLIP, small models) go further."""
    fig, ax = _figure(f"{exp.name}: {metric_label(exp.metric)} vs samples seen (band: seed min-max)",
                      "samples seen (log)", metric_label(exp.metric))
    _log_axis(ax, SAMPLE_UNITS)
    for line, colour in zip(exp.lines, _colours(len(exp.lines))):
        _band(ax, line, [p.x_samples for p in line.points], colour, line.label)
    return _finish(fig, ax, folder / f"{exp.name}_samples.png", chance)


def plot_fraction(exp: Experiment, folder: Path, chance: float | None) -> Path | None:
    """Accuracy vs the top slice's share of the pool, one line per budget (quality vs quantity);
    None when the experiment does not vary top slices."""
    top = [line for line in exp.lines if all(p.fraction is not None for p in line.points)]
    if len({line.points[0].fraction for line in top if line.points}) < 2:
        return None
    fig, ax = _figure(f"{exp.name}: {metric_label(exp.metric)} vs slice size, one line per budget",
                      "top slice of the pool (% by score)", metric_label(exp.metric))
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    for budget, colour in zip(exp.budgets, _colours(len(exp.budgets))):
        pts = sorted(((line.at(budget).fraction, line.at(budget)) for line in top if line.at(budget)), key=lambda t: t[0])
        xs = [f for f, _ in pts]
        means = [p.mean for _, p in pts]
        err = np.array([[p.mean - min(p.values) for _, p in pts], [max(p.values) - p.mean for _, p in pts]])
        ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, color=colour, linewidth=2, label=fmt_budget(exp, budget))
        best = int(np.argmax(means))
        ax.scatter([xs[best]], [means[best]], s=160, facecolors="none", edgecolors=colour, linewidths=1.5)
    ax.text(0.01, 0.97, "circle: best slice at that budget", transform=ax.transAxes, fontsize=8, color="dimgrey", va="top")
    return _finish(fig, ax, folder / f"{exp.name}_fraction.png", chance)
