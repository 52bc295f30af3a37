"""Report: tables equal a hand computation from metrics.json, plots exist, gaps are named.

The run is written by hand (metrics.json, selections, plan.json in the layout
of mmal.loop), so these tests train nothing.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy.stats import ttest_rel

from mmal.cache.index import write_index
from mmal.cli import cli
from mmal.errors import WorkspaceError
from mmal.loop.layout import RunLayout, write_json_atomic
from mmal.report import collect, make_report
from mmal.report.plots import strategy_colors
from mmal.report.tables import mean_std, ttest_matrix
from mmal.workspace import round_paths

MODS = ["a", "b"]
STRATEGIES = ["bmmal", "badge", "random"]


def _metrics(rng, strategy, seed, r):
    base = {"bmmal": 0.70, "badge": 0.68, "random": 0.60}[strategy]
    mm = 0.5 if r == 0 else base + 0.02 * r + 0.005 * seed + rng.uniform(0, 0.003)
    share = float(rng.uniform(0.55, 0.8))
    return {"round": r, "num_labeled": 20 + 10 * r, "epochs": 1,
            "test": {"top1": {"mm": float(mm), "a": float(rng.uniform(0.4, 0.6)),
                              "b": float(rng.uniform(0.1, 0.3))},
                     "shapley_true_class": {"phi_mean": {"a": 0.3, "b": 0.1},
                                            "contribution_mean": {"a": share, "b": 1 - share}}},
            "model_fingerprint": f"{strategy}{seed}{r}"}


def _write_run(ws, *, seeds=(0, 1, 2), rounds=3, skip=(), metrics=_metrics,
               strategies=STRATEGIES, mods=MODS):
    """A fake run; ``skip`` holds (strategy, seed, round) whose metrics are left out;
    ``metrics(rng, strategy, seed, round)`` makes a round's metrics.json over ``a`` and ``b``,
    renamed to ``mods``."""
    rng = np.random.default_rng(0)
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "mmal.toml").write_text("")
    layout = RunLayout(ws)
    write_json_atomic(layout.plan, {"strategies": list(strategies), "seeds": list(seeds),
                                    "rounds": rounds, "budget": 10, "initial_budget": 20,
                                    "mc_dropout": 0})
    written = {}
    for s in strategies:
        for k in seeds:
            folder = layout.trajectory(s, k)
            for r in range(rounds + 1):
                if (s, k, r) in skip:
                    continue
                paths = round_paths(folder, r)
                paths.root.mkdir(parents=True)
                m = _rename(metrics(rng, s, k, r), dict(zip(MODS, mods, strict=True)))
                paths.metrics.write_text(json.dumps(m))
                written[(s, k, r)] = m
                if r < rounds:
                    prov = {"strategy": s, "params": {}, "seed": k, "budget": 10,
                            "cache": "c.h5", "cache_fingerprint": "x", "backend": "numpy",
                            "wall_time_s": round(0.1 * (k + 1) + r, 3)}
                    if s == "bmmal":
                        a, b = mods
                        prov["summary"] = {"pool_size": 100, "subpools": {
                            a: {"size": 70, "share": 0.7, "mean_weaker_weight": 0.6 + 0.01 * k,
                                "mean_weight": {b: 0.6}},
                            b: {"size": 30, "share": 0.3, "mean_weaker_weight": 0.9,
                                "mean_weight": {a: 0.9}}}}
                    write_index(paths.selections / f"{s}-b10.json", [1000 + r], kind="selection",
                                provenance=prov)
    return written


def _rename(metrics, names):
    """``metrics`` with modality keys a, b renamed by ``names``."""
    test = metrics["test"]
    test["top1"] = {names.get(k, k): v for k, v in test["top1"].items()}
    for key, values in test["shapley_true_class"].items():
        test["shapley_true_class"][key] = {names[k]: v for k, v in values.items()}
    return metrics


def _read_csv(path):
    with path.open(newline="") as fh:
        return {(row["strategy"], int(row["round"])): row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A complete fake run (3 strategies, 3 seeds, rounds 0-3) and its report."""
    ws = tmp_path_factory.mktemp("full")
    written = _write_run(ws)
    return ws, written, make_report(ws, ws / "out")


