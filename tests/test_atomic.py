"""atomic_open replaces a file whole or not at all."""

from __future__ import annotations

import json

import pytest

from mmal.atomic import atomic_open, write_json_atomic, write_text_atomic


def test_success_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as fh:
        fh.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_append_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"), atomic_open(tmp_path / "x", "a"):
        pass


def test_mode_is_that_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    atomic = write_text_atomic(tmp_path / "atomic", "x")
    assert atomic.stat().st_mode == plain.stat().st_mode
