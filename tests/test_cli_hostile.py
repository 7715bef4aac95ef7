"""Every numeric option of every command against a table of hostile values
(`tests/data/hostile_cli.json`): each is refused before anything is computed, with one line on
stderr, exit status 2 and no file written; or it lies in the option's domain, and then the
command runs (`-m slow`) to its end or to a one-line error, never a traceback.

A command is fuzzed by adding it to the table's `commands`, with the options that make its run
tiny; its numeric options are read from its parser."""

import argparse
import functools
import importlib.util
import json
import traceback
from pathlib import Path

import pytest

from attnflow.cli import _main

TABLE = json.loads((Path(__file__).parent / "data" / "hostile_cli.json").read_text())
VALUES = TABLE["values"]
COMMANDS = TABLE["commands"]
if not all(importlib.util.find_spec(name) for name in ("safetensors", "tokenizers")):
    COMMANDS = {name: base for name, base in COMMANDS.items() if "{checkpoint}" not in base}
# Options whose values are names or paths, not numbers: their own tests cover them.
NOT_NUMERIC = {"out", "plot", "movie", "solver", "model", "text", "file", "help"}


def _command_parser(words: list[str]) -> argparse.ArgumentParser:
    parser = _main._parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def numeric_options(command: str) -> list[str]:
    """The options of `command` that take a number (or numbers)."""
    return [
        action.option_strings[-1]
        for action in _command_parser(command.split())._actions
        if action.option_strings
        and action.nargs != 0
        and not action.choices
        and action.dest not in NOT_NUMERIC
    ]


CASES = [
    (command, option, value)
    for command in COMMANDS
    for option in numeric_options(command)
    for value in VALUES
]


class Accepted(Exception):
    """Raised where the command would start computing: every check has passed."""


@functools.cache
def _checkpoint() -> str:
    """A tiny random BERT checkpoint folder, for `{checkpoint}` in the table (written once)."""
    import tempfile

    import attnflow.pretrained as ap

    folder = Path(tempfile.mkdtemp(prefix="attnflow-hostile-")) / "ckpt"
    return str(ap.write_random_checkpoint(folder))


def _argv(command: str, option: str, value: str, folder: Path) -> list[str]:
    base = [_checkpoint() if word == "{checkpoint}" else word for word in COMMANDS[command]]
    if option in base:  # the hostile value replaces the tiny one (and its extra words)
        at = base.index(option)
        end = next((i for i in range(at + 1, len(base)) if base[i].startswith("--")), len(base))
        del base[at:end]
    out = folder / "out.npz"
    return [*command.split(), *base, f"{option}={value}", "--out", str(out), "--no-plot"]


