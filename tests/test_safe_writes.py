"""Every command writes safely: through no planted link, over nothing but its own kind of
file, and on a full disk with one clean error and a rerun that recovers.

The full-disk cases run the real ``mmal`` in a subprocess on a small tmpfs
(``tests/diskfull.py``; skipped where it cannot be mounted), so the exit code
proves there was no crash (a segfault is 139) and stderr shows all the user sees.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmal.cache import open_cache, partial_path
from mmal.cli import cli
from tests import diskfull
from tests.models.tiny import selected_workspace

small_disk = diskfull.small_disk  # a fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def round0(tmp_path_factory):
    """A UCI workspace whose round 0 is trained, extracted and has one selection."""
    return selected_workspace(tmp_path_factory.mktemp("safe"))[0]


@pytest.fixture
def ws(round0, tmp_path):
    """A copy of the round-0 workspace for one test to change."""
    return Path(shutil.copytree(round0, tmp_path / "ws", symlinks=True))


def _selection(ws: Path) -> Path:
    [path] = (ws / "rounds" / "000" / "selections").glob("*.json")
    return path


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_error(result, starts: str) -> str:
    """The single ``Error:`` line of a failed CliRunner result, checked."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {starts}"), result.output
    assert "Traceback" not in result.output
    return lines[0]


# -- a link planted at the partial cache's name --------------------------------------------

@pytest.mark.parametrize("no_resume", [False, True])
def test_extract_does_not_write_through_a_link_at_its_partial_file(ws, tmp_path, no_resume):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    cache = ws / "rounds" / "000" / "cache.h5"
    cache.unlink()
    partial_path(cache).symlink_to(victim)
    result = _invoke("extract", "--workspace", ws, "--device", "cpu", "-q",
                     *(["--no-resume"] if no_resume else []))
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"precious"
    assert stat.S_ISREG(os.lstat(cache).st_mode) and not os.path.lexists(partial_path(cache))
    with open_cache(cache) as opened:
        assert opened.num_samples > 0


def test_synth_does_not_write_through_a_link_at_its_partial_file(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "pool.h5"
    partial_path(out).symlink_to(victim)
    result = _invoke("synth", out, "--num-samples", 50)
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"precious"
    assert stat.S_ISREG(os.lstat(out).st_mode) and not os.path.lexists(partial_path(out))


# -- --force replaces only a regular file of its own kind ----------------------------------

def _make(kind: str, path: Path, ws: Path) -> str:
    """Put a ``kind`` at ``path``; what the refusal says it is."""
    if kind == "fifo":
        os.mkfifo(path)
        return "is a named pipe (FIFO)"
    if kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))  # what /dev/full is
        except PermissionError:
            pytest.skip("creating a device node needs root")
        return "is a device node"
    if kind == "folder":
        path.mkdir()
        return "is a folder"
    if kind == "link":
        path.symlink_to(_selection(ws))
        return "is a symbolic link"
    if kind == "cache":
        shutil.copyfile(ws / "rounds" / "000" / "cache.h5", path)
    elif kind == "index":
        shutil.copyfile(_selection(ws), path)
    elif kind == "model":
        shutil.copyfile(ws / "rounds" / "000" / "model.pt", path)
    return "is not"


def _refused(result, path: Path, said: str, what: str) -> None:
    line = _one_error(result, f"{path}: {said}")
    assert f"--force replaces only {what}" in line


# (click itself refuses a folder for --out)
@pytest.mark.parametrize("kind", ["fifo", "device", "link", "cache", "model"])
def test_select_force_replaces_only_an_index_file(ws, kind):
    out = ws / "out.json"
    said = _make(kind, out, ws)
    before = os.lstat(out)
    _refused(_invoke("select", "-s", "random", "-b", 3, "--workspace", ws, "--out", out,
                     "--force"), out, said, "an mmal index file")
    after = os.lstat(out)
    assert (after.st_ino, after.st_mode, after.st_size) == (before.st_ino, before.st_mode,
                                                            before.st_size)


