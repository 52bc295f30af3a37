"""docs/architecture.md's table of rooms is the rule: the code imports only what it allows.

A room is a top-level module or package of ``mmal/``. The table's last column
lists the rooms a room may import; "every room above" allows every room in an
earlier row. The import graph is the one ``tests/test_imports.py`` builds from
the code (deferred imports count, ``TYPE_CHECKING`` imports do not).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_imports import ROOT, import_graph

DOC = Path(__file__).parents[1] / "docs" / "architecture.md"
_ROW = re.compile(r"^\| `([\w.]+)` \| .* \| (.*) \|$")


def room_of(module: str) -> str:
    """``mmal.data.pool`` -> ``data``; ``mmal`` -> ``mmal``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def documented_rules(text: str) -> dict[str, set[str]]:
    """Room -> rooms it may import, in table order, from the architecture page."""
    rules: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if not match:
            continue
        room, allowed = match.groups()
        if allowed.strip() == "every room above":
            rules[room] = set(rules)
        else:
            rules[room] = set(re.findall(r"`([\w.]+)`", allowed))
    return rules


def violations(graph: dict[str, set[str]], rules: dict[str, set[str]]) -> list[str]:
    """``"a.b imports c.d (room c)"`` for every import between rooms the rules do not allow."""
    out = []
    for module, imported in sorted(graph.items()):
        room = room_of(module)
        for target in sorted(imported):
            other = room_of(target)
            if other != room and other not in rules.get(room, set()):
                out.append(f"{module} imports {target} (room {other!r} is not in {room!r}'s row)")
    return out


def test_every_room_has_a_row_and_every_row_a_room():
    rooms = {room_of(m) for m in import_graph()}
    rules = documented_rules(DOC.read_text(encoding="utf-8"))
    assert rooms == set(rules), (f"rooms without a row: {sorted(rooms - set(rules))}; rows "
                                 f"without a room: {sorted(set(rules) - rooms)}")
    named = set().union(*rules.values())
    assert named <= set(rules), f"rows name unknown rooms: {sorted(named - set(rules))}"


def test_code_imports_only_what_the_architecture_page_allows():
    rules = documented_rules(DOC.read_text(encoding="utf-8"))
    found = violations(import_graph(), rules)
    assert not found, "imports the table in docs/architecture.md does not allow:\n" + \
        "\n".join(found)


def test_the_stages_do_not_import_each_other():
    rules = documented_rules(DOC.read_text(encoding="utf-8"))
    stages = {"select", "train", "extract"}
    for stage in stages:
        assert not rules[stage] & (stages - {stage}), f"{stage}'s row allows another stage"
    assert not rules["select"] & {"workspace", "data", "models", "train"}


def test_the_checker_flags_an_import_outside_the_table(tmp_path):
    text = ("| `low` | x | — |\n| `high` | y | `low` |\n| `top` | z | every room above |\n")
    rules = documented_rules(text)
    assert rules == {"low": set(), "high": {"low"}, "top": {"low", "high"}}
    graph = {"p.low.a": {"p.high.b"}, "p.high.b": {"p.low.a"}, "p.top": {"p.low.a", "p.high.b"}}
    assert violations(graph, rules) == [
        "p.low.a imports p.high.b (room 'high' is not in 'low''s row)"]
    assert ROOT.name == "mmal"
