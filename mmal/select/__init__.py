"""Selection stage: strategies that read a feature cache and pick samples to label.

Nothing here imports torch at import time; strategies that need it (``gcn``)
import it inside their function.
"""

__all__ = ["Selection", "Strategy", "available_strategies", "get_strategy", "register", "select"]

_FROM_REGISTRY = ("Selection", "Strategy", "available_strategies", "get_strategy", "register")


def __getattr__(name: str):
    # Deferred so that the CLI can read mmal.select.params (option choices) without
    # loading NumPy, h5py and the strategies for `mmal --help`.
    if name == "select":
        from mmal.select.api import select

        return select
    if name in _FROM_REGISTRY:
        from mmal.select import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'mmal.select' has no attribute {name!r}")
