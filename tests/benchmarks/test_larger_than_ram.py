"""``benchmarks/larger_than_ram.py`` runs end to end at a tiny scale and reports a spill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_spills_and_cleans_up(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.larger_than_ram", "--rows", "300", "--budget", "5",
         "--max-memory", "4K", "--classes", "5", "--dims", "8,8", "--dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("N=300 K=5 D=8,8 (float16) B=5 max-memory=4K")
    assert any(line.startswith("select  wall") and "peak RSS" in line for line in lines)
    assert "spilled u (" in result.stdout and " and r (" in result.stdout
    assert lines[-1].startswith("passes over u: 1 write (streaming pass) + 1 refresh reads")
    assert list(tmp_path.iterdir()) == []  # cache, index, diagnostics and spill folder gone
