"""Selection stage: strategies that read a feature cache and pick samples to label.

Nothing here imports torch at import time; strategies that need it (``gcn``)
import it inside their function.
"""

from mmal.select.api import select
from mmal.select.registry import Selection, Strategy, available_strategies, get_strategy, register

__all__ = ["Selection", "Strategy", "available_strategies", "get_strategy", "register", "select"]
