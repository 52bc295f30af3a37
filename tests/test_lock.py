"""mmal.lock: a writer waits for another process's lock, names it, and gives up on time."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from mmal.errors import ConfigError, LockError
from mmal.lock import (
    TIMEOUT_ENV,
    folder_lock,
    hold,
    holder,
    is_lock_file,
    lock_timeout,
    output_lock,
)
from tests.lock_holder import Holder


@pytest.fixture
def lock(tmp_path):
    return folder_lock(tmp_path / "rounds" / "000")


def test_the_lock_file_names_its_holder_while_held_and_nobody_after(lock):
    with hold(lock, "mmal extract") as path:
        assert path == lock and lock.is_file()
        found = holder(lock)
        assert found["pid"] == os.getpid() and found["command"] == "mmal extract"
    assert lock.is_file() and lock.read_text() == "" and holder(lock) is None


def test_a_second_writer_waits_says_for_whom_and_goes_on_when_released(lock, caplog):
    other = Holder(lock, "mmal train")
    timer = threading.Timer(2.0, other.release)
    timer.start()
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mmal.lock"), hold(lock, "mmal extract",
                                                                       timeout=30):
        waited = time.monotonic() - began
        assert holder(lock)["pid"] == os.getpid()
    timer.join()
    assert waited >= 1.9
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith(f"waiting for {lock} held by pid {other.pid} "
                                                 "(mmal train) since ")


def test_a_writer_gives_up_after_the_timeout_naming_lock_and_holder(lock):
    other = Holder(lock, "mmal run")
    try:
        began = time.monotonic()
        with pytest.raises(LockError) as err, hold(lock, "mmal train", timeout=0.5):
            pass
        assert 0.4 < time.monotonic() - began < 5
    finally:
        other.release()
    message = str(err.value)
    assert message.startswith(f"{lock}: held by pid {other.pid} (mmal run) since ")
    assert f"gave up after 0.5 s ({TIMEOUT_ENV})" in message and "\n" not in message


def test_a_killed_holder_leaves_no_lock_behind(lock, caplog):
    other = Holder(lock, "mmal train")
    other.kill()
    assert holder(lock)["pid"] == other.pid  # its record stays, but the kernel dropped the lock
    with caplog.at_level(logging.WARNING, logger="mmal.lock"), hold(lock, "mmal train",
                                                                       timeout=0):
        assert holder(lock)["pid"] == os.getpid()
    assert not caplog.records


FORKS_THEN_DIES = """
import os, sys, time
from mmal.lock import hold
with hold(sys.argv[1], "mmal extract"):
    if os.fork() == 0:  # a DataLoader worker, forked while the lock is held
        os.close(1), os.close(2)  # so that the test does not wait for its pipes
        time.sleep(5)
        os._exit(0)
    print("held", flush=True)
    os._exit(9)  # killed: no release
"""


def test_a_killed_holder_s_forked_children_do_not_keep_its_lock(lock):
    import subprocess
    import sys

    from tests.lock_holder import ROOT

    done = subprocess.run([sys.executable, "-c", FORKS_THEN_DIES, str(lock)], timeout=60,
                          capture_output=True, text=True, env={**os.environ,
                                                               "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "held", done.stderr
    with hold(lock, "mmal extract", timeout=0):  # the child still sleeps, the lock is free
        pass


def test_the_same_thread_takes_a_lock_again_and_keeps_it_until_the_outer_block_ends(lock):
    with hold(lock, "mmal run"), hold(lock, "mmal train"), hold(lock, "mmal select",
                                                                shared=True):
        assert holder(lock)["command"] == "mmal run"
    with hold(lock, "mmal train"):  # and still works after
        assert holder(lock)["command"] == "mmal train"


def test_another_thread_waits_like_another_process(lock):
    got = []

    def second():
        with hold(lock, "mmal train", timeout=10):
            got.append(time.monotonic())

    with hold(lock, "mmal run"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert not got
        released = time.monotonic()
    thread.join(timeout=10)
    assert got and got[0] >= released


def test_shared_holders_run_together_and_an_exclusive_one_waits_for_them(lock):
    other = Holder(lock, "mmal select", shared=True)
    try:
        with hold(lock, "mmal select", shared=True, timeout=0):
            pass
        with pytest.raises(LockError, match=r"\(mmal select\)"), hold(lock, "mmal train",
                                                                       timeout=0.2):
            pass
    finally:
        other.release()
    with hold(lock, "mmal train", timeout=0):
        pass


def test_timeout_from_the_environment(monkeypatch, lock):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert lock_timeout() == 600
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert lock_timeout() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=f"^environment variable {TIMEOUT_ENV}='{bad}': "
                                              "expected a number of seconds >= 0"):
            lock_timeout()
    monkeypatch.setenv(TIMEOUT_ENV, "0")
    other = Holder(lock)
    try:
        with pytest.raises(LockError, match="gave up after 0 s"), hold(lock, "mmal train"):
            pass
    finally:
        other.release()


def test_a_symlinked_lock_file_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    lock = tmp_path / ".lock"
    lock.symlink_to(victim)
    with pytest.raises(LockError, match=r"\.lock: is a symbolic link"), hold(lock, "mmal train"):
        pass
    assert victim.read_text() == "keep me"


def test_other_torchrun_ranks_work_under_rank_0s_lock(lock, monkeypatch):
    other = Holder(lock)
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        with hold(lock, "mmal train", timeout=0):
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(LockError), hold(lock, "mmal train", timeout=0):
            pass
    finally:
        other.release()


def test_lock_file_names(tmp_path):
    assert folder_lock(tmp_path) == tmp_path / ".lock"
    assert output_lock(tmp_path / "picks.json") == tmp_path / ".picks.json.lock"
    assert is_lock_file(tmp_path / ".lock") and is_lock_file(".picks.json.lock")
    assert not is_lock_file("picks.json") and not is_lock_file("lock")
    with pytest.raises(LockError, match="names no file"):
        output_lock(Path(""))
