"""``index.html``: the whole report as one self-contained page.

Everything the page shows is in the file: the tables as HTML, the plots as PNG
``data:`` URIs, CSS inline with the system font stack, and no script. It loads
nothing from the network and reads on a phone: the viewport follows the
device, tables scroll sideways inside their own box, images shrink to fit.
Every value is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from mmal import __version__
from mmal.report.collect import RunData
from mmal.report.labels import LABELS_NOTE
from mmal.report.tables import RESULTS_NOTE, TTEST_NOTE, Table

#: Caption of each plot ``make_report`` draws; another PNG is captioned by its name.
CAPTIONS = {
    "accuracy.png": "Test top-1 vs labeled samples: the fused head and each unimodal head "
                    "(mean ± std over seeds).",
    "contribution.png": "Modality contribution Φ per round: mean Shapley contribution at the "
                        "true class on the test split (mean ± std over seeds).",
    "weaker_weight.png": "BMMAL's weight of the weaker modality in the sub-pool each modality "
                         "dominates, per round (mean ± std over seeds).",
    "labels_needed.png": "Labels each strategy needs for its mean test top-1 to reach the "
                         "target, per head; bar notes: labels saved relative to random.",
    "ttest.png": "Pairwise t-tests: rounds where the row strategy beats the column strategy; "
                 "grey = never compared.",
}

_CSS = """
body{margin:0;background:#fff;color:#1b1b1b;
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:72rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0}
h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d6d6d6;padding:.25rem .6rem;text-align:left;white-space:nowrap}
thead th,tbody th{background:#f3f3f3}
table.facts th,table.facts td{white-space:normal;overflow-wrap:anywhere}
figure{margin:1.5rem 0}
img{display:block;max-width:100%;height:auto}
figcaption{font-size:.9rem;color:#444}
pre{overflow-x:auto;background:#f6f6f6;padding:.75rem;
font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
"""


def render_page(data: RunData, *, workspace: str, results: Table, ttests: Table,
                ttest_heading: str, plots: Sequence[Path], warnings: Sequence[str],
                config: tuple[str, str] | None, labels_needed: Table | None = None) -> str:
    """The HTML text of ``index.html``.

    Parameters
    ----------
    results, ttests : Table
        The tables of results.md, cell for cell.
    plots : paths of the PNG files to embed, in page order.
    config : (file name, text) of the run's base config, or None.
    labels_needed : Table or None
        The labels-needed table of results.md (:func:`mmal.report.labels.labels_table`);
        the "Labels needed" section is written only when one is given.
    """
    parts = [_section("run", "Run", _facts_table(data, workspace))]
    if warnings:
        parts.append(_section("missing", "Missing", "<ul>" + "".join(
            f"<li>{_e(line)}</li>" for line in warnings) + "</ul>"))
    parts.append(_section("results", "Results", f"<p>{_e(RESULTS_NOTE)}</p>"
                          + _table(results, "results-table")))
    parts.append(_section("ttests", ttest_heading, f"<p>{_e(TTEST_NOTE)}</p>"
                          + _table(ttests, "ttest-table", row_heads=True)))
    if labels_needed is not None:
        parts.append(_section("labels-needed", "Labels needed", f"<p>{_e(LABELS_NOTE)}</p>"
                              + _table(labels_needed, "labels-needed-table")))
    parts.append(_section("plots", "Plots", "".join(_figure(p) for p in plots)))
    if config is not None:
        name, text = config
        parts.append(_section("config", f"Config ({name})",
                              f"<p>Each seed k ran this with al.seed = k and the run's budgets."
                              f"</p><pre>{_e(text) or '(empty file)'}</pre>"))
    title = f"mmal report: {Path(workspace).name or workspace}"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{_e(title)}</h1>\n" + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")


def run_facts(data: RunData, workspace: str) -> list[tuple[str, str]]:
    """(label, value) rows of the Run section: what was run, with what, by which mmal."""
    plan, status = data.plan, data.status
    absent = "not recorded in runs/plan.json" if plan else "not recorded (no runs/plan.json)"

    def planned(key: str) -> str:
        return str(plan[key]) if key in plan else absent

    if status:
        failures = status.get("failures") or []
        last = (f"{len(status.get('completed') or [])} trajectories completed, "
                f"{len(failures)} failed")
    else:
        last = "not recorded (no runs/status.json)"
    return [
        ("workspace", workspace),
        ("strategies", ", ".join(data.strategies)),
        ("seeds", ", ".join(map(str, data.seeds))),
        ("rounds", f"0-{data.rounds} ({data.rounds} selection rounds)"),
        ("initial labeled set", planned("initial_budget")),
        ("budget per round", planned("budget")),
        ("MC dropout passes", planned("mc_dropout")),
        ("last run", last),
        ("mmal version of the run", planned("mmal_version")),
        ("report written by", f"mmal {__version__}"),
    ]


def _facts_table(data: RunData, workspace: str) -> str:
    rows = "".join(f"<tr><th scope=\"row\">{_e(k)}</th><td>{_e(v)}</td></tr>"
                   for k, v in run_facts(data, workspace))
    return f"<div class=\"scroll\"><table class=\"facts\" id=\"run-table\">{rows}</table></div>"


def _table(table: Table, table_id: str, *, row_heads: bool = False) -> str:
    """A table in a box that scrolls sideways; ``row_heads``: the first cell heads its row."""
    head = "".join(f"<th scope=\"col\">{_e(c)}</th>" for c in table.head)
    body = []
    for cells in table.body:
        first = (f"<th scope=\"row\">{_e(cells[0])}</th>" if row_heads
                 else f"<td>{_e(cells[0])}</td>") if cells else ""
        body.append("<tr>" + first + "".join(f"<td>{_e(c)}</td>" for c in cells[1:]) + "</tr>")
    return (f"<div class=\"scroll\"><table id=\"{_e(table_id)}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _figure(path: Path) -> str:
    caption = CAPTIONS.get(path.name, path.name)
    uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure id=\"{_e(path.stem)}\"><img src=\"{_e(uri)}\" alt=\"{_e(caption)}\">"
            f"<figcaption>{_e(path.name)}: {_e(caption)}</figcaption></figure>")


def _section(section_id: str, heading: str, body: str) -> str:
    return f"<section id=\"{_e(section_id)}\">\n<h2>{_e(heading)}</h2>\n{body}\n</section>"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
