"""The active-learning loop: many strategies and seeds from a shared round 0 (``mmal run``)."""

from mmal.loop.layout import RunLayout
from mmal.loop.run import Event, Failure, RunResult, run_comparison

__all__ = ["Event", "Failure", "RunLayout", "RunResult", "run_comparison"]
