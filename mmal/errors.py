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
