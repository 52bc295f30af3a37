"""Settings read from the environment (timeouts), checked one way."""

from __future__ import annotations

import os

from mmal.errors import ConfigError


def env_seconds(name: str, default: float, *, zero_ok: bool) -> float:
    """Seconds from environment variable ``name`` (``default`` when unset or empty).

    ConfigError, naming the variable and an example, for a value that is not a
    number, is negative or NaN, or is 0 where ``zero_ok`` is False.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 0 if zero_ok else value > 0):  # NaN fails both
        allowed = ">= 0 (0: do not wait)" if zero_ok else "> 0"
        raise ConfigError(f"environment variable {name}={raw!r}: expected a number of seconds "
                          f"{allowed}, e.g. {default:g}; set it so, or unset it")
    return value
