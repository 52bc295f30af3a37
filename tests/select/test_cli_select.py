"""``mmal select`` and ``mmal strategies`` through click's CliRunner."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mmal.cache import read_index
from mmal.cli import cli
from mmal.fingerprint import file_fingerprint


@pytest.fixture
def workspace(tmp_path, cache_factory):
    """A workspace whose round 1 has a cache and round 2 has none yet."""
    root = tmp_path / "ws"
    (root / "rounds" / "001").mkdir(parents=True)
    (root / "rounds" / "002").mkdir(parents=True)
    (root / "mmal.toml").write_text("")
    cache = root / "rounds" / "001" / "cache.h5"
    shutil.copy(cache_factory("concat2"), cache)
    # the round's checkpoint the cache was "extracted" from (select checks the fingerprint)
    (root / "rounds" / "001" / "model.pt").write_bytes(b"round-1 checkpoint")
    with h5py.File(cache, "r+") as f:
        f.attrs["model_fingerprint"] = file_fingerprint(root / "rounds" / "001" / "model.pt")
    return root


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_select_from_newest_round_with_a_cache(workspace):
    result = run("select", "--strategy", "bmmal", "--budget", "6", "--workspace", str(workspace))
    assert result.exit_code == 0, result.output
    out = workspace / "rounds" / "001" / "selections" / "bmmal-b6-s0.json"
    assert f"-> {out}" in result.output
    assert (out.parent / "bmmal-b6-s0.diagnostics.npz").exists()
    assert len(read_index(out)) == 6
    # round 2 exists but has no cache yet: say so rather than silently use round 1
    assert ("note: round 002 has no cache.h5 yet (`mmal train`, `mmal extract`); selecting from "
            "round 001's") in result.output
    explicit = run("select", "-s", "bmmal", "-b", "6", "--round", "1", "--force", "--workspace",
                   str(workspace))
    assert explicit.exit_code == 0 and "note:" not in explicit.output


def test_select_finds_the_workspace_from_the_current_directory(workspace, monkeypatch):
    monkeypatch.chdir(workspace / "rounds")
    result = run("select", "-s", "badge", "-b", "3", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert (workspace / "rounds" / "001" / "selections" / "badge-b3-s4.json").exists()


def test_same_command_same_ids_and_force(workspace, tmp_path):
    args = ["select", "-s", "bmmal", "-b", "5", "--cache", str(workspace / "rounds/001/cache.h5")]
    first = run(*args, "--out", str(tmp_path / "a.json"))
    second = run(*args, "--out", str(tmp_path / "b.json"))
    assert first.exit_code == second.exit_code == 0
    np.testing.assert_array_equal(read_index(tmp_path / "a.json").ids, read_index(tmp_path / "b.json").ids)
    again = run(*args, "--out", str(tmp_path / "a.json"))
    assert again.exit_code == 1
    assert again.output == f"Error: {tmp_path / 'a.json'}: already exists; pass --force to replace it\n"
    assert run(*args, "--out", str(tmp_path / "a.json"), "--force").exit_code == 0


def test_budget_too_large_is_one_error_line(workspace):
    cache = workspace / "rounds" / "001" / "cache.h5"
    result = run("select", "-s", "bmmal", "-b", "500", "--cache", str(cache))
    assert result.exit_code == 1
    assert result.output == (f"Error: budget=500 exceeds the 120 unlabeled samples in {cache}; "
                             "lower --budget to at most 120\n")


def test_unknown_strategy_is_one_error_line(workspace):
    result = run("select", "-s", "nope", "-b", "5", "--workspace", str(workspace))
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown strategy 'nope'; choose one of: ")
    assert "bmmal" in result.output and result.output.count("\n") == 1


def test_round_without_cache_and_conflicting_options(workspace):
    result = run("select", "-s", "bmmal", "-b", "5", "--workspace", str(workspace), "--round", "2")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {workspace / 'rounds' / '002' / 'cache.h5'}: no such cache file")
    both = run("select", "-s", "bmmal", "-b", "5", "--cache", "x.h5", "--round", "1")
    assert both.exit_code == 2
    assert "pass either --cache or --round/--workspace, not both" in both.output


def test_params_are_parsed_and_checked(workspace, tmp_path):
    cache = str(workspace / "rounds" / "001" / "cache.h5")
    ok = run("select", "-s", "bmmal", "-b", "4", "--cache", cache, "-p", "block_size=2",
             "--precision", "float64", "--out", str(tmp_path / "p.json"))
    assert ok.exit_code == 0, ok.output
    assert read_index(tmp_path / "p.json").provenance["params"] == {"precision": "float64", "block_size": 2}
    bad = run("select", "-s", "bmmal", "-b", "4", "--cache", cache, "-p", "k=3")
    assert bad.exit_code == 1
    assert bad.output == "Error: strategy 'bmmal' has no parameter 'k'; it takes: precision, block_size\n"
    twice = run("select", "-s", "bmmal", "-b", "4", "--cache", cache, "-p", "precision=float64",
                "--precision", "float32")
    assert twice.exit_code == 1
    assert twice.output == "Error: -p precision=float64 and --precision float32 conflict; use one\n"
    not_taken = run("select", "-s", "random", "-b", "4", "--cache", cache, "--precision", "float64")
    assert not_taken.exit_code == 1
    assert not_taken.output == ("Error: --precision applies only to strategies with a precision "
                                "parameter (badge, bmmal); drop it for 'random'\n")
    malformed = run("select", "-s", "bmmal", "-b", "4", "--cache", cache, "-p", "block_size")
    assert malformed.exit_code == 2 and "is not key=value" in malformed.output


def test_strategies_lists_the_registry():
    result = run("strategies")
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert {"badge", "bmmal", "random"} <= set(names)


def test_help_has_example_and_defaults():
    result = run("select", "--help")
    assert result.exit_code == 0
    assert "mmal select --strategy bmmal --budget 500" in result.output
    assert "[default: auto]" in result.output and "[default: 0; x>=0]" in result.output


@pytest.mark.parametrize("args,message", [
    (["-p", "block_size=0"], "strategy 'bmmal' rejected its parameters {'block_size': 0}:"),
    (["-p", "block_size=abc"], "strategy 'bmmal' rejected its parameters {'block_size': 'abc'}:"),
    (["--seed", "-1"], "Invalid value for '--seed'"),
    (["--out", "/proc/no/x.json"], "/proc/no"),
])
def test_bad_values_give_one_error_line(workspace, args, message):
    result = run("select", "-s", "bmmal", "-b", "5", "--workspace", str(workspace), *args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert message in result.output, result.output


def _documented_select_commands():
    import re
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "docs"
    commands = []
    for name in ("selection.md", "baselines.md"):
        text = (root / name).read_text()
        inline = re.findall(r"`(mmal select\b[^`]*)`", text)
        blocks = re.findall(r"^(mmal select\b.*)$", text, flags=re.MULTILINE)
        for command in inline + blocks:
            args = shlex.split(command.split("#")[0])[2:]
            if args:  # a bare `mmal select` names the command, it is no example
                commands.append((name, args))
    return commands


def test_every_documented_select_command_parses():
    from mmal.commands.select import select_command

    commands = _documented_select_commands()
    assert len(commands) >= 4  # the docs' examples were found
    for name, args in commands:
        try:
            select_command.make_context("select", list(args))
        except Exception as exc:  # click.UsageError and friends
            pytest.fail(f"docs/{name}: `mmal select {' '.join(args)}` does not parse: {exc}")