def test_select_force_still_replaces_a_selection(ws):
    out = _selection(ws)
    result = _invoke("select", "-s", "random", "-b", 3, "--workspace", ws, "--out", out,
                     "--force")
    assert result.exit_code == 0, result.output


# command -> (the round-0 file it writes, what --force says it replaces)
_ROUND_OUTPUT = {"extract": ("cache.h5", "an mmal feature cache"),
                 "train": ("model.pt", "an mmal model checkpoint")}


@pytest.mark.parametrize("command, kind", [
    *[("extract", kind) for kind in ["fifo", "link", "index", "model"]],
    *[("train", kind) for kind in ["fifo", "folder", "cache", "index"]],
])
def test_round_command_force_replaces_only_its_own_kind(ws, command, kind):
    name, what = _ROUND_OUTPUT[command]
    path = ws / "rounds" / "000" / name
    path.unlink()
    said = _make(kind, path, ws)
    _refused(_invoke(command, "--workspace", ws, "--device", "cpu", "-q", "--force"), path,
             said, what)


def test_synth_force_replaces_only_a_cache(ws, tmp_path):
    out = tmp_path / "index.json"
    _make("index", out, ws)
    _refused(_invoke("synth", out, "--num-samples", 50, "--force"), out, "is not",
             "an mmal feature cache")


def test_next_force_replaces_only_a_labeled_set(ws):
    labeled = ws / "rounds" / "001" / "labeled.json"
    labeled.parent.mkdir()
    said = _make("cache", labeled, ws)
    _refused(_invoke("next", "--selection", _selection(ws), "--workspace", ws, "--force"),
             labeled, said, "an mmal index file")


@pytest.mark.parametrize("kind", ["cache", "fifo"])
def test_export_force_refuses_files_mmal_stamps_and_devices(ws, kind):
    out = ws / "sheet.csv"
    said = _make(kind, out, ws)
    _refused(_invoke("export", _selection(ws), "--workspace", ws, "--out", out, "--force"),
             out, said, "an exported annotation file")


# -- full disks --------------------------------------------------------------------------------