def test_table_values_equal_hand_computation_from_metrics(full):
    _, written, report = full
    rows = _read_csv(report.out / "results.csv")
    assert len(rows) == 3 * 4
    for (s, r), row in rows.items():
        ms = [written[(s, k, r)] for k in (0, 1, 2)]
        for metric in ("mm", "a", "b"):
            values = np.array([m["test"]["top1"][metric] for m in ms])
            assert float(row[f"top1_{metric}_mean"]) == pytest.approx(values.mean(), abs=1e-12)
            assert float(row[f"top1_{metric}_std"]) == pytest.approx(values.std(ddof=1), abs=1e-12)
        phi = [m["test"]["shapley_true_class"]["contribution_mean"]["b"] for m in ms]
        assert float(row["contribution_b_mean"]) == pytest.approx(np.mean(phi), abs=1e-12)
        assert int(row["num_labeled"]) == 20 + 10 * r and row["seeds"] == "0 1 2"
        if r < 3:
            times = [round(0.1 * (k + 1) + r, 3) for k in (0, 1, 2)]
            assert float(row["select_s_mean"]) == pytest.approx(np.mean(times))
        else:
            assert row["select_s_mean"] == ""
    # Markdown: percent with two decimals, e.g. bmmal round 2.
    mm = [written[("bmmal", k, 2)]["test"]["top1"]["mm"] for k in (0, 1, 2)]
    cell = f"{100 * np.mean(mm):.2f} ± {100 * np.std(mm, ddof=1):.2f}"
    assert f"| 2 | 40 | bmmal | 3 | {cell} |" in report.table
    # Φ of each modality, mean ± std over seeds, after the top-1 columns.
    phi = [[m["test"]["shapley_true_class"]["contribution_mean"][k] for m in
            (written[("bmmal", s, 2)] for s in (0, 1, 2))] for k in MODS]
    row = next(line for line in report.table.splitlines() if line.startswith("| 2 | 40 | bmmal"))
    assert row.split(" | ")[-3:-1] == [f"{np.mean(p):.3f} ± {np.std(p, ddof=1):.3f}" for p in phi]
    assert report.table.splitlines()[0].endswith("| Φ a | Φ b | selection (s) |")
    assert report.warnings == []


