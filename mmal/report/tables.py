"""Mean ± std over seeds per (strategy, round), as CSV and Markdown, and the t-test matrix.

Standard deviations are sample standard deviations (``ddof=1``); with a single
seed they are NaN (blank in the CSV, shown as "±n/a" in Markdown).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from mmal.report.collect import RunData


@dataclass(frozen=True)
class Row:
    """Aggregates of one (strategy, round) over the seeds that reached it.

    ``top1`` and ``contribution`` map a metric name to (mean, std); ``select_s``
    is (mean, std) of the selection wall time or None when no selection exists.
    """

    strategy: str
    round: int
    num_labeled: int
    seeds: list[int]
    top1: dict[str, tuple[float, float]]
    contribution: dict[str, tuple[float, float]]
    select_s: tuple[float, float] | None


def mean_std(values) -> tuple[float, float]:
    """(mean, sample std with ddof=1); std is NaN for fewer than two values."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def aggregate(data: RunData) -> list[Row]:
    """One :class:`Row` per (strategy, round) with at least one seed, strategy-major."""
    rows = []
    metrics = ["mm", *data.modalities]
    for strategy in data.strategies:
        last = max([rec.round for rec in data.records if rec.strategy == strategy], default=-1)
        for r in range(last + 1):
            recs = [rec for rec in data.records if (rec.strategy, rec.round) == (strategy, r)]
            if not recs:
                continue
            times = [rec.select_s for rec in recs if rec.select_s is not None]
            rows.append(Row(
                strategy, r, int(round(np.mean([rec.num_labeled for rec in recs]))),
                sorted(rec.seed for rec in recs),
                {m: mean_std(rec.top1[m] for rec in recs if m in rec.top1) for m in metrics},
                {m: mean_std(rec.contribution[m] for rec in recs if m in rec.contribution)
                 for m in data.modalities},
                mean_std(times) if times else None))
    return rows


