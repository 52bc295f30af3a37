"""Every command documents itself: help text, an example, each option explained with its default."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mmal.cli import cli


def _commands():
    return sorted(cli.commands.items())


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in cli.commands:
        assert name in result.output


@pytest.mark.parametrize("name,command", _commands(), ids=[n for n, _ in _commands()])
def test_command_help_explains_every_option(name, command):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in (command.help or ""), f"`mmal {name} --help` has no example"
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        assert param.help, f"`mmal {name}` option {param.opts} has no help text"
        has_default = (param.default not in (None, False, ()) and not param.is_flag
                       and not param.required)
        if has_default and not param.multiple:
            assert param.show_default, f"`mmal {name}` option {param.opts} hides its default"


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "mmal" in result.output


def test_cli_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, mmal.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("args,param", [
    (["select", "-s", "random", "-b", "5", "--cache", "pool.h5", "--out", "", "--force"], "--out"),
    (["select", "-s", "random", "-b", "5", "--cache", ""], "--cache"),
    (["synth", ""], "PATH"),
    (["inspect", ""], "PATH"),
    (["init", "ws", "--config", ""], "--config"),
    (["next", "--selection", ""], "--selection"),
    (["export", "sel.json", "--out", "", "--force"], "--out"),
    (["export", ""], "SELECTION"),
    (["label", "--round", "0", ""], "FILE"),
])
def test_an_empty_file_path_is_a_usage_error_not_the_current_folder(args, param):
    """`--out ''` became Path('.'): a ValueError traceback in select, a write to '.' elsewhere."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (f"Error: Invalid value for '{param}': is empty; "
                                              "pass a file name")