def _mmal(*args, preflight: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``mmal`` in a fresh process; ``preflight=False`` disables the writer's room check
    (then HDF5's own writes hit the full disk, as when another process takes the room)."""
    code = "from mmal.cli import main; main()"
    if not preflight:
        code = "import mmal.cache.writer as w; w._free_bytes = lambda folder: None; " + code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _failed_cleanly(done: subprocess.CompletedProcess, path: Path) -> str:
    """Exit 1 (not 139, a segfault), no traceback, one ``Error:`` line naming ``path``."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {path}: No space left on device"), \
        done.stderr
    return errors[0]


def _on_disk(ws: Path, disk) -> Path:
    return Path(shutil.copytree(ws, disk.path / "ws", symlinks=True))


@pytest.mark.parametrize("preflight", [True, False])
def test_synth_on_a_full_disk_fails_cleanly_and_the_rerun_writes(small_disk, preflight):
    out = small_disk.path / "pool.h5"
    small_disk.fill(leave=1 << 20)
    args = ("synth", out, "--num-samples", 5000, "--dims", "256,256", "--force")
    _failed_cleanly(_mmal(*args, preflight=preflight), partial_path(out))
    small_disk.empty()
    done = _mmal(*args, preflight=preflight)
    assert done.returncode == 0, done.stderr
    with open_cache(out) as cache:
        assert cache.num_samples == 5000


@pytest.mark.parametrize("preflight", [pytest.param(True, marks=pytest.mark.slow), False])
def test_extract_on_a_full_disk_fails_cleanly_and_the_rerun_recovers(ws, small_disk, preflight):
    # preflight: the writer sees the disk cannot take the next batch and stops before it,
    # keeping its partial file; without: HDF5's writes fail, the partial file goes.
    ws = _on_disk(ws, small_disk)
    cache = ws / "rounds" / "000" / "cache.h5"
    small_disk.fill(leave=(128 << 10) if preflight else 0)
    args = ("extract", "--workspace", ws, "--device", "cpu", "-q", "--force")
    line = _failed_cleanly(_mmal(*args, preflight=preflight), partial_path(cache))
    assert "free some space and rerun" in line
    assert cache.exists()  # the old cache is untouched
    assert partial_path(cache).exists() == preflight
    small_disk.empty()
    done = _mmal(*args, preflight=preflight)  # no --no-resume needed
    assert done.returncode == 0, done.stderr
    assert ("resuming" in done.stderr) == preflight
    assert not partial_path(cache).exists()
    with open_cache(cache) as opened:
        assert opened.num_samples > 0


@pytest.mark.slow
def test_train_force_on_a_full_disk_fails_cleanly_and_the_rerun_trains(ws, small_disk):
    ws = _on_disk(ws, small_disk)
    model = ws / "rounds" / "000" / "model.pt"
    before = model.read_bytes()
    small_disk.fill(leave=0)
    args = ("train", "--workspace", ws, "--device", "cpu", "-q", "--force")
    _failed_cleanly(_mmal(*args), model.with_name("model.pt.partial"))
    assert model.read_bytes() == before
    assert not [p for p in model.parent.iterdir() if p.name.endswith(".tmp")]
    small_disk.empty()
    done = _mmal(*args)
    assert done.returncode == 0, done.stderr
    assert model.read_bytes() == before  # the same run trains the same bytes


def test_select_next_and_export_on_a_full_disk_name_their_file(ws, small_disk):
    ws = _on_disk(ws, small_disk)
    selection = _selection(ws)
    out = ws / "rounds" / "000" / "selections" / "again.json"
    sheet = ws / "sheet.csv"
    commands = [
        (("select", "-s", "random", "-b", 3, "--workspace", ws, "--out", out),
         out.with_name("again.diagnostics.npz")),
        (("next", "--selection", selection, "--workspace", ws),
         ws / "rounds" / "001" / "labeled.json"),
        (("export", selection, "--workspace", ws, "--out", sheet), sheet),
    ]
    (ws / "rounds" / "001").mkdir()  # the one thing a full tmpfs still allows
    small_disk.fill(leave=0)
    for args, path in commands:
        line = _failed_cleanly(_mmal(*args), path)
        assert line.endswith("free some space and rerun")
    small_disk.empty()
    for args, _ in commands:
        done = _mmal(*args)
        assert done.returncode == 0, done.stderr


# -- SIGTERM -------------------------------------------------------------------------------

def test_sigterm_during_training_with_loader_workers_leaves_a_resumable_round(ws):
    config = ws / "mmal.toml"
    text = config.read_text()
    assert "num_workers = 0" in text and "epochs = 1" in text
    config.write_text(text.replace("num_workers = 0", "num_workers = 2")
                      .replace("epochs = 1", "epochs = 400"))
    model = ws / "rounds" / "000" / "model.pt"
    partial = model.with_name("model.pt.partial")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mmal", "train", "--workspace", str(ws),
                             "--device", "cpu", "-q", "--force"], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert partial.exists(), "training wrote no partial checkpoint"
        time.sleep(0.3)  # mid-epoch, workers running
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr, stderr
    assert partial.exists()
    assert not [p for p in model.parent.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_waits_while_torch_save_writes_a_checkpoint():
    """Raised inside torch.save, SystemExit became torch's RuntimeError (exit 1, a traceback)."""
    import io

    import torch

    from mmal.cli import _unsafe_to_raise

    seen = []

    class Recording(io.BytesIO):
        def write(self, data):
            seen.append(_unsafe_to_raise(sys._getframe()))
            return super().write(data)

    torch.save({"w": torch.zeros(3)}, Recording())
    assert seen and all(seen)
    assert not _unsafe_to_raise(sys._getframe())  # plain mmal code still stops at once
