"""Labels needed and saved: a run with known accuracies, interpolated numbers checked by hand."""

from __future__ import annotations

import csv
import math

import pytest
from click.testing import CliRunner

from mmal.cli import cli
from mmal.errors import WorkspaceError
from mmal.report import make_report
from mmal.report.labels import labels_to_reach
from tests.report.test_report import _write_run

# The t-tests of the report see seeds whose differences are identical in this run (scipy warns).
pytestmark = pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
STRATEGIES = ["bmmal", "badge", "random"]
# Test top-1 per (strategy, seed) over rounds 0-3 (20, 30, 40, 50 labels), fused head.
MM = {("random", 0): [0.50, 0.54, 0.58, 0.60], ("random", 1): [0.50, 0.56, 0.62, 0.64],
      ("bmmal", 0): [0.50, 0.58, 0.64, 0.70], ("bmmal", 1): [0.50, 0.62, 0.70, 0.72],
      ("badge", 0): [0.50, 0.52, 0.55, 0.58], ("badge", 1): [0.50, 0.54, 0.57, 0.60]}
# Unimodal head "a", the same for both seeds; random's best (0.40) is not its last round.
A = {"random": [0.30, 0.35, 0.40, 0.38], "bmmal": [0.30, 0.45, 0.50, 0.50],
     "badge": [0.30, 0.30, 0.40, 0.50]}


