"""The import graph of mmal, built from the code's own import statements, has no cycle.

Every ``import`` and ``from ... import`` counts, at module top or inside a
function alike: a deferred import hides a dependency, it does not remove it.
Imports under ``if TYPE_CHECKING:`` do not count: they never run, and a type
named in an annotation (a dataset adapter taking a ``Config``) is no load-time
dependency. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg`` (its ``__init__``). Parent packages that Python
initialises on the way to a submodule are not edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mmal

ROOT = Path(mmal.__file__).parent


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that module ``name`` (file ``path``) imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only = {id(n) for block in ast.walk(tree) if _is_type_checking_block(block)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in modules else base)
    return {m for m in found if m in modules and m != name}


def _is_type_checking_block(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``if typing.TYPE_CHECKING:``)."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# Modules the CLI and the selection stage load for work that needs no model: they must not pay
# torch's import (over a second) nor need it installed to read a cache or a workspace.
# mmal.select resolves its names lazily, so the selection stage is checked through its front
# door and every registered strategy module.
LIGHT_MODULES = ["mmal.config", "mmal.data", "mmal.workspace", "mmal.labels", "mmal.annotation",
                 "mmal.select.api", "mmal.cache", "mmal.cli", "mmal.report"]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_do_not_import_torch(module):
    code = (f"import sys, {module}; from mmal.select import available_strategies; "
            "available_strategies(); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT.parent, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", f"import {module} imports torch"


def test_config_does_not_import_datasets_or_pyarrow():
    """The kind table names the hf kind; its adapter imports datasets only when a pool loads."""
    code = "import sys, mmal.config; print(sorted({'datasets', 'pyarrow'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT.parent, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", "import mmal.config imports " + done.stdout.strip()


def test_mmal_has_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    detail = "; ".join(
        " / ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in found)
    assert not found, f"import cycles among mmal modules: {detail}"


# ----------------------------------------------------------------- the checker itself

def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "pkg"


@pytest.mark.parametrize(("files", "expected"), [
    ({"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n",
      "pkg/b.py": "def f():\n    from pkg.a import x\n"}, [["pkg.a", "pkg.b"]]),
    ({"pkg/__init__.py": "from pkg.a import x\n", "pkg/a.py": "from pkg import y\n"},
     [["pkg", "pkg.a"]]),
    ({"pkg/__init__.py": "", "pkg/sub/__init__.py": "from .m import x\n",
      "pkg/sub/m.py": "from .. import sub\n"}, [["pkg.sub", "pkg.sub.m"]]),
    ({"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n", "pkg/b.py": "import os\n"}, []),
    ({"pkg/__init__.py": "", "pkg/a.py": "import pkg.b\n",
      "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"}, []),
])
def test_cycle_checker_finds_deferred_and_package_cycles(tmp_path, files, expected):
    assert cycles(import_graph(_write_package(tmp_path, files))) == expected
