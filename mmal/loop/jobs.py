"""``mmal run --jobs N``: tasks in N worker processes, their progress relayed to this one.

Each task runs in a fresh Python process of its own (``python -m
mmal.loop.worker``: nothing copied from this one, so it is safe with torch
threads and CUDA, and it works from any caller, a script without a ``__main__``
guard or a notebook included), at most ``jobs`` at a time, in the order given. A
task that names another in ``after`` starts once that one has finished without
failure, and is dropped when it failed. A worker reads its task from stdin
(pickled) and sends its progress events and its result back, pickled, through
a pipe of its own; a thread here reads each pipe, and this process hands the
events to the caller's ``relay`` as they come.

Robustness:

- A worker that dies (killed, out of memory, a crash in native code) takes only
  its own task down: its result is a one-line reason (signal or exit code), and
  the other tasks go on.
- Ctrl-C (or any exception here, e.g. from ``relay``) stops every worker still
  running before it propagates: each gets one SIGINT, as if Ctrl-C had reached
  it (its ``finally`` blocks clean up, and it exits quietly with code 130), and
  SIGKILL if it is not gone 10 s later. Workers run in sessions of their own,
  so a Ctrl-C in the terminal reaches this process only, and each worker is
  stopped once, by this process, not interrupted again in its cleanup. Should
  this process be killed (SIGKILL), each worker sees it within a second and
  stops as on Ctrl-C (:mod:`mmal.loop.worker`).
- Workers hold the same locks as one process would (:mod:`mmal.lock`); the
  kernel drops them when a worker dies, so nothing stays locked.
- Workers find their code by name: strategies must be registered on import
  (built-ins, or the ``mmal.strategies`` entry point), not at run time.

Same results as one process: each worker trains with this process's torch
thread count (the one ``--jobs 1`` trains with), since a float sum split over
another number of threads rounds differently. N workers then run more threads
than there are CPUs; their OpenMP threads wait passively (``OMP_WAIT_POLICY=
PASSIVE`` unless set), as spinning threads starved each other (measured on the
demo, 2 cores, ``--jobs 2``: 388 s spinning, 51 s passive, 44 s for ``--jobs 1``).
Setting ``OMP_NUM_THREADS`` (e.g. CPUs // N) trades that for throughput: the
results then match ``--jobs 1`` run with the same setting.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mmal

log = logging.getLogger(__name__)

_POLL_S = 0.5  # how long a quiet parent waits for news before it looks again
_STOP_S = 10.0  # how long a terminated worker may take before it is killed
#: The package folder's parent: workers import this very mmal.
_ROOT = str(Path(mmal.__file__).resolve().parents[1])


@dataclass(frozen=True)
class Task:
    """A unit of work: ``key`` is passed to the target; ``after`` is the key it waits for."""

    key: tuple
    after: tuple | None = None


def run_tasks(tasks: Sequence[Task], jobs: int, target: Callable[..., Any], args: tuple,
              relay: Callable[[tuple, Any], None]) -> dict[tuple, Any]:
    """Run ``target(task.key, *args, emit=...)`` for every task in ``jobs`` processes.

    Parameters
    ----------
    tasks : sequence of Task
        In start order; keys are unique. A task whose ``after`` failed is not run.
    jobs : int
        Worker processes at most at a time (>= 1).
    target : callable
        A module-level function (workers import it by name). It gets the task's
        key, ``*args`` (picklable) and ``emit``, a function that sends one
        picklable event to ``relay`` here; its return value is the task's result.
    relay : callable
        ``relay(key, event)``, called in this process for every event, in the
        order each worker sent them.

    Returns
    -------
    dict
        Task key -> the target's return value, or a one-line ``str`` saying why
        there is none (the worker raised, or died). Tasks that did not run are absent.
    """
    inbox: queue.Queue = queue.Queue()
    waiting, running, results = list(tasks), {}, {}
    threads = _torch_threads()
    setup = (list(sys.path), logging.getLogger().getEffectiveLevel(), threads)
    if jobs > 1:
        log.info("%d workers, each with %s torch threads as one process would have (same "
                 "results as --jobs 1); for throughput on many CPUs set OMP_NUM_THREADS",
                 jobs, threads or "the default")
    try:
        while waiting or running:
            for task in _startable(waiting, results, jobs - len(running)):
                waiting.remove(task)
                running[task.key] = _Worker(task.key, setup, (target, task.key, args), inbox)
            if not running:  # the rest wait for tasks that did not run
                break
            try:
                kind, key, value = inbox.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if kind == "event":
                relay(key, value)
            elif kind == "result":
                results[key] = value
            else:  # "closed": the worker has ended
                code = running.pop(key).wait()
                if key not in results:
                    results[key] = _died(code)
    finally:
        for worker in running.values():  # all at once: each may take a while to clean up
            worker.interrupt()
        for worker in running.values():
            worker.finish()
    return results


class _Worker:
    """One worker process and the thread that reads what it sends."""

    def __init__(self, key: tuple, setup: tuple, work: tuple, inbox: queue.Queue):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
        # workers together run more OpenMP threads than CPUs: spinning ones starve each other
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        read, write = os.pipe()
        stream = os.fdopen(read, "rb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mmal.loop.worker", str(write)], stdin=subprocess.PIPE,
                pass_fds=(write,), env=env, start_new_session=True)
        except BaseException:
            stream.close()
            raise
        finally:
            os.close(write)  # the worker has its own copy: EOF here when it ends
        self.reader = threading.Thread(target=_read, args=(stream, key, inbox),
                                       name=f"mmal-run reader {key}", daemon=True)
        self.reader.start()
        try:
            pickle.dump(setup, self.proc.stdin)
            pickle.dump(work, self.proc.stdin)
            self.proc.stdin.close()
        except BrokenPipeError:  # it died at once; its exit code says so
            pass

    def wait(self) -> int:
        code = self.proc.wait()
        self.reader.join()
        return code

    def interrupt(self) -> None:
        """Send SIGINT, as Ctrl-C would: its ``finally`` blocks clean up for a resume."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def finish(self) -> None:
        """Wait for it to end after :meth:`interrupt`; SIGKILL if it lingers."""
        try:
            self.proc.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(_STOP_S)