def _known(rng, strategy, seed, r):
    return {"round": r, "num_labeled": 20 + 10 * r, "epochs": 1,
            "test": {"top1": {"mm": MM[(strategy, seed)][r], "a": A[strategy][r], "b": 0.2},
                     "shapley_true_class": {"phi_mean": {"a": 0.2, "b": 0.1},
                                            "contribution_mean": {"a": 0.6, "b": 0.4}}}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    ws = tmp_path_factory.mktemp("labels")
    _write_run(ws, seeds=(0, 1), metrics=_known)
    return ws


def _needed(report):
    return {(r.strategy, r.head): r for r in report.labels}


def _csv(report):
    with (report.out / "labels_needed.csv").open(newline="") as fh:
        return {(row["strategy"], row["head"]): row for row in csv.DictReader(fh)}


def test_default_target_is_randoms_best_and_the_mean_curve_is_interpolated(run):
    report = make_report(run, run / "out")
    got = _needed(report)
    # Targets: random's best mean top-1 per head: mm (0.60 + 0.64) / 2, a 0.40, b 0.2.
    assert got[("random", "mm")].target == pytest.approx(0.62, abs=1e-12)
    assert got[("random", "a")].target == 0.40 and got[("random", "b")].target == 0.2
    # fused head: bmmal's mean curve 0.60 at 30 labels, 0.67 at 40: 30 + 10 * 0.02 / 0.07.
    # (Each seed interpolated, then averaged, would give (30 + 10 * 0.04 / 0.06 + 30) / 2.)
    bmmal = 30 + 10 * (0.62 - 0.60) / (0.67 - 0.60)
    assert got[("bmmal", "mm")].needed == pytest.approx(bmmal, rel=1e-12)
    assert got[("random", "mm")].needed == pytest.approx(50, rel=1e-12)
    assert got[("bmmal", "mm")].saved == pytest.approx(50 - bmmal, rel=1e-12)
    assert got[("badge", "mm")].needed is None and got[("badge", "mm")].saved is None
    # head a: random first reaches its best at round 2 (40 labels), though it drops after.
    assert got[("random", "a")].needed == 40
    assert got[("bmmal", "a")].needed == pytest.approx(20 + 10 * 0.10 / 0.15, rel=1e-12)
    assert got[("badge", "a")].needed == 40 and got[("badge", "a")].saved == 0
    # head b: flat at the target from round 0: the first point, 20 labels, for everyone.
    assert all(got[(s, "b")].needed == 20 and got[(s, "b")].saved == 0 for s in STRATEGIES)
    rows = _csv(report)
    assert float(rows[("bmmal", "mm")]["labels_needed"]) == got[("bmmal", "mm")].needed
    assert float(rows[("bmmal", "mm")]["labels_saved"]) == got[("bmmal", "mm")].saved
    assert rows[("badge", "mm")]["labels_needed"] == "" == rows[("badge", "mm")]["labels_saved"]
    md = (report.out / "results.md").read_text(encoding="utf-8")
    assert "## Labels needed" in md
    assert "| bmmal | 33 | 17 | 27 | 13 | 20 | 0 |" in md
    assert "| badge | not reached | — | 40 | 0 | 20 | 0 |" in md
    assert "multimodal (fused head): labels for 62.00%" in md
    assert {"labels_needed.csv", "labels_needed.png"} <= {p.name for p in report.files}


def test_explicit_target_applies_to_every_head_and_bounds_the_saving(run):
    report = make_report(run, run / "out65", target=0.65)
    got = _needed(report)
    assert got[("random", "mm")].needed is None  # random's mean curve peaks at 0.62
    bmmal = 30 + 10 * (0.65 - 0.60) / (0.67 - 0.60)
    assert got[("bmmal", "mm")].needed == pytest.approx(bmmal, rel=1e-12)
    # random needs more than its last round's 50 labels: bmmal saves more than 50 - bmmal.
    assert got[("bmmal", "mm")].saved == pytest.approx(50 - bmmal, rel=1e-12)
    assert got[("bmmal", "mm")].saved_is_bound
    assert all(got[(s, h)].needed is None for s in STRATEGIES for h in ("a", "b"))
    assert _csv(report)[("bmmal", "mm")]["saved_is_lower_bound"] == "true"
    assert "| bmmal | 37 | > 13 | not reached | — | not reached | — |" in report.labels_table


def test_cli_prints_the_labels_table_and_refuses_a_percentage(run):
    res = CliRunner().invoke(cli, ["report", "--workspace", str(run), "--out",
                                   str(run / "cli"), "--target", "0.65"])
    assert res.exit_code == 0, res.output
    assert "Labels needed" in res.output and "| bmmal | 37 | > 13 |" in res.output
    res = CliRunner().invoke(cli, ["report", "--workspace", str(run), "--target", "43.5"])
    assert res.exit_code == 2 and "--target" in res.output and "43.5" in res.output
    with pytest.raises(WorkspaceError, match="not a fraction in"):
        make_report(run, run / "bad", target=43.5)


def test_a_run_without_random_and_without_target_says_so(tmp_path):
    _write_run(tmp_path, seeds=(0, 1), metrics=_known, strategies=["bmmal", "badge"])
    report = make_report(tmp_path)
    assert report.labels == [] and not (report.out / "labels_needed.csv").exists()
    assert any("pass --target" in w for w in report.warnings)
    with_target = make_report(tmp_path, tmp_path / "t", target=0.62)
    got = _needed(with_target)
    assert got[("bmmal", "mm")].saved is None  # nothing to compare with
    assert got[("bmmal", "mm")].needed == pytest.approx(30 + 10 * 0.02 / 0.07, rel=1e-12)


@pytest.mark.parametrize("x, y, target, expected", [
    ([100, 200, 300], [0.5, 0.6, 0.7], 0.65, 250.0),
    ([100, 200, 300], [0.7, 0.8, 0.9], 0.65, 100.0),            # the first point reaches it
    ([100, 200, 300], [0.5, 0.65, 0.7], 0.65, 200.0),           # hit exactly at a round
    ([100, 200, 300], [0.5, 0.6, 0.62], 0.65, None),            # never
    ([100, 200, 300], [0.5, math.nan, 0.7], 0.6, 200.0),        # a NaN round is skipped
    ([100, 200, 300, 400], [0.5, 0.7, 0.6, 0.8], 0.65, 175.0),  # the first crossing counts
])
def test_labels_to_reach(x, y, target, expected):
    assert labels_to_reach(x, y, target) == (pytest.approx(expected) if expected else None)


def test_labels_to_reach_lies_between_the_rounds_it_crosses():
    x, y = [10, 20, 40, 80], [0.1, 0.3, 0.35, 0.9]
    for target in (0.15, 0.31, 0.5, 0.89):
        got = labels_to_reach(x, y, target)
        i = next(k for k, v in enumerate(y) if v >= target)
        assert x[i - 1] < got <= x[i]


def test_no_bound_is_claimed_when_random_stops_short_of_the_strategys_labels():
    from mmal.report.labels import labels_needed
    from mmal.report.tables import Row

    def row(strategy, r, labeled, top1):
        return Row(strategy, r, labeled, [0], {"mm": (top1, 0.0)}, {}, None)

    # random ran 2 rounds (up to 30 labels) and never reached 0.7; bmmal reached it at 45.
    rows = [row("random", 0, 20, 0.5), row("random", 1, 30, 0.6),
            row("bmmal", 0, 20, 0.5), row("bmmal", 1, 30, 0.6), row("bmmal", 2, 40, 0.65),
            row("bmmal", 3, 50, 0.75)]
    (got,) = labels_needed(rows, ["bmmal"], {"mm": 0.7})
    assert got.needed == pytest.approx(45) and got.saved is None and not got.saved_is_bound
