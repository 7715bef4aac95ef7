"""`attnflow <command> ...`: the registry of command groups, and `main`, the one place where
the dtype is applied and where errors become one-line messages."""

import argparse
import functools
import sys

from .._deprecated import deprecated
from . import (
    _concentration,
    _equiangular,
    _meanfield,
    _pretrained,
    _search,
    _simulate,
    _stability,
    _studies,
)
from ._devices import choose_devices, end_if_distributed
from ._options import _add_globals, _check_outputs, _check_sizes, _Parser, _release

# One module per command group, each with `add_commands(subparsers)`; the commands appear in
# `attnflow --help` (and in docs/cli.md) in this order.
_GROUPS = (
    _simulate,  # simulate
    _studies,  # phase-diagram, figure3, metastability
    _equiangular,  # normalization, long-context
    _meanfield,  # meanfield
    _concentration,  # concentration
    _pretrained,  # pretrained-clusters
    _search,  # search NAME
    _stability,  # lyapunov, fixed-points, ftle
)


def _parser() -> argparse.ArgumentParser:
    """The parser of every command (without --version and --quiet: see `_add_globals`)."""
    parser = _Parser(prog="attnflow", description="Transformers as particle systems on the sphere.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.add_commands(commands)
    return parser


@functools.cache
def _full_parser() -> argparse.ArgumentParser:
    """`_parser()` with --version and --quiet, built once per process (a parser is not changed
    by parsing; building it takes milliseconds, which add up over many calls of `main`)."""
    parser = _parser()
    _add_globals(parser)
    return parser


def main(argv=None, *, all_cores: bool = False) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad arguments or a failed run,
    130 interrupted). Every error is one line on stderr, never a traceback. `all_cores`: a
    command that sweeps shards over every CPU core, one JAX device per core (the `attnflow`
    script's choice, made before JAX starts; `_devices.choose_devices`)."""
    import warnings

    # before JAX is imported: --help and bad options answer at once
    args = _full_parser().parse_args(argv)
    from ..sweep import SweepFailureWarning

    try:
        _check_sizes(args)
        choose_devices(args, all_cores)
        _dtype(args)
        from ..distributed import agree, is_main

        agree(lambda: _check_outputs(args))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SweepFailureWarning)
            report = args.run(args)
        if is_main():
            print(report)
        for warning in caught:  # failed items of a sweep: reported, the user decides
            if issubclass(warning.category, SweepFailureWarning):
                if is_main():
                    print(f"attnflow {args.command}: warning: {warning.message}", file=sys.stderr)
            else:
                warnings.showwarning(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
    except KeyboardInterrupt:
        print(f"attnflow {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        end_if_distributed(args, 130)
        return 130
    # API errors (ValueError naming the argument), a missing optional dependency, an output
    # that cannot be written, and a deprecated flag under `-W error::DeprecationWarning`
    except (ValueError, ImportError, OSError, DeprecationWarning) as err:
        _discard_empty_partial(args)
        print(f"attnflow {args.command}: error: {_one_line(err)}", file=sys.stderr)
        end_if_distributed(args)
        return 2
    # a failure inside the computation: a solver that reached its maximum number of steps,
    # XLA out of memory (RuntimeError), or numbers beyond what the machine holds
    except (RuntimeError, ArithmeticError, MemoryError) as err:
        _discard_empty_partial(args)
        print(f"attnflow {args.command}: error: {_failure(err, args)}", file=sys.stderr)
        end_if_distributed(args)
        return 2
    finally:
        _release(args)
    return 0


def _dtype(args) -> None:
    """Apply --dtype: float64 switches JAX's x64 on, here and nowhere else (a float32 run leaves
    the session's setting as it is). The deprecated --float32 and --float64 still take effect,
    with a `DeprecationWarning` naming --dtype."""
    for old in ("float32", "float64"):
        if getattr(args, old, False):
            deprecated(f"--{old}", f"--dtype {old}")
            args.dtype = old
        if hasattr(args, old):  # recorded in the data file as before, beside "dtype"
            setattr(args, old, args.dtype == old)
    if args.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def _failure(err: Exception, args) -> str:
    """One line for a failure inside the computation: equinox's own line (not the stack around
    it), and for a solver that ran out of steps, what ran (model, beta, dtype) and what to
    try, among the options the command has."""
    marker = "EquinoxRuntimeError: "
    lines = [line.split(marker, 1)[1] for line in str(err).splitlines() if marker in line]
    line = lines[0] if lines else _one_line(err)
    if isinstance(err, MemoryError):
        return "out of memory: choose smaller sizes (--n, --d, --samples, --saves)"
    if "maximum number of solver steps" not in line:
        return line
    values = {name: getattr(args, name, None) for name in ("model", "kind", "beta", "t1", "dtype")}
    ran = [
        f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
        for name, value in values.items()
        if value is not None
    ]
    remedies = [
        remedy
        for name, remedy in (
            ("beta", "a smaller --beta"),
            ("t1", "a shorter --t1"),
            ("_ode_solver", "--solver layers (the discrete transformer)"),
        )
        if hasattr(args, name)
    ]
    if getattr(args, "dtype", None) == "float32":
        remedies.append("--dtype float64")
    return (
        f"the ODE solver reached its maximum number of steps ({', '.join(ran)}): the flow is "
        f"too stiff or too long for it; try {' or '.join(remedies) or 'smaller options'}"
    )


def _one_line(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"cannot write the output: {err.strerror}{where}; choose a writable location"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _resume_hint(args) -> str:
    partial = getattr(args, "_partial", None)
    if partial is not None and any(partial.rglob("chunk-*.npz")):
        return (
            f"; the finished chunks are kept in {partial}/: run the same command with "
            "--resume to continue"
        )
    _discard_empty_partial(args)
    return ""


def _discard_empty_partial(args) -> None:
    """Remove the chunk folder of a run that holds it (its lock: never another run's folder),
    took it empty and finished no chunk in it (nor in the stores of its sub-folders)."""
    import shutil

    partial = getattr(args, "_partial", None)
    if (
        partial is not None
        and getattr(args, "_lock", None) is not None
        and args._new_partial
        and partial.is_dir()
        and not any(partial.rglob("chunk-*.npz"))
    ):
        shutil.rmtree(partial, ignore_errors=True)
