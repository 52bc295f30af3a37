"""PNG plots of a comparison run (matplotlib, Agg backend: no display needed).

Every plot colours a strategy the same way (:func:`strategy_colors`): bmmal
red, badge blue, random grey, any other strategy the next free tab10 colour in
the run's strategy order.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmal.atomic import atomic_open, check_replaceable
from mmal.errors import WorkspaceError
from mmal.report.collect import RunData
from mmal.report.labels import BASELINE, LabelsNeeded
from mmal.report.tables import PairwiseTTests, Row, mean_std

#: What a report writes, for the message when its name is taken by another kind of file.
REPORT_FILE = "an mmal report file (tables, plots, index.html)"

#: Width of one panel in inches (one panel per head or modality).
PANEL_WIDTH = 4.2

FIXED_COLORS = {"bmmal": "#d62728", "badge": "#1f77b4", "random": "#7f7f7f"}
_TAB10 = ["#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
          "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]


def strategy_colors(names: list[str]) -> dict[str, str]:
    """One colour per strategy, stable for the well-known names."""
    colors, free = {}, iter(c for c in _TAB10 if c not in FIXED_COLORS.values())
    for name in names:
        colors[name] = FIXED_COLORS.get(name) or next(free, "#000000")
    return colors


def head_name(head: str) -> str:
    """How plots and tables name a head: the fused head or a modality's unimodal head."""
    return "multimodal (fused head)" if head == "mm" else f"{head} (unimodal head)"


def _pyplot():
    # deferred (here and in _integer_rounds): matplotlib is slow to import and only draws plots
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _band(ax, x, mean, std, color, label, linestyle="-"):
    x, mean, std = map(np.asarray, (x, mean, std))
    ax.plot(x, mean, marker="o", markersize=3, color=color, label=label, linestyle=linestyle)
    ok = np.isfinite(std)
    if ok.any():
        ax.fill_between(x[ok], (mean - std)[ok], (mean + std)[ok], color=color, alpha=0.15,
                        linewidth=0)


def plot_accuracy(rows: list[Row], data: RunData, path: Path) -> Path:
    """Test top-1 vs labeled samples: multimodal and each modality (the paper's Fig. 4)."""
    plt = _pyplot()
    panels = ["mm", *data.modalities]
    colors = strategy_colors(data.strategies)
    fig, axes = _panels(plt, len(panels))
    for ax, metric in zip(axes[0], panels, strict=True):
        for name in data.strategies:
            mine = [row for row in rows if row.strategy == name]
            if not mine:
                continue
            _band(ax, [row.num_labeled for row in mine],
                  [100 * row.top1[metric][0] for row in mine],
                  [100 * row.top1[metric][1] for row in mine], colors[name], name)
        _title(ax, head_name(metric))
        ax.set_xlabel("labeled samples")
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(title="strategy", fontsize=8)
    _suptitle(fig, f"Test accuracy per round (mean ± std over {len(data.seeds)} seeds)")
    return _save(fig, path)


def plot_contribution(rows: list[Row], data: RunData, path: Path) -> Path:
    """Mean Shapley contribution Φ of each modality per round and strategy (Figs. 2-3)."""
    plt = _pyplot()
    colors = strategy_colors(data.strategies)
    mods = data.modalities
    fig, axes = _panels(plt, len(mods))
    for ax, m in zip(axes[0], mods, strict=True):
        for name in data.strategies:
            mine = [row for row in rows if row.strategy == name]
            if mine:
                _band(ax, [row.round for row in mine], [row.contribution[m][0] for row in mine],
                      [row.contribution[m][1] for row in mine], colors[name], name)
        ax.axhline(1 / len(mods), color="black", linewidth=0.8, linestyle=":",
                   label="balanced (1/M)")
        ax.set_ylim(0, 1)
        _title(ax, f"contribution Φ of {m}")
        ax.set_xlabel("round")
        _integer_rounds(ax)
        ax.set_ylabel("mean Φ at the true class (test)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(title="strategy", fontsize=8)
    _suptitle(fig, "Modality contribution per round (mean ± std over seeds)")
    return _save(fig, path)


def plot_weaker_weight(data: RunData, path: Path) -> Path | None:
    """Mean BMMAL weight of the weaker modality in each modality's dominated sub-pool (Fig. 6).

    One panel per dominant modality (its title gives the sub-pool's mean share
    of the unlabeled pool); x = round of the selection. None (and no file) when
    no selection in the run has a sub-pool summary.
    """
    series = _subpool_series(data)
    if not series:
        return None
    plt = _pyplot()
    colors = strategy_colors(data.strategies)
    mods = data.modalities
    fig, axes = _panels(plt, len(mods))
    for ax, m in zip(axes[0], mods, strict=True):
        shares = []
        for name in data.strategies:
            points = series.get((name, m))
            if points:
                r, mean, std, share = zip(*points, strict=True)
                _band(ax, r, mean, std, colors[name], name)
                shares += share
        others = ", ".join(o for o in mods if o != m)
        size = f" ({100 * np.nanmean(shares):.0f}% of the pool)" if shares else ""
        _title(ax, f"sub-pool dominated by {m}{size}")
        ax.set_xlabel("round")
        _integer_rounds(ax)
        ax.set_ylabel(f"mean weight of {others}")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].legend(title="strategy", fontsize=8)
    _suptitle(fig, "Weight of the weaker modality in each dominated sub-pool "
                   "(mean ± std over seeds)")
    return _save(fig, path)


