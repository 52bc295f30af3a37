"""atomic_open replaces a file whole or not at all, through no link, leaving no temporary file."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from mmal.atomic import (
    atomic_open,
    check_replaceable,
    make_temp,
    write_json_atomic,
    write_text_atomic,
)
from tests import diskfull

small_disk = diskfull.small_disk  # a fixture


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


# -- temporary files: exclusive, named after their process, cleaned when it died -------------

def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def _temp_name(target, owner: str) -> str:
    return f".{target.name}.{owner}.abcd1234.tmp"


def test_the_temporary_file_names_its_process_and_gets_a_plain_mode(tmp_path):
    target = tmp_path / "out.json"
    fd, temp = make_temp(target)
    os.close(fd)
    assert temp.parent == tmp_path
    assert re.fullmatch(r"\.out\.json\.[0-9a-f]{8}-" + str(os.getpid()) + r"\.\w+\.tmp", temp.name)
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert temp.stat().st_mode == plain.stat().st_mode


def test_stale_temporary_files_of_dead_processes_go_with_the_next_write(tmp_path):
    target = tmp_path / "model.pt"
    fd, mine = make_temp(target)
    os.close(fd)
    host = mine.name.split(".")[3].split("-")[0]
    dead = tmp_path / _temp_name(target, f"{host}-{_dead_pid()}")
    alive = tmp_path / _temp_name(target, f"{host}-1")  # init never dies
    elsewhere = tmp_path / _temp_name(target, f"{'0' * 8 if host != '0' * 8 else '1' * 8}-"
                                              f"{_dead_pid()}")
    other_target = tmp_path / _temp_name(tmp_path / "model.pt.partial", f"{host}-{_dead_pid()}")
    for path in (dead, alive, elsewhere, other_target):
        path.write_bytes(b"half")
    write_text_atomic(target, "new")
    assert not dead.exists()
    assert mine.exists() and alive.exists() and elsewhere.exists() and other_target.exists()
    assert target.read_text() == "new"


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from mmal.atomic import atomic_open
    if sys.argv[2] == "term":
        from mmal.cli import _exit_on_sigterm
        _exit_on_sigterm()
    with atomic_open(sys.argv[1], "wb") as out:
        out.write(b"half of it")
        out.flush()
        os.kill(os.getpid(), signal.SIGKILL if sys.argv[2] == "kill" else signal.SIGTERM)
        out.write(b"never")
""")


def test_a_killed_writer_leaves_a_temporary_file_the_next_writer_removes(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), "kill"],
                          capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    [left] = [p for p in tmp_path.iterdir() if p != target]
    assert left.name.startswith(".metrics.json.") and left.name.endswith(".tmp")
    write_text_atomic(target, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), "term"],
                          capture_output=True, text=True)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr == ""
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert target.read_text() == "old"


FORKED_CHILD = textwrap.dedent("""
    import os, signal, time
    from mmal.cli import _exit_on_sigterm
    _exit_on_sigterm()
    child = os.fork()
    if child == 0:  # like a DataLoader worker: stopped by SIGTERM, no cleanup of its own
        time.sleep(30)
        os._exit(0)
    time.sleep(0.2)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
""")


def test_sigterm_stops_a_forked_child_as_it_always_did():
    done = subprocess.run([sys.executable, "-c", FORKED_CHILD], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "True", "")


# -- full disks -------------------------------------------------------------------------------

def test_a_full_disk_names_the_target_and_keeps_the_old_file(small_disk):
    target = small_disk.path / "selection.json"
    target.write_text("old")
    small_disk.fill(leave=64 << 10)
    with pytest.raises(OSError) as info, atomic_open(target, "wb") as out:
        out.write(bytes(1 << 20))
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(target))
    assert target.read_text() == "old"
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["ballast", "selection.json"]


def test_a_write_error_a_library_swallows_still_ends_as_the_oserror(small_disk):
    target = small_disk.path / "model.pt"
    small_disk.fill(leave=64 << 10)
    with pytest.raises(OSError) as info, atomic_open(target, "wb") as out:
        try:  # what torch.save does: "RuntimeError: [enforce fail at inline_container.cc]"
            out.write(bytes(1 << 20))
        except OSError:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0") from None
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(target))
    assert not target.exists()


# -- what a write may replace -----------------------------------------------------------------

def test_a_folder_or_fifo_is_never_replaced(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for name, what in (("fifo", r"a named pipe \(FIFO\)"), ("folder", "a folder")):
        with pytest.raises(OSError, match=f"is {what}, not a file mmal may replace") as info:
            write_text_atomic(tmp_path / name, "x")
        assert info.value.filename == str(tmp_path / name)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder"]


def test_a_link_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "out.json").symlink_to(victim)
    write_text_atomic(tmp_path / "out.json", "new")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out.json").is_symlink()
    assert (tmp_path / "out.json").read_text() == "new"


def _special_files(tmp_path):
    """(path, expected message part) for what --force refuses whatever the kind."""
    regular = tmp_path / "regular.json"
    regular.write_text("{}")
    (tmp_path / "link").symlink_to(regular)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    out = [(tmp_path / "link", "is a symbolic link"), (tmp_path / "folder", "is a folder"),
           (tmp_path / "fifo", "is a named pipe (FIFO)")]
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        out.append((tmp_path / "null", "is a device node"))
    except PermissionError:
        pass  # not root: the FIFO stands in for a device
    return out


def test_force_refuses_links_folders_and_devices_with_one_line(tmp_path):
    for path, message in _special_files(tmp_path):
        with pytest.raises(ValueError) as info:
            check_replaceable(path, what="an mmal index file", error=ValueError,
                              is_kind=lambda p: True)
        assert str(info.value).startswith(f"{path}: {message}; --force replaces only an mmal "
                                          "index file")
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("content, replaceable", [
    (b"id,name,label\n1,a,\n", True),
    (b'{"tasks": []}', True),
    (b"\x89HDF\r\n\x1a\n" + bytes(100), False),
    (b"PK\x03\x04" + bytes(100), False),
    (b'{\n "mmal_type": "mmal-index-file",\n "ids": []}', False),
])
def test_force_on_an_unstamped_output_refuses_files_mmal_stamps(tmp_path, content, replaceable):
    path = tmp_path / "sheet.csv"
    path.write_bytes(content)
    if replaceable:
        check_replaceable(path, what="an annotation sheet", error=ValueError)
    else:
        with pytest.raises(ValueError, match="sheet.csv: is not an annotation sheet; --force "
                                             "replaces only an annotation sheet: move it away"):
            check_replaceable(path, what="an annotation sheet", error=ValueError)


def test_force_accepts_an_absent_file_or_one_of_the_kind(tmp_path):
    check_replaceable(tmp_path / "absent", what="x", error=ValueError, is_kind=lambda p: False)
    (tmp_path / "same").write_text("{}")
    check_replaceable(tmp_path / "same", what="x", error=ValueError, is_kind=lambda p: True)
    with pytest.raises(ValueError, match="same: is not x; --force replaces only x"):
        check_replaceable(tmp_path / "same", what="x", error=ValueError, is_kind=lambda p: False)