def _read(stream, key: tuple, inbox: queue.Queue) -> None:
    """Put every message the worker sends into ``inbox``, then "closed" at its end."""
    with stream:
        while True:
            try:
                kind, value = pickle.load(stream)
            except EOFError:
                break
            except Exception:  # noqa: BLE001 - a message cut short by its death
                log.debug("unreadable message from worker %s", key, exc_info=True)
                break
            inbox.put((kind, key, value))
    inbox.put(("closed", key, None))


def _startable(waiting: list[Task], results: dict, free: int) -> list[Task]:
    """Tasks to start now, in order: free slots filled by those whose ``after`` succeeded."""
    ready = []
    for task in list(waiting):
        if task.after is not None and task.after not in results:
            continue
        if task.after is not None and not _succeeded(results[task.after]):
            waiting.remove(task)  # its prerequisite failed: it never runs
            continue
        if len(ready) < free:
            ready.append(task)
    return ready


def _succeeded(result: Any) -> bool:
    return not isinstance(result, str) and not result


def _died(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its worker process was killed by {name}; rerun to resume it"
    return f"its worker process exited with code {code}; rerun to resume it"


def _torch_threads() -> int | None:
    """torch threads for the workers: this process's, which ``--jobs 1`` trains with.

    None (the worker keeps torch's default, the same as this process's) when
    torch is not imported here yet or ``OMP_NUM_THREADS`` sets the default; a
    worker that never trains then never imports torch.
    """
    torch = sys.modules.get("torch")
    if torch is None or os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    return torch.get_num_threads()