def plot_labels_needed(results: Sequence[LabelsNeeded], heads: Sequence[str],
                       strategies: Sequence[str], path: Path) -> Path:
    """Labels each strategy needs to reach the target, one panel per head (the paper's headline).

    Horizontal bars, one per strategy; a strategy that never reaches the
    target has no bar and reads "not reached". Each bar is labelled with its
    labels saved relative to random; a dotted line marks random's labels.
    """
    plt = _pyplot()
    colors = strategy_colors(list(strategies))
    by = {(r.strategy, r.head): r for r in results}
    fig, axes = _panels(plt, len(heads), height=1.6 + 0.45 * len(strategies))
    # one labels scale for every panel, with room for the notes right of the bars
    widest = max([r.needed for r in results if r.needed is not None], default=1.0)
    for ax, head in zip(axes[0], heads, strict=True):
        rows = [by[(s, head)] for s in strategies]
        for i, r in enumerate(rows):
            if r.needed is None:
                ax.text(0, i, " not reached", va="center", ha="left", fontsize=8)
                continue
            ax.barh(i, r.needed, color=colors[r.strategy], height=0.6)
            if r.saved is not None and r.strategy != BASELINE:
                ax.text(r.needed, i, f" {_saved_note(r)}", va="center", ha="left", fontsize=8)
        base = by.get((BASELINE, head))
        if base is not None and base.needed is not None:
            ax.axvline(base.needed, color="black", linewidth=0.8, linestyle=":")
        ax.set_yticks(range(len(rows)), [r.strategy for r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first strategy on top, whether or not bars exist
        ax.set_xlim(0, 1.45 * widest)
        ax.set_xlabel("labeled samples to reach the target")
        _title(ax, f"{head_name(head)}: top-1 ≥ {100 * rows[0].target:.2f}%")
        ax.grid(axis="x", alpha=0.3)
    _suptitle(fig, "Labels needed to reach the target (mean curve over seeds, interpolated); "
                   "notes: labels saved relative to random")
    return _save(fig, path)


def _panels(plt, count: int, height: float = 3.6):
    """(figure, (1, count) axes): one row of ``count`` panels, :data:`PANEL_WIDTH` inches each."""
    return plt.subplots(1, count, figsize=(PANEL_WIDTH * count, height), squeeze=False,
                        layout="constrained")


def _saved_note(r: LabelsNeeded) -> str:
    """"saves 230", "saves > 120" (random never reached the target) or "needs 40 more"."""
    if r.saved < 0 and not r.saved_is_bound:
        return f"needs {-r.saved:,.0f} more"
    return f"saves {'> ' if r.saved_is_bound else ''}{r.saved:,.0f}"


def _subpool_series(data: RunData) -> dict[tuple[str, str], list[tuple]]:
    """(strategy, dominant modality) -> [(round, mean weight, std, mean share)] over seeds."""
    out: dict[tuple[str, str], list[tuple]] = {}
    for name in data.strategies:
        for m in data.modalities:
            for r in range(data.rounds + 1):
                subs = [rec.summary["subpools"][m] for rec in data.records
                        if (rec.strategy, rec.round) == (name, r)
                        and m in rec.summary.get("subpools", {})]
                weights = [s["mean_weaker_weight"] for s in subs
                           if s.get("mean_weaker_weight") is not None]
                if weights:
                    mean, std = mean_std(weights)
                    share = float(np.mean([s.get("share", math.nan) for s in subs]))
                    out.setdefault((name, m), []).append((r, mean, std, share))
    return out


def plot_ttest(tests: PairwiseTTests, path: Path) -> Path:
    """Heat map of the pairwise t-test wins (the paper's Fig. 5); pairs never compared are grey."""
    plt = _pyplot()
    names, wins, settings = tests.names, tests.wins, tests.settings
    size = 1.0 + 0.9 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    shown = np.ma.masked_where(tests.compared == 0, wins)
    cmap = plt.get_cmap("Blues").with_extremes(bad="0.85")
    image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=max(1, settings))
    for i in range(len(names)):
        for j in range(len(names)):
            dark = wins[i, j] > 0.6 * max(1, settings)
            ax.text(j, i, tests.cell(i, j), ha="center", va="center",
                    color="white" if dark else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("loses (column)")
    ax.set_ylabel("wins (row)")
    ax.set_title(f"Rounds where row beats column\n(paired two-sided t-test over seeds, "
                 f"{tests.confidence:.0%}; "
                 f"{settings} rounds compared)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="rounds won")
    return _save(fig, path)


def _integer_rounds(ax) -> None:
    from matplotlib.ticker import MaxNLocator  # deferred: see _pyplot

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _title(ax, text: str) -> None:
    """A panel title wrapped to the panel's width (less its axis labels), so none runs past it."""
    title = ax.set_title(text)
    title.set_text(_wrap(text, 0.9 * PANEL_WIDTH, title.get_fontsize()))


def _suptitle(fig, text: str) -> None:
    """A figure title wrapped to the figure's width."""
    title = fig.suptitle(text)
    title.set_text(_wrap(text, 0.95 * fig.get_figwidth(), title.get_fontsize()))


def _wrap(text: str, width_in: float, size_pt: float) -> str:
    # 0.55 em is about DejaVu Sans's mean character width (constrained layout makes room for
    # the lines; tests/report check that every title stays inside its figure)
    return textwrap.fill(text, max(12, int(width_in * 72 / (0.55 * size_pt))))


def _save(fig, path: Path) -> Path:
    # every figure uses constrained layout: titles, labels and legends get room, none is clipped
    check_replaceable(path, what=REPORT_FILE, error=WorkspaceError)  # never a file mmal stamps
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    _pyplot().close(fig)
    return path
