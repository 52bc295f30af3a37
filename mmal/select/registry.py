"""The one registry of selection strategies.

Built-in strategies register themselves with :func:`register` in
``mmal/select/strategies/<name>.py``. Third-party packages add strategies
through the ``mmal.strategies`` entry-point group; each entry point names a
:class:`Strategy` object (or a function decorated with :func:`register`).

A strategy's compute function has the signature::

    func(cache: Cache, budget: int, *, rng: numpy.random.Generator, xp, **params) -> Selection

It receives trusted input (the budget was checked against the unlabeled count,
the cache validated) and returns the chosen row positions in pick order.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from mmal.errors import SelectionError
from mmal.select import strategies

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mmal.strategies"


@dataclass
class Selection:
    """What a strategy returns.

    Attributes
    ----------
    positions : np.ndarray
        (B,) int64 row positions in the cache, in the order they were picked.
    diagnostics : dict of str to np.ndarray
        Optional per-sample arrays over the cache's unlabeled rows (in row order),
        e.g. BMMAL's ``phi``, ``rho`` and ``weights``; written next to the index file.
    summary : dict
        Optional JSON-serialisable aggregates (e.g. the paper's Fig. 6 numbers).
    """

    positions: np.ndarray
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Strategy:
    """A named selection strategy and its compute function.

    ``needs_mc_dropout``: the strategy reads the cache's MC-dropout logits, so
    its caches must be extracted with ``--mc-dropout T`` (checked before it runs).
    """

    name: str
    func: Callable[..., Selection]
    description: str = ""
    needs_mc_dropout: bool = False


_REGISTRY: dict[str, Strategy] = {}


def register(name: str, description: str = "", *, needs_mc_dropout: bool = False) -> Callable:
    """Decorator adding ``func`` to the registry under ``name``."""
    def decorate(func: Callable[..., Selection]) -> Callable[..., Selection]:
        if name in _REGISTRY and _REGISTRY[name].func is not func:
            raise SelectionError(f"strategy {name!r} is registered twice")
        _REGISTRY[name] = Strategy(name, func,
                                   description or (func.__doc__ or "").strip().split("\n")[0],
                                   needs_mc_dropout=needs_mc_dropout)
        return func
    return decorate


def _load_builtins() -> None:
    for module in pkgutil.iter_modules(strategies.__path__):
        importlib.import_module(f"{strategies.__name__}.{module.name}")


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the built-ins
            log.warning("could not load strategy %r from %s: %s", ep.name, ep.value, exc)
            continue
        if isinstance(obj, Strategy):
            _REGISTRY[ep.name] = obj
        elif callable(obj):
            _REGISTRY.setdefault(ep.name, Strategy(ep.name, obj, (obj.__doc__ or "").strip()))


def available_strategies() -> dict[str, Strategy]:
    """All strategies by name: built-ins and entry-point plugins."""
    _load_builtins()
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; the error lists the known names."""
    strategies = available_strategies()
    if name not in strategies:
        raise SelectionError(
            f"unknown strategy {name!r}; choose one of: {', '.join(strategies)}"
        )
    return strategies[name]
