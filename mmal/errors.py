"""mmal's exceptions.

Library code raises these; the CLI turns each into a one-line ``Error: ...``
message and a non-zero exit. Every message names the file, field or sample
that is wrong and says what to do about it.
"""


class MmalError(Exception):
    """Base class of every error mmal raises on bad input or state."""


class CacheError(MmalError):
    """A feature cache is missing, malformed, incomplete or inconsistent."""


class IndexFileError(MmalError):
    """An index file is malformed or disagrees with its cache."""


class ConfigError(MmalError):
    """A workspace configuration is missing a key or has a bad value."""


class DataError(MmalError):
    """A dataset sample, manifest line or label file is bad."""


class SelectionError(MmalError):
    """A selection request cannot be carried out (budget, strategy, inputs)."""


class WorkspaceError(MmalError):
    """A workspace or round folder is missing or would be overwritten."""


class TrainingError(MmalError):
    """Training cannot go on (e.g. the loss is no longer finite)."""


class LockError(MmalError):
    """Another process holds the lock on files this one would write (and kept it too long)."""


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """The message of ``exc`` on one line, cut to ``limit`` characters; its type name if empty.

    An error raised in a DataLoader worker process reaches the main process
    as the same type with the worker's whole traceback as its message; the
    original message (the traceback's last line) is what the user needs.
    ``limit`` keeps a third-party message (a tokenizer's, a pickle's) from
    swamping the mmal message that quotes it.
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        for prefix in (f"{type(exc).__module__}.{type(exc).__qualname__}: ",
                       f"{type(exc).__qualname__}: "):
            if last.startswith(prefix):
                text = last[len(prefix):]
                break
    return " ".join(text.split())[:limit] or type(exc).__name__


def preview(values, limit: int = 5) -> str:
    """The first ``limit`` of ``values`` for a message: "3, 8, 13 and 9 more"."""
    values = values.ravel() if hasattr(values, "ravel") else list(values)
    shown = [str(int(v)) if _is_integer(v) else str(v) for v in values[:limit]]
    count = len(values)
    return ", ".join(shown) + (f" and {count - limit} more" if count > limit else "")


def _is_integer(value) -> bool:
    # NumPy integers print as plain numbers; names and other text stay as they are
    return hasattr(value, "__index__") and not isinstance(value, bool)
