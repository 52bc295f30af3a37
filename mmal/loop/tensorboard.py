"""``mmal run --tensorboard``: each trajectory's test metrics per round as one TensorBoard run.

``runs/tensorboard/<strategy>-seed<k>/`` holds, for every round of the
trajectory that has a ``metrics.json``, the tags of
:func:`mmal.train.tensorboard.metric_scalars` (``test/top1/<head>``,
``test/map/<head>`` for multi-label data, ``test/contribution/<modality>``) at
step = the round's number of labeled samples. A run is rewritten whole from
those files whenever its trajectory finishes a round, so a resumed or
extended ``mmal run`` shows each round once. ``tensorboard --logdir
runs/tensorboard`` overlays the strategies and seeds.
"""

from __future__ import annotations

from pathlib import Path

from mmal.loop.layout import RunLayout
from mmal.workspace import list_rounds, read_metrics, round_paths

# mmal.train is imported inside the functions: it loads torch, and `mmal report` imports
# this package without training anything.


def require_tensorboard() -> None:
    """ConfigError naming ``pip install 'mmal[tensorboard]'`` when tensorboard is missing."""
    from mmal.train.tensorboard import writer_class

    writer_class()


def write_trajectory_events(layout: RunLayout, strategy: str, seed: int) -> Path:
    """Rewrite the TensorBoard run of (``strategy``, ``seed``) from its rounds' metrics; its folder.

    Rounds without ``metrics.json`` (not trained yet) are left out.
    """
    from mmal.train.tensorboard import fresh_writer, metric_scalars

    folder = layout.trajectory(strategy, seed)
    points = []
    for r in list_rounds(folder):
        path = round_paths(folder, r).metrics
        if path.is_file():
            metrics = read_metrics(path)
            points.append((int(metrics["num_labeled"]), metric_scalars(metrics["test"])))
    out = layout.tensorboard(strategy, seed)
    writer = fresh_writer(out)
    try:
        for step, scalars in points:
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    return out
