"""The ``mmal`` command line: a thin click layer over mmal's Python API.

Each stage's commands live in :mod:`mmal.commands`; they import their library
code inside the command body so ``mmal --help`` stays fast and ``select``
never pulls in torch. Library errors (:class:`mmal.errors.MmalError`) become
one-line ``Error: ...`` messages with exit code 1, never tracebacks.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time

import click

from mmal import __version__
from mmal.commands.cache import inspect_command, synth_command
from mmal.commands.extract import extract_command
from mmal.commands.labels import export_command, label_command
from mmal.commands.report import report_command
from mmal.commands.run import run_command
from mmal.commands.select import select_command, strategies_command
from mmal.commands.train import train_command
from mmal.commands.workspace import init_command, next_command
from mmal.errors import MmalError, one_line


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MmalError as exc:
            raise click.ClickException(one_line(exc)) from None
        except OSError as exc:  # unwritable output folder, full disk, ...
            where = exc.filename or "output"
            fix = ("free some space and rerun" if exc.errno in _DISK_FULL
                   else "check the path and its permissions")
            raise click.ClickException(f"{where}: {exc.strerror or exc}; {fix}") from None


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="mmal")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Balanced active learning for multimodal classifiers.

    The pipeline runs in stages that talk through files: `train` fits a model on
    a round's labeled set, `extract` writes the round's feature cache, `select`
    reads the cache and writes the ids to label next.

    \b
    Example:
      mmal synth pool.h5 --num-samples 2000
      mmal inspect pool.h5
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


cli.add_command(synth_command)
cli.add_command(inspect_command)
cli.add_command(select_command)
cli.add_command(strategies_command)
cli.add_command(init_command)
cli.add_command(next_command)
cli.add_command(train_command)
cli.add_command(extract_command)
cli.add_command(run_command)
cli.add_command(report_command)
cli.add_command(export_command)
cli.add_command(label_command)


def main() -> None:
    """Console-script entry point."""
    _exit_on_sigterm()
    cli(prog_name="mmal")


def _exit_on_sigterm() -> None:
    """Make SIGTERM (``kill``, torchrun stopping its workers) end mmal like an error does.

    By default SIGTERM kills the process on the spot and its temporary and
    partial files stay half-written. The handler raises ``SystemExit(143)``
    instead, so every ``except``/``finally`` runs: temporary files are removed,
    the cache writer closes its partial file for a resume. Processes forked
    from this one (DataLoader workers) get the default back: they are stopped,
    not cleaned.

    An exception raised inside a finalizer is ignored, one raised while
    torch's DataLoader starts or stops its workers leaves it half-built, and one
    raised inside ``torch.save`` (a checkpoint being written) is replaced by
    torch's own error as its zip writer closes, so
    while the main thread is in such code the signal is sent again a moment
    later (for at most :data:`_SIGTERM_PATIENCE_S`) instead of raising there.
    """
    owner = os.getpid()
    first: list[float] = []

    def stop(signum, frame):
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        first.append(first[0] if first else time.monotonic())
        if _unsafe_to_raise(frame) and time.monotonic() - first[0] < _SIGTERM_PATIENCE_S:
            threading.Timer(0.05, os.kill, (owner, signum)).start()
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


#: How long SIGTERM waits for the main thread to leave code it must not interrupt.
_SIGTERM_PATIENCE_S = 10.0
# torch.save: an exception raised inside its zip writer leaves the C++ writer half-closed, and
# its __exit__ then raises a RuntimeError that replaces the SystemExit (exit 1, a traceback).
_UNSAFE_FILES = (f"torch{os.sep}utils{os.sep}data{os.sep}", f"{os.sep}multiprocessing{os.sep}",
                 f"torch{os.sep}serialization.py")


def _unsafe_to_raise(frame) -> bool:
    """True inside a ``__del__``, torch's DataLoader / multiprocessing machinery or ``torch.save``."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or any(part in code.co_filename for part in _UNSAFE_FILES):
            return True
        frame = frame.f_back
    return False