def test_plots_exist_and_are_images(full):
    ws, _, report = full
    names = {p.name for p in report.files}
    assert names == {"results.csv", "results.md", "ttest.csv", "accuracy.png",
                     "contribution.png", "weaker_weight.png", "ttest.png", "labels_needed.csv",
                     "labels_needed.png", "index.html"}
    for name in ("accuracy.png", "contribution.png", "weaker_weight.png", "ttest.png",
                 "labels_needed.png"):
        with Image.open(ws / "out" / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_ttest_matrix_equals_scipy_paired_tests(full):
    ws, written, report = full
    data = collect(ws)
    tests = ttest_matrix(data)
    wins, settings = tests.wins, tests.settings
    expected = np.zeros((3, 3), dtype=int)
    for r in (1, 2, 3):
        for i, a in enumerate(STRATEGIES):
            for j, b in enumerate(STRATEGIES):
                x = [written[(a, k, r)]["test"]["top1"]["mm"] for k in (0, 1, 2)]
                y = [written[(b, k, r)]["test"]["top1"]["mm"] for k in (0, 1, 2)]
                if i != j and ttest_rel(x, y).pvalue < 0.1 and np.mean(x) > np.mean(y):
                    expected[i, j] += 1
    assert settings == 3
    assert np.array_equal(wins, expected) and np.array_equal(report.wins, expected)
    # The fake data is built so that bmmal > badge > random in every round.
    assert wins[0, 2] == 3 and wins[2, 0] == 0 and wins[1, 2] == 3


def test_ttest_ignores_identical_rounds_and_single_seeds(tmp_path):
    _write_run(tmp_path, seeds=(0,))
    tests = ttest_matrix(collect(tmp_path))
    assert tests.settings == 0 and not tests.wins.any() and not tests.compared.any()
    assert tests.cell(0, 1) == "n/a" and tests.cell(1, 1) == "—"
    _write_run(tmp_path / "two")
    wins0 = ttest_matrix(collect(tmp_path / "two"), first_round=0).wins
    # Round 0 is shared (identical values): never counted as a win.
    wins1 = ttest_matrix(collect(tmp_path / "two"), first_round=1).wins
    assert np.array_equal(wins0, wins1)


def test_missing_seeds_and_rounds_are_named_and_left_out(tmp_path):
    skip = {("badge", 2, r) for r in range(4)} | {("random", 1, 2), ("random", 1, 3)}
    written = _write_run(tmp_path, skip=skip)
    runner = CliRunner()
    res = runner.invoke(cli, ["report", "--workspace", str(tmp_path)])
    assert res.exit_code == 0, res.output
    line = ("warning: missing metrics: badge seed 2 (all rounds); random seed 1 rounds 2-3")
    assert line in res.output.splitlines()
    rows = _read_csv(tmp_path / "report" / "results.csv")
    assert rows[("badge", 1)]["seeds"] == "0 1" and rows[("random", 3)]["seeds"] == "0 2"
    values = [written[("random", k, 3)]["test"]["top1"]["mm"] for k in (0, 2)]
    assert float(rows[("random", 3)]["top1_mm_mean"]) == pytest.approx(np.mean(values))
    md = (tmp_path / "report" / "results.md").read_text()
    assert "## Missing" in md and "random seed 1 rounds 2-3" in md


def test_pairs_never_compared_show_na_not_zero_wins(tmp_path):
    # badge reached only seed 0: no round has two common seeds with any other strategy.
    _write_run(tmp_path, skip={("badge", k, r) for k in (1, 2) for r in range(4)})
    report = make_report(tmp_path)
    b, others = STRATEGIES.index("badge"), [i for i, s in enumerate(STRATEGIES) if s != "badge"]
    tests = report.ttests
    assert all(tests.compared[b, i] == 0 and tests.compared[i, b] == 0 for i in others)
    assert tests.compared[others[0], others[1]] == 3
    md = (report.out / "results.md").read_text()
    badge_row = next(line for line in md.splitlines() if line.startswith("| badge |"))
    assert badge_row.count("n/a") == 2 and "—" in badge_row
    csv_rows = (report.out / "ttest.csv").read_text().splitlines()
    assert csv_rows[0] == "wins," + ",".join(STRATEGIES)
    assert csv_rows[1 + b] == "badge," + ",".join("" for _ in STRATEGIES)
    i, j = others
    assert csv_rows[1 + i].split(",")[1 + j] == str(tests.wins[i, j])


def test_missing_selection_is_named(tmp_path):
    _write_run(tmp_path)
    (round_paths(RunLayout(tmp_path).trajectory("random", 0), 1).selections
     / "random-b10.json").unlink()
    report = make_report(tmp_path)
    assert "missing selections: random seed 0 round 1" in report.warnings
    assert _read_csv(report.out / "results.csv")[("random", 1)]["seeds"] == "0 1 2"


def test_no_balance_summary_no_weaker_weight_plot(tmp_path):
    _write_run(tmp_path)
    for k in (0, 1, 2):
        folder = RunLayout(tmp_path).trajectory("bmmal", k)
        for path in folder.glob("rounds/*/selections/*.json"):
            doc = json.loads(path.read_text())
            doc["provenance"].pop("summary", None)
            path.write_text(json.dumps(doc))
    report = make_report(tmp_path)
    assert not (report.out / "weaker_weight.png").exists()
    assert any("weaker_weight.png not written" in w for w in report.warnings)


@pytest.mark.parametrize("name", ["results.csv", "accuracy.png"])
def test_a_report_never_overwrites_a_file_mmal_stamps(tmp_path, name):
    _write_run(tmp_path)
    out = tmp_path / "out"
    taken = write_index(out / name, np.array([1, 2]), kind="labeled", provenance={})
    before = taken.read_bytes()
    with pytest.raises(WorkspaceError, match=f"{name}: .*an mmal report file"):
        make_report(tmp_path, out)
    assert taken.read_bytes() == before


def test_report_without_a_run_is_a_one_line_error(tmp_path):
    (tmp_path / "mmal.toml").write_text("")
    with pytest.raises(WorkspaceError, match="has no runs/ folder; run `mmal run"):
        make_report(tmp_path)
    res = CliRunner().invoke(cli, ["report", "--workspace", str(tmp_path)])
    assert res.exit_code == 1 and res.output.startswith("Error: ")


def test_mean_std_and_colors():
    assert mean_std([1.0, 3.0]) == (2.0, math.sqrt(2.0))
    assert math.isnan(mean_std([1.0])[1])
    colors = strategy_colors(["coreset", "bmmal", "badge", "random", "entropy"])
    assert colors["bmmal"] == "#d62728" and len(set(colors.values())) == 5


def test_report_command_does_not_import_torch(tmp_path):
    """`mmal report` reads files only; torch stays out though mmal.loop also drives training."""
    _write_run(tmp_path, seeds=(0, 1), rounds=1)
    code = ("import sys\nfrom mmal.cli import cli\n"
            f"cli(['report', '--workspace', {str(tmp_path)!r}], standalone_mode=False)\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