def _outcome(argv, capsys) -> str:
    """'accepted' if `argv` passed every check (see `stop_before_computing`), 'refused' for a
    one-line exit 2; otherwise raise with what went wrong."""
    try:
        status = _main.main(argv)
    except SystemExit as exit:
        status = exit.code
    except Accepted:
        return "accepted"
    err = capsys.readouterr().err
    assert status == 2, (argv, status, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    return "refused"


def test_hostile_values_are_refused_at_once_or_lie_in_the_domain(tmp_path, capsys, monkeypatch):
    """The whole table (reported in the assertion message if it fails): every hostile value is
    refused before any computation with one line and status 2, and writes nothing, except those
    that lie in the option's domain, which are listed and must be of the expected kinds."""
    assert len(CASES) > 1000  # every command's options, every value
    check = _main._check_outputs

    def stop_before_computing(args):
        check(args)
        raise Accepted

    monkeypatch.setattr(_main, "_check_outputs", stop_before_computing)
    accepted = []
    for command, option, value in CASES:
        folder = tmp_path / f"{len(accepted)}"
        folder.mkdir(exist_ok=True)
        try:
            outcome = _outcome(_argv(command, option, value, folder), capsys)
        except Exception:
            pytest.fail(f"{command} {option}={value!r}:\n{traceback.format_exc()}")
        assert not any(folder.iterdir()), (command, option, value, list(folder.iterdir()))
        if outcome == "accepted":
            accepted.append((command, option, value))
    # What may pass the checks: a zero where zero is allowed, tiny or huge values of parameters
    # whose domain the library checks (beta, delta, margins...), never a non-finite or
    # malformed number, never a count or seed out of range.
    assert {value for _, _, value in accepted} <= IN_SOME_DOMAIN, accepted
    assert len(accepted) < len(CASES) // 4, len(accepted)


# The values of the table that some options take: zero, a negative seed, a comma-separated
# list, and finite magnitudes (1e-300 to 1e300) of parameters whose domain is only bounded by
# what the library checks (beta, delta, margins, tolerances).
IN_SOME_DOMAIN = {"-0", "-1", "1e-300", "1e-9", "1e9", "1e300", "99999999999999999999999", "1,5"}


def accepted_cases() -> list[tuple[str, str, str]]:
    """The cases of the table that pass every check, found as the fast test finds them."""
    import contextlib
    import io
    import tempfile

    check, found = _main._check_outputs, []

    def stop_before_computing(args):
        check(args)
        raise Accepted

    _main._check_outputs = stop_before_computing
    try:
        with tempfile.TemporaryDirectory() as folder:
            for command, option, value in CASES:
                argv = _argv(command, option, value, Path(folder))
                with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
                    try:
                        _main.main(argv)
                    except Accepted:
                        found.append((command, option, value))
    finally:
        _main._check_outputs = check
    return found


@pytest.mark.slow
@pytest.mark.parametrize("command, option, value", accepted_cases())
def test_an_accepted_hostile_value_runs_to_the_end_or_one_line(command, option, value, tmp_path):
    """The hostile values that lie in an option's domain, run for real as the script runs them:
    a finished run (exit 0) or a one-line error (exit 2), never a traceback, within 3 minutes."""
    import subprocess
    import sys

    argv = [*_argv(command, option, value, tmp_path), "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "attnflow", *argv], capture_output=True, text=True, timeout=180
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode in (0, 2), (done.returncode, done.stderr[-3000:])
    if done.returncode == 2:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "out.npz").exists()


OUT_OF_STEPS = (
    "Above is the stack outside of JIT. Below is the stack inside of JIT:\n"
    '  File "diffrax/_integrate.py", line 1542, in diffeqsolve\n'
    "equinox.EquinoxRuntimeError: The maximum number of solver steps was reached. Try "
    "increasing `max_steps`.\n\n-------------------\n\nAn error occurred during the runtime"
)


def test_a_solver_out_of_steps_is_one_line_naming_what_ran_and_what_to_try(
    tmp_path, capsys, monkeypatch
):
    import equinox as eqx

    import attnflow as af

    def out_of_steps(*args, **kwargs):
        raise eqx.EquinoxRuntimeError(OUT_OF_STEPS)

    monkeypatch.setattr(af.stability, "lyapunov_spectrum", out_of_steps)
    out = tmp_path / "l.npz"
    argv = ["lyapunov", "--model", "USA", "--beta", "100", "--dtype", "float32", "--out", str(out)]
    try:
        status = _main.main(argv)
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "the ODE solver reached its maximum number of steps" in err
    assert "model USA, beta 100, t1 100, dtype float32" in err
    for remedy in ("a smaller --beta", "a shorter --t1", "--solver layers", "--dtype float64"):
        assert remedy in err
    assert not out.exists()


def test_a_failure_inside_the_computation_leaves_no_partial_folder(tmp_path, capsys, monkeypatch):
    import attnflow as af

    def failing(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 7.45GiB.")

    monkeypatch.setattr(af, "phase_diagram", failing)
    out = tmp_path / "pd.npz"
    argv = ["phase-diagram", *COMMANDS["phase-diagram"], "--out", str(out)]
    try:
        status = _main.main(argv)
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and err.strip() == (
        "attnflow phase-diagram: error: RESOURCE_EXHAUSTED: Out of memory while trying to "
        "allocate 7.45GiB."
    )
    assert list(tmp_path.iterdir()) == []


def test_the_float32_gamma_curve_failing_keeps_the_finished_sweep(tmp_path, capsys):
    """Beyond beta about 500 the equiangular solve cannot finish in float32: Gamma is NaN
    there, reported as unavailable, and the diagram is written."""
    out = tmp_path / "pd.npz"
    argv = ["phase-diagram", *COMMANDS["phase-diagram"], "--dtype", "float32"]
    argv += ["--beta-max", "1e4", "--out", str(out), "--no-plot"]
    try:
        status = _main.main(argv)
    except SystemExit as exit:
        status = exit.code
    io = capsys.readouterr()
    assert status == 0, io.err
    assert "(Gamma: unavailable in float32 at this beta)" in io.out
    import numpy as np

    with np.load(out) as data:
        assert np.isfinite(data["gamma"][0]) and np.isnan(data["gamma"][-1])
        assert np.isfinite(data["prob"]).all()
