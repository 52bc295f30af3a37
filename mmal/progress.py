"""Progress bars: drawn on a terminal, never into a file, a pipe or a log.

Every bar mmal shows goes through :func:`progress_bar`, so one rule holds
everywhere: a bar is drawn only when the caller asks for one *and* stderr (where
tqdm draws) is a terminal. Redirected output (``mmal train 2> log.txt``, a
cluster job's log, a pipe) then carries no ``\\r`` bar debris; the commands'
own lines say what happened.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (False when closed or redirected)."""
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True,
                 **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable``, disabled unless ``enabled`` and stderr is a terminal.

    The bar object is made either way (a disabled tqdm passes the items
    through), so whether a bar shows changes nothing else: the loader
    iterators opened, and the random draws they make, are the same.

    Examples
    --------
    >>> for batch in progress_bar(loader, enabled=progress, desc="epoch 1"):  # doctest: +SKIP
    ...     ...
    """
    return tqdm(iterable, disable=not (enabled and stderr_is_terminal()), **kwargs)
