"""Uniform random sampling of unlabeled samples (the passive-learning baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.registry import Selection, register
from mmal.select.scoring import unlabeled_positions


@register("random", "uniform random sample of the unlabeled pool")
def select_random(cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np) -> Selection:
    """Pick ``budget`` unlabeled rows uniformly without replacement."""
    candidates = unlabeled_positions(cache)
    return Selection(positions=rng.choice(candidates, size=budget, replace=False).astype(np.int64))
