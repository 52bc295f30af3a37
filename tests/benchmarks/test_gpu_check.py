"""benchmarks/gpu_check: the no-GPU table, and each check isolated with its own timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check
from benchmarks.gpu_check import CHECKS, Check, NotRun

ROOT = Path(__file__).resolve().parents[2]


def _table_lines(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines()
            if line.split() and line.split()[0] in gpu_check.BY_NAME}


@pytest.mark.slow
def test_without_a_gpu_every_check_is_not_run_and_the_script_exits_0():
    if gpu_check.gpu_missing() is None:
        pytest.skip("a GPU is visible: the checks would run")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    lines = _table_lines(proc.stdout)
    assert sorted(lines) == sorted(check.name for check in CHECKS)
    assert all(line.endswith("not run: no GPU") for line in lines.values()), proc.stdout


def test_dry_run_lists_the_chosen_checks_and_runs_nothing(capsys):
    assert gpu_check.main(["--dry-run", "--only", "faiss-gpu", "cupy-ids"]) == 0
    lines = _table_lines(capsys.readouterr().out)
    assert sorted(lines) == ["cupy-ids", "faiss-gpu"]
    assert all(line.endswith("not run: dry run") for line in lines.values())


def _raise(exc):
    def run(work):
        raise exc
    return run


@pytest.mark.parametrize(("run", "status", "detail"), [
    (lambda work: "fine", "ok", "fine"),
    (_raise(AssertionError("ids differ")), "FAILED", "ids differ"),
    (_raise(NotRun("CuPy is not installed")), "not run: CuPy is not installed", ""),
    (_raise(RuntimeError("CUDA error")), "FAILED", "RuntimeError: CUDA error"),
])
def test_a_check_reports_ok_failed_or_not_run(monkeypatch, capsys, tmp_path, run, status, detail):
    monkeypatch.setitem(gpu_check.BY_NAME, "fake", Check("fake", "a fake", 5, run))
    gpu_check.run_child("fake", tmp_path)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(gpu_check.RESULT_TAG)
    import json

    assert json.loads(line[len(gpu_check.RESULT_TAG):]) == {"status": status, "detail": detail}


@pytest.mark.parametrize(("code", "status", "detail"), [
    ("print('GPU_CHECK_RESULT {\"status\": \"ok\", \"detail\": \"1.2 s\"}')", "ok", "1.2 s"),
    ("import os; os.abort()", "FAILED", "crashed (exit status -6)"),
    ("import sys; sys.exit('CUDA driver gone')", "FAILED", "crashed (exit status 1): CUDA driver gone"),
    ("import time; time.sleep(60)", "FAILED", "timed out after 2 s"),
])
def test_a_crashing_or_hanging_check_is_one_failed_line(code, status, detail):
    got_status, got_detail = gpu_check.run_isolated([sys.executable, "-c", code], timeout_s=2)
    assert got_status == status
    assert got_detail.startswith(detail)


def test_failed_check_gives_exit_status_1_and_later_checks_still_run(monkeypatch, capsys):
    outcomes = iter([("FAILED", "crashed (exit status -11): Segmentation fault"), ("ok", "0.9 s")])
    monkeypatch.setattr(gpu_check, "gpu_missing", lambda: None)
    monkeypatch.setattr(gpu_check, "run_isolated", lambda command, timeout_s: next(outcomes))
    assert gpu_check.main(["--only", "cupy-ids", "faiss-gpu"]) == 1
    lines = _table_lines(capsys.readouterr().out)
    assert "FAILED" in lines["cupy-ids"] and lines["faiss-gpu"].split()[-3] == "ok"


def test_checks_past_the_time_budget_are_not_started(tmp_path):
    results = gpu_check.run_checks(CHECKS[:2], tmp_path, None, budget_s=0)
    assert [status for _, status, _ in results] == \
        ["not run: out of time (whole run limited to 0 s)"] * 2


def test_every_name_a_check_imports_exists():
    """A check's imports run only on a GPU: a renamed function must fail here, not there."""
    import ast
    import importlib

    tree = ast.parse((ROOT / "benchmarks" / "gpu_check.py").read_text())
    missing = [f"{node.module}.{alias.name}" for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module
               and node.module.split(".")[0] in ("mmal", "benchmarks")
               for alias in node.names
               if not hasattr(importlib.import_module(node.module), alias.name)]
    assert missing == []
