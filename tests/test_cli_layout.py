"""The command line's layout: one module per command group, bounds checked by argparse, one
--dtype flag (the old --float32 and --float64 deprecated), x64 switched on in one place."""

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from clitools import run_cli

from attnflow.cli import main

CLI = pathlib.Path(__file__).resolve().parents[1] / "attnflow" / "cli"


def test_main_is_a_registry():
    lines = (CLI / "_main.py").read_text().splitlines()
    assert len(lines) <= 200, len(lines)


def test_no_handler_rechecks_what_argparse_checks():
    """--n, --d, --dims and --saves are bounded by their argparse types, not in the handlers."""
    pattern = re.compile(r"args\.(n|d|dims|saves)\b[^\n]*<|min\(args\.dims\)")
    found = [
        f"{path.name}:{number}"
        for path in sorted(CLI.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_x64_is_switched_on_in_one_place():
    uses = sum(path.read_text().count("jax_enable_x64") for path in CLI.glob("*.py"))
    assert uses == 1


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["phase-diagram", "--n", "1"], "--n"),
        (["simulate", "--d", "1"], "--d"),
        (["normalization", "--n", "1"], "--n"),
        (["search", "value-groups", "--n", "1"], "--n"),
        (["meanfield", "--saves", "1"], "--saves"),
        (["ftle", "--d", "one"], "--d"),
    ],
)
def test_bounds_are_refused_by_argparse_naming_the_flag(tmp_path, capsys, argv, flag):
    status, io = run_cli([*argv, "--out", str(tmp_path / "x.npz")], capsys)
    assert status == 2 and not (tmp_path / "x.npz").exists()
    assert f"error: argument {flag}: expected an integer from 2 to 2147483647, got " in io.err
    assert len(io.err.strip().splitlines()) == 1


def test_dtype_float32_on_a_cheap_command(tmp_path, capsys):
    out = tmp_path / "l.npz"
    argv = ["long-context", "--points", "6", "--dtype", "float32", "--no-plot", "--out", str(out)]
    status, io = run_cli(argv, capsys)
    assert status == 0, io.err
    with np.load(out) as data:
        assert data["cosine"].dtype == np.float32 and data["cosine"].shape == (6, 6)
        assert np.all(np.isfinite(data["cosine"]))
    assert "output cosine 1.000000, 0.800000, 0.500000" in io.out  # the limits in float32


def test_dtype_is_on_every_command_and_the_old_flags_are_hidden(capsys):
    from attnflow.cli._main import _parser

    parser = _parser()
    commands = parser._subparsers._group_actions[0].choices
    searches = commands["search"]._subparsers._group_actions[0].choices
    every = {**{k: v for k, v in commands.items() if k != "search"}, **searches}
    assert len(every) == 16
    for name, command in every.items():
        text = command.format_help()
        assert "--dtype {float32,float64}" in text, name
        assert "--float32" not in text and "--float64" not in text, name
    assert "floating-point type (float32)" in commands["pretrained-clusters"].format_help()


def test_float32_still_works_with_a_deprecation_warning(tmp_path):
    out = tmp_path / "s.npz"
    argv = ["simulate", "--float32", "--n", "4", "--t1", "1", "--saves", "3", "--out", str(out)]
    with pytest.warns(DeprecationWarning, match="--float32 is deprecated.*use --dtype float32"):
        assert main(argv) == 0
    with np.load(out) as data:
        assert data["xs"].dtype == np.float32


def test_the_deprecation_is_shown_and_can_be_made_an_error(tmp_path):
    """Shown by Python's default filters (it points at the caller of `main`, the `__main__`
    script); under `-W error::DeprecationWarning` the run stops with one line."""
    argv = ["-m", "attnflow.cli", "simulate", "--float32", "--n", "3", "--t1", "1"]
    argv += ["--saves", "2", "--out", str(tmp_path / "s.npz")]
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "DeprecationWarning: --float32 is deprecated" in done.stderr
    assert "use --dtype float32" in done.stderr and "float32" in done.stdout
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "attnflow simulate: error: --float32 is deprecated and will be removed in the next "
        "release; use --dtype float32"
    )


# Run in a fresh interpreter: every command's --help, --version and a refused option, then the
# modules that were imported. JAX and matplotlib take seconds to import; none of this needs them.
_LIGHT = """
import contextlib, io, sys
from attnflow.cli import main
from attnflow.cli._main import _parser

commands = _parser()._subparsers._group_actions[0].choices
searches = commands["search"]._subparsers._group_actions[0].choices
argvs = [["--help"], ["--version"], ["search", "--help"], ["phase-diagram", "--n", "1"]]
argvs += [[name, "--help"] for name in commands] + [["search", s, "--help"] for s in searches]
for argv in argvs:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(len(argvs), *sorted(m for m in ("jax", "matplotlib", "numpy", "scipy") if m in sys.modules))
"""


def test_help_version_and_refused_options_import_neither_jax_nor_matplotlib():
    done = subprocess.run(
        [sys.executable, "-c", _LIGHT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    count, *imported = done.stdout.split()
    assert int(count) == 21 and imported == [], done.stdout


def test_the_choices_offered_before_jax_are_the_api_tables():
    from attnflow import _names, concentration, fields, studies

    assert _names.MODELS == tuple(fields.MODELS)
    assert _names.CLOSED_FORM == tuple(fields.KINDS)
    assert _names.WEIGHTS == studies.WEIGHTS and _names.INITS == concentration.INITS


def test_each_command_says_how_long_its_default_run_takes():
    from attnflow.cli._main import _parser
    from attnflow.cli._options import _add_globals

    parser = _parser()
    _add_globals(parser)
    commands = parser._subparsers._group_actions[0].choices
    searches = commands["search"]._subparsers._group_actions[0].choices
    every = {**{k: v for k, v in commands.items() if k != "search"}, **searches}
    for name, command in every.items():
        assert re.search(
            r"Default run: about [\d.]+(-[\d.]+)? (s|min) on a", command.format_help()
        ), name
