"""Plots: no title, label or note runs past the edge of its figure."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from mmal.report import make_report, plots
from tests.report.test_report import _write_run

# Long modality names: the panel titles that name them are the ones that used to be clipped.
LONG = ["audio-spectrogram", "video-frames"]


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """Every figure make_report draws, kept after saving (name -> matplotlib Figure)."""
    ws = tmp_path_factory.mktemp("plots")
    _write_run(ws, mods=LONG)
    drawn, real = {}, plots._save

    def keep(fig, path):
        drawn[path.name] = fig
        return real(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", keep)
        make_report(ws, ws / "out")
    return drawn


def test_every_plot_is_checked(figures):
    assert set(figures) == {"accuracy.png", "contribution.png", "weaker_weight.png",
                            "ttest.png", "labels_needed.png"}


@pytest.mark.parametrize("name", ["accuracy.png", "contribution.png", "weaker_weight.png",
                                  "ttest.png", "labels_needed.png"])
def test_no_text_is_clipped(figures, name):
    fig = figures[name]
    FigureCanvasAgg(fig)  # pyplot.close detached the figure's canvas: draw it again, same layout
    fig.dpi = 110  # the PNG's
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
    shown = [t for t in texts if t.get_visible() and t.get_text()]
    assert fig.axes[0].title in shown
    boxes = [(repr(t.get_text()), t.get_window_extent(renderer)) for t in shown]
    # everything an axes draws: tick labels (those in view), axis labels, legend, colorbar
    boxes += [(f"axes {i}", ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    for what, box in boxes:
        inside = (box.x0 >= page.x0 - 0.5 and box.x1 <= page.x1 + 0.5
                  and box.y0 >= page.y0 - 0.5 and box.y1 <= page.y1 + 0.5)
        assert inside, f"{name}: {what} at {box.bounds} leaves the figure {page.bounds}"


def test_weaker_weight_titles_name_the_long_modalities(figures):
    titles = [ax.title.get_text().replace("\n", " ") for ax in figures["weaker_weight.png"].axes]
    assert titles == [f"sub-pool dominated by {m} ({share}% of the pool)"
                      for m, share in zip(LONG, (70, 30), strict=True)]
