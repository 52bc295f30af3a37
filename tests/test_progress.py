"""Progress bars only on a terminal: output to a file or a pipe has no ``\\r`` debris."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmal
from mmal import progress
from mmal.progress import progress_bar
from mmal.workspace import init_workspace
from tests.fixtures_data import make_tiny_dataset
from tests.lock_holder import ROOT

PACKAGE = Path(mmal.__file__).parent


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stderr,enabled,drawn", [
    (_Terminal(), True, True),
    (_Terminal(), False, False),
    (io.StringIO(), True, False),  # a file or a pipe
    (None, True, False),  # pythonw, a closed stream
])
def test_a_bar_is_drawn_only_when_asked_and_stderr_is_a_terminal(monkeypatch, stderr, enabled,
                                                                   drawn):
    monkeypatch.setattr(sys, "stderr", stderr)
    bar = progress_bar(range(3), enabled=enabled, file=stderr or io.StringIO())
    assert bar.disable is not drawn
    assert list(bar) == [0, 1, 2]  # the items pass through either way
    bar.close()
    if stderr is not None:
        assert ("\r" in stderr.getvalue()) is drawn


def test_every_bar_goes_through_the_one_rule():
    """No module but mmal/progress.py imports tqdm, so no bar escapes the terminal check."""
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "tqdm" for n in names):
                importers.append(path.relative_to(PACKAGE.parent).as_posix())
    assert importers == [Path(progress.__file__).relative_to(PACKAGE.parent).as_posix()]


def test_train_into_a_pipe_leaves_no_carriage_returns(tmp_path):
    """Issue 11: `mmal train 2> log` filled the log with tqdm's \\r redraws."""
    config = make_tiny_dataset(tmp_path / "src", "uci",
                               overrides={"train": {"epochs": 2, "batch_size": 16}})
    ws = init_workspace(tmp_path / "ws", config)
    proc = subprocess.run([sys.executable, "-m", "mmal", "train", "--workspace", str(ws),
                           "--device", "cpu"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    assert "it/s" not in proc.stderr