def to_csv(rows: list[Row], modalities: list[str]) -> str:
    """CSV text: strategy, round, num_labeled, seeds, then mean/std columns (fractions, seconds)."""
    metrics = ["mm", *modalities]
    header = ["strategy", "round", "num_labeled", "num_seeds", "seeds"]
    header += [f"top1_{m}_{s}" for m in metrics for s in ("mean", "std")]
    header += [f"contribution_{m}_{s}" for m in modalities for s in ("mean", "std")]
    header += ["select_s_mean", "select_s_std"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [row.strategy, row.round, row.num_labeled, len(row.seeds),
                 " ".join(str(k) for k in row.seeds)]
        cells += [_num(v) for m in metrics for v in row.top1[m]]
        cells += [_num(v) for m in modalities for v in row.contribution[m]]
        cells += [_num(v) for v in (row.select_s or (math.nan, math.nan))]
        writer.writerow(cells)
    return out.getvalue()


RESULTS_NOTE = ("Test top-1 in percent, mean ± sample std over seeds; Φ m = mean Shapley "
                "contribution of modality m at the true class on the test split (a fraction; "
                "the modalities' Φ sum to 1); selection time in seconds.")
TTEST_NOTE = ("Cell = rounds where the row strategy beats the column strategy; n/a = the pair "
              "never had two common seeds in a round.")


@dataclass(frozen=True)
class Table:
    """A table as text cells: what Markdown (results.md) and HTML (index.html) both render."""

    head: list[str]
    body: list[list[str]]


def results_table(rows: list[Row], modalities: list[str]) -> Table:
    """Round-major: top-1 in percent and each modality's contribution Φ (a fraction), mean ±
    std over seeds; selection seconds."""
    head = ["round", "labeled", "strategy", "seeds", "multimodal top-1 (%)",
            *[f"{m} top-1 (%)" for m in modalities], *[f"Φ {m}" for m in modalities],
            "selection (s)"]
    body = []
    for row in sorted(rows, key=lambda x: (x.round, x.strategy)):
        cells = [f"{row.round}", f"{row.num_labeled}", row.strategy, f"{len(row.seeds)}"]
        cells += [_pm(*row.top1[m], scale=100, digits=2) for m in ["mm", *modalities]]
        cells += [_pm(*row.contribution[m], digits=3) for m in modalities]
        cells.append(_pm(*row.select_s, digits=2) if row.select_s else "—")
        body.append(cells)
    return Table(head, body)


def markdown(table: Table) -> str:
    """A Markdown table, one line per row, ending in a newline."""
    lines = ["| " + " | ".join(table.head) + " |", "|" + "|".join("---" for _ in table.head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table.body]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PairwiseTTests:
    """The pairwise t-test matrix over S strategies.

    wins : (S, S) int64, ``wins[i, j]`` = rounds where strategy i beats j; zero diagonal.
    compared : (S, S) int64, symmetric: rounds where i and j had two or more common seeds.
    settings : rounds that had at least one comparable pair.
    confidence : the test's confidence level (e.g. 0.9).
    """

    names: list[str]
    wins: np.ndarray
    compared: np.ndarray
    settings: int
    confidence: float

    def cell(self, i: int, j: int, *, missing: str = "n/a") -> str:
        """``wins[i, j]`` as text: "—" on the diagonal, ``missing`` for a pair never compared."""
        if i == j:
            return "—"
        return str(int(self.wins[i, j])) if self.compared[i, j] else missing


def ttest_matrix(data: RunData, *, confidence: float = 0.9, metric: str = "mm",
                 first_round: int = 1) -> PairwiseTTests:
    """Pairwise wins: ``wins[i, j]`` = rounds where strategy i beats j significantly.

    For every round r >= ``first_round`` and pair (i, j), the test top-1
    ``metric`` of the seeds both reached is compared with a paired two-sided
    t-test (``scipy.stats.ttest_rel``: the two trajectories of a seed share
    round 0 and the data split); i beats j when p < 1 - ``confidence`` and
    i's mean is higher. Pairs with fewer than two common seeds, or identical
    results (p is NaN), count for neither.

    Returns
    -------
    PairwiseTTests over ``data.strategies``.
    """
    from scipy.stats import ttest_rel  # deferred: scipy only for the t-tests

    names = data.strategies
    wins = np.zeros((len(names), len(names)), dtype=np.int64)
    compared_pairs = np.zeros_like(wins)
    settings = 0
    for r in range(first_round, data.rounds + 1):
        compared = False
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if i >= j:
                    continue
                pairs = [(ra.top1[metric], rb.top1[metric]) for k in data.seeds
                         if (ra := data.get(a, k, r)) and (rb := data.get(b, k, r))]
                if len(pairs) < 2:
                    continue
                compared = True
                compared_pairs[i, j] += 1
                compared_pairs[j, i] += 1
                x, y = np.array(pairs).T
                p = ttest_rel(x, y).pvalue
                if np.isfinite(p) and p < 1 - confidence:
                    if x.mean() > y.mean():
                        wins[i, j] += 1
                    elif y.mean() > x.mean():
                        wins[j, i] += 1
        settings += compared
    return PairwiseTTests(list(names), wins, compared_pairs, settings, confidence)


def ttest_title(tests: PairwiseTTests, rounds: int) -> str:
    """The heading of the t-test matrix: level, pairing, metric, rounds compared."""
    return (f"Pairwise t-tests ({int(tests.confidence * 100)}%, paired over seeds, multimodal "
            f"top-1, rounds 1-{rounds}: {tests.settings} compared)")


def matrix_table(tests: PairwiseTTests) -> Table:
    """The win matrix (rows beat columns; "—" diagonal, n/a: never compared)."""
    return Table(["beats →", *tests.names],
                 [[name, *(tests.cell(i, j) for j in range(len(tests.names)))]
                  for i, name in enumerate(tests.names)])


def matrix_csv(tests: PairwiseTTests) -> str:
    """CSV of the win matrix; an empty cell for the diagonal and for pairs never compared."""
    lines = ["wins," + ",".join(tests.names)]
    lines += [f"{n}," + ",".join("" if i == j else tests.cell(i, j, missing="")
                                 for j in range(len(tests.names)))
              for i, n in enumerate(tests.names)]
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def _pm(mean: float, std: float, *, scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "—"
    sd = "n/a" if math.isnan(std) else f"{std * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {sd}"
