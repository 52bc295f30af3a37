"""Labels needed to reach a target accuracy, and labels saved relative to random sampling.

The paper's headline numbers ("BMMAL saves about 5k labels compared with
random at a multimodal top-1 of 0.435") read off the accuracy curves. Here,
for every strategy and head (the fused head ``"mm"`` and each unimodal head):

1. **The mean curve.** Per round r, ``x_r`` = labeled samples and ``y_r`` =
   test top-1, each the mean over the seeds that reached round r (the rows of
   :func:`mmal.report.tables.aggregate`, the values of results.csv). Seeds are
   combined *before* interpolating: the curve interpolated is the mean curve,
   not each seed's.
2. **Labels needed** = where the mean curve first reaches the target ``T``:
   at the first round r with ``y_r >= T``, ``x_r`` if r is the first point,
   else linearly interpolated between rounds r-1 and r:
   ``x_{r-1} + (T - y_{r-1}) (x_r - x_{r-1}) / (y_r - y_{r-1})``.
   "Not reached" when no round reaches ``T``.
3. **Labels saved** = random's labels needed minus the strategy's. When random
   never reaches ``T`` but the strategy does, random needs more than its last
   round's labels, and the saving is a lower bound (``> value``).

The target defaults, per head, to the best mean accuracy random sampling
reaches on that head; an explicit target applies to every head.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmal.report.tables import Row, Table

#: The strategy labels saved are measured against.
BASELINE = "random"


@dataclass(frozen=True)
class LabelsNeeded:
    """One (strategy, head): labels needed to reach ``target`` and labels saved vs random.

    Attributes
    ----------
    head : "mm" (the fused head) or a modality name (its unimodal head).
    target : test top-1 to reach, a fraction in (0, 1].
    needed : labeled samples (interpolated, so fractional), or None: never reached.
    saved : random's ``needed`` minus this one's; None when this strategy never
        reaches the target, or neither a value nor a bound is known.
    saved_is_bound : True when random never reaches the target: the saving is
        more than ``saved`` (random's last round's labels minus ``needed``, kept
        only when positive).
    """

    strategy: str
    head: str
    target: float
    needed: float | None
    saved: float | None
    saved_is_bound: bool = False


def labels_to_reach(x: Sequence[float], y: Sequence[float], target: float) -> float | None:
    """Labels where the curve ``(x, y)`` first reaches ``target``, linearly interpolated.

    Parameters
    ----------
    x : (R,) labeled samples per round, increasing.
    y : (R,) accuracy per round (same unit as ``target``); NaN points are skipped.
    target : accuracy to reach.

    Returns
    -------
    float or None
        ``x[0]`` when the first point already reaches the target; else the
        interpolation between the last point below and the first at or above
        it; None when no point reaches it.

    Examples
    --------
    >>> labels_to_reach([100, 200, 300], [0.5, 0.6, 0.7], 0.65)
    250.0
    """
    points = [(float(a), float(b)) for a, b in zip(x, y, strict=True) if math.isfinite(b)]
    for i, (xi, yi) in enumerate(points):
        if yi >= target:
            if i == 0:
                return xi
            x0, y0 = points[i - 1]  # y0 < target <= yi: the denominator is positive
            return x0 + (target - y0) * (xi - x0) / (yi - y0)
    return None


def mean_curve(rows: Sequence[Row], strategy: str, head: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): labeled samples and mean test top-1 over seeds per round of ``strategy``'s rows."""
    mine = sorted((row for row in rows if row.strategy == strategy), key=lambda row: row.round)
    return (np.array([row.num_labeled for row in mine], dtype=np.float64),
            np.array([row.top1[head][0] for row in mine], dtype=np.float64))


def default_targets(rows: Sequence[Row], heads: Sequence[str]) -> dict[str, float] | None:
    """Per head, the best mean accuracy random sampling reaches; None without random rows."""
    if not any(row.strategy == BASELINE for row in rows):
        return None
    targets = {}
    for head in heads:
        _, y = mean_curve(rows, BASELINE, head)
        finite = y[np.isfinite(y)]
        if finite.size:
            targets[head] = float(finite.max())
    return targets


def labels_needed(rows: Sequence[Row], strategies: Sequence[str],
                  targets: dict[str, float]) -> list[LabelsNeeded]:
    """:class:`LabelsNeeded` of every strategy (in order) and head of ``targets`` (in order)."""
    out = []
    for head, target in targets.items():
        base = base_last = None
        bx, by = mean_curve(rows, BASELINE, head)
        if np.isfinite(by).any():  # random has results on this head
            base = labels_to_reach(bx, by, target)
            base_last = float(bx[np.isfinite(by)][-1])
        for strategy in strategies:
            x, y = mean_curve(rows, strategy, head)
            needed = labels_to_reach(x, y, target) if len(x) else None
            saved, bound = None, False
            if needed is not None and base is not None:
                saved = base - needed
            elif needed is not None and base_last is not None and base_last > needed:
                # random needs more than base_last labels; the bound says something only
                # when it is positive (else "—": neither a value nor a bound is known)
                saved, bound = base_last - needed, True
            out.append(LabelsNeeded(strategy, head, target, needed, saved, bound))
    return out


LABELS_NOTE = ("Labels each strategy needs for its mean test top-1 (mean over seeds per round) "
               "to first reach the target, linearly interpolated between rounds; saved = "
               "random's labels needed minus the strategy's (> n: random never reaches the "
               "target, so it saves more than n).")


def labels_table(results: Sequence[LabelsNeeded], heads: Sequence[str],
                 names: dict[str, str]) -> Table:
    """One row per strategy: labels needed and saved for each head; ``names``: head -> title."""
    strategies = list(dict.fromkeys(r.strategy for r in results))
    by = {(r.strategy, r.head): r for r in results}
    head = ["strategy"]
    for h in heads:
        target = next(r.target for r in results if r.head == h)
        head += [f"{names[h]}: labels for {100 * target:.2f}%", f"{names[h]}: saved vs random"]
    body = []
    for s in strategies:
        cells = [s]
        for h in heads:
            r = by[(s, h)]
            cells += [_labels(r.needed), _saved(r)]
        body.append(cells)
    return Table(head, body)


def labels_csv(results: Sequence[LabelsNeeded]) -> str:
    """CSV: strategy, head, target, labels_needed, labels_saved, saved_is_lower_bound.

    Unknown values (not reached) are empty cells; numbers are exact (``repr``).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["strategy", "head", "target", "labels_needed", "labels_saved",
                     "saved_is_lower_bound"])
    for r in results:
        writer.writerow([r.strategy, r.head, repr(r.target), _exact(r.needed), _exact(r.saved),
                         "true" if r.saved_is_bound else "false"])
    return out.getvalue()


def _exact(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _labels(value: float | None) -> str:
    return "not reached" if value is None else f"{value:,.0f}"


def _saved(r: LabelsNeeded) -> str:
    if r.saved is None:
        return "—"
    return f"> {r.saved:,.0f}" if r.saved_is_bound else f"{r.saved:,.0f}"
