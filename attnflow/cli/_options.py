"""Options and helpers shared by the `attnflow` commands: the command modules use the names
without an underscore (as `opts.name`); the others are `_main`'s and this module's own."""

import argparse
import json
import math
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line and exit status 2, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _get_values(self, action, arg_strings):
        # `--t1=--`: argparse drops a lone "--" and gives the option an empty list
        if action.option_strings and "--" in arg_strings:
            self.error(f"argument {action.option_strings[-1]}: expected a value, got '--'")
        return super()._get_values(action, arg_strings)


_QUIET_HELP = (
    "no progress bars (for logs): the summary lines and errors are still printed; also on when "
    "the environment variable TQDM_DISABLE is set (to anything but '', 0, false, no or off)"
)


# How long each command's default run takes (wall time from the shell, imports and compilation
# included), measured on a 2-core AMD EPYC VM on 2026-12-07 (benchmarks/README.md, "Default
# runs"; the sweeps on one JAX device per core); figure3: 6 min there, 3 min 45 s on a 2-core
# Intel Xeon VM with AVX-512 (2026-12-08). Shown at the end of each --help.
DEFAULT_RUN = {
    "simulate": "10 s",
    "phase-diagram": "25 s",
    "figure3": "4-6 min",
    "metastability": "7 s",
    "normalization": "30 s",
    "long-context": "7 s",
    "meanfield": "3 min",
    "concentration": "21 s",
    "pretrained-clusters": "22 s",
    "search smallest-beta": "18 s",
    "search beta-schedule": "30 s",
    "search value-groups": "22 s",
    "search recover": "55 s",
    "lyapunov": "10 s",
    "fixed-points": "13 s",
    "ftle": "7 s",
}


def _add_globals(parser: argparse.ArgumentParser) -> None:
    """--version on `parser`, and --quiet on it and on every (nested) command, so that it may
    come before or after the command's name; each command's --help ends with `DEFAULT_RUN`."""
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"attnflow {__version__}")
    parser.add_argument("--quiet", action="store_true", help=_QUIET_HELP)
    parsers = [parser]
    while parsers:
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for command in action.choices.values():
                    # SUPPRESS: not given after the name, it leaves the value given before it
                    command.add_argument(
                        "--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP
                    )
                    parsers.append(command)
                    name = command.prog.removeprefix(f"{parser.prog} ")
                    if name in DEFAULT_RUN:
                        command.epilog = f"Default run: about {DEFAULT_RUN[name]} on a laptop CPU."


def progress(args) -> bool:
    """Whether to show progress bars: not with --quiet, nor when TQDM_DISABLE is set (tqdm
    honours it only for bars whose `disable` is not given, and attnflow gives it)."""
    import os

    disabled = os.environ.get("TQDM_DISABLE", "").strip().lower()
    if getattr(args, "quiet", False) or disabled not in ("", "0", "false", "no", "off"):
        return False
    from ..distributed import is_main

    return is_main()  # the other processes of a multi-process run show none


def _checked(convert, ok, expected: str):
    """An argparse type: `convert(text)`, accepted when `ok` holds for it. Text that `convert`
    cannot read (a `ValueError`) or a value failing `ok` is refused as "expected `expected`"."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


# Counts (tokens, samples, save times, steps) index arrays of int32 inside compiled programs.
COUNT_MAX = 2**31 - 1
# A seed is any integer of int64, as `jax.random.key` takes it.
SEED_RANGE = (-(2**63), 2**63 - 1)


def _finite(text: str) -> float:
    """`float(text)`, a `ValueError` for NaN and the infinities (and for `1e400`, which
    `float` reads as infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not finite: {text!r}")
    return value


real = _checked(_finite, lambda value: True, "a finite number")
positive_int = _checked(
    int, lambda value: 1 <= value <= COUNT_MAX, f"a positive integer up to {COUNT_MAX}"
)
# a number of tokens, a dimension, a number of save times
at_least_2 = _checked(
    int, lambda value: 2 <= value <= COUNT_MAX, f"an integer from 2 to {COUNT_MAX}"
)
nonnegative = _checked(_finite, lambda value: value >= 0, "a finite number >= 0")
positive = _checked(_finite, lambda value: value > 0, "a finite positive number")
# a number of tokens that may be as large as 1e9 and beyond
real_at_least_2 = _checked(_finite, lambda value: value >= 2, "a finite number >= 2")
# an index that may count from the end (-1 the last), within the counts' range
index = _checked(
    int,
    lambda value: -COUNT_MAX <= value <= COUNT_MAX,
    f"an integer from -{COUNT_MAX} to {COUNT_MAX}",
)
seed = _checked(
    int,
    lambda value: SEED_RANGE[0] <= value <= SEED_RANGE[1],
    f"an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}",
)


def output(*suffixes: str):
    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"expected a file name ending in {' or '.join(suffixes)}, got {text!r}"
            )
        if not path.parent.is_dir():
            raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist")
        return path

    return parse


def add(command, flag: str, default, help: str = "", *, shown=None, **kwargs) -> None:
    """`command.add_argument(flag, default=default, ...)` with the default at the end of its
    help text, in parentheses: `shown`, or else the default (`:g` for a float)."""
    if shown is None:
        shown = f"{default:g}" if isinstance(default, float) else default
    help = f"{help} ({shown})" if help else f"({shown})"
    command.add_argument(flag, default=default, help=help, **kwargs)


def add_dtype(command, default: str = "float64", old: str | None = "float32") -> None:
    """--dtype, and `--{old}`, its deprecated spelling, hidden from --help (`main` applies
    them: see `_main._dtype`)."""
    add(command, "--dtype", default, "floating-point type", choices=("float32", "float64"))
    if old is not None:
        command.add_argument(f"--{old}", action="store_true", help=argparse.SUPPRESS)


def add_sweep_options(command, *, resume: bool, samples: int, saves: int | None) -> None:
    """Options shared by the batched studies (`saves=None`: no --saves and no --delta)."""
    add(command, "--n", 32, "number of tokens", type=at_least_2)
    add(command, "--samples", samples, "per beta", type=positive_int)
    if saves is not None:
        add(command, "--saves", saves, "save times in [0, t1]", type=at_least_2)
    add(command, "--t1", 30.0, "final time", type=positive)
    add(command, "--h", 0.1, "layer step", type=positive)
    add(command, "--seed", 0, "random seed", type=seed)
    if saves is not None:  # a study of clustered pairs at save times (not the FTLE study)
        clustered = "pairs with <x_i, x_j> >= 1 - delta are clustered"
        add(command, "--delta", 1e-3, clustered, shown="1e-3", type=nonnegative)
    add_dtype(command)
    add(command, "--devices", None, "shard over this many devices", shown="all", type=positive_int)
    add(command, "--memory", 2.0, "working memory budget in GiB", type=positive)
    command.set_defaults(_sweeps=True)  # one JAX device per CPU core (`_devices.choose_devices`)
    add_distributed(command)
    if resume:
        command.add_argument(
            "--resume",
            action="store_true",
            help="continue an interrupted run of the same command from OUT.partial/",
        )


DISTRIBUTED_HELP = (
    "run as one process of a multi-process run (attnflow.distributed.initialize, from "
    "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID, or SLURM's or Cloud TPU's "
    "variables): the items are split over the devices of every process; every process is "
    "started with the same options, and process 0 prints and writes the outputs"
)


def add_distributed(command) -> None:
    """--distributed: this process is one of a multi-process run (`_devices.choose_devices`)."""
    command.add_argument("--distributed", action="store_true", help=DISTRIBUTED_HELP)


def add_beta_range(command, low: float, high: float, count: int) -> None:
    """--beta-min, --beta-max, --num-betas: an evenly spaced grid of inverse temperatures."""
    add(command, "--beta-min", low, "smallest beta", type=nonnegative)
    add(command, "--beta-max", high, "largest beta", type=nonnegative)
    add(command, "--num-betas", count, "betas", type=positive_int)


def beta_grid(args):
    """The betas of `add_beta_range`'s options, checked to be in order."""
    import numpy as np

    if args.beta_max < args.beta_min:
        raise ValueError(
            f"--beta-max must be >= --beta-min; got {args.beta_max:g} < {args.beta_min:g}"
        )
    return np.linspace(args.beta_min, args.beta_max, args.num_betas)


def add_outputs(command, name: str, labelled: bool = False) -> None:
    """--out (`.npz`, or also `.nc` for a labelled result), --plot and --no-plot."""
    if labelled:
        kinds, more = (".npz", ".nc"), "; .nc: labelled netCDF, needs xarray"
    else:
        kinds, more = (".npz",), ""
    default = Path(f"{name}.npz")
    text = f"data file ({default}){more}"
    command.add_argument("--out", type=output(*kinds), default=default, help=text)
    figures = output(".png", ".pdf", ".svg")
    add(command, "--plot", Path(f"{name}.png"), "figure, .png/.pdf/.svg", type=figures)
    command.add_argument("--no-plot", action="store_true", help="write the data only, no figure")


# What a run may imply, checked before anything is computed (`_check_sizes`).
STEPS_MAX = 10**7  # layers or fixed solver steps: 10 million
SAVES_MAX = 10**6  # save times, checkpoints or intervals
T_MAX = 1e6  # final time: the dynamics studied here settle on times of order 1 to 1e3
ELEMENTS_MAX = COUNT_MAX  # numbers in one array (tokens x dimension x save times)
MEMORY_MAX = 2.0**20  # --memory, in GiB (1 PiB)


def _check_sizes(args) -> None:
    """Before any computation: what the options imply (layers, steps, save times, array sizes)
    within the limits above, named with the flags that set it, so that a run is refused at once
    rather than failing after minutes of work or asking for more memory than exists."""

    def refuse(what: str, value: float, limit: float, flags: str) -> None:
        if value > limit:
            raise ValueError(f"{flags} imply {value:.3g} {what}; at most {limit:,}")

    t1 = getattr(args, "t1", None)
    if t1 is not None:
        if t1 > T_MAX:
            raise ValueError(f"--t1 must be at most {T_MAX:g}; got {t1:g}")
        for step, what in (("h", "layers"), ("dt0", "solver steps")):
            if getattr(args, step, None) is not None:
                size = getattr(args, step)
                refuse(what, t1 / size, STEPS_MAX, f"--t1 {t1:g} and --{step} {size:g}")
        if getattr(args, "every", None) is not None:
            every = f"--t1 {t1:g} and --every {args.every:g}"
            refuse("intervals", t1 / args.every, SAVES_MAX, every)
    saves = getattr(args, "saves", None)
    if saves is not None and saves > SAVES_MAX:
        raise ValueError(f"--saves must be at most {SAVES_MAX:,}; got {saves}")
    n, d = (getattr(args, name, None) for name in ("n", "d"))
    if isinstance(n, int) and isinstance(d, int):
        refuse("numbers per state", n * d, ELEMENTS_MAX, "--n and --d")
        if saves is not None:
            refuse("saved numbers", n * d * saves, ELEMENTS_MAX, "--n, --d and --saves")
    if isinstance(n, int) and getattr(args, "samples", None) is not None:
        refuse("tokens over all samples", n * args.samples, ELEMENTS_MAX, "--n and --samples")
    if getattr(args, "memory", None) is not None and args.memory > MEMORY_MAX:
        raise ValueError(f"--memory must be at most {MEMORY_MAX:,.0f} GiB; got {args.memory:g}")


def _check_outputs(args) -> None:
    """Before any computation: --no-plot applied, matplotlib present when a figure is asked
    for, and the output files not folders."""
    import importlib.util

    if getattr(args, "no_plot", False):
        args.plot = None
    for option in ("out", "plot", "movie"):
        path = getattr(args, option, None)
        if path is not None and path.is_dir():
            raise ValueError(f"--{option} {path} is a folder; give a file name")
    if getattr(args, "plot", None) is not None and importlib.util.find_spec("matplotlib") is None:
        raise ValueError(
            f"--plot {args.plot} needs matplotlib: pip install 'attnflow[plot]', or pass --no-plot"
        )
    if args.out.suffix.lower() == ".nc" and importlib.util.find_spec("xarray") is None:
        raise ValueError(f"--out {args.out} needs xarray: pip install 'attnflow[xarray]'")
    movie = getattr(args, "movie", None)
    if movie is not None:
        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError(f"--movie {movie} needs matplotlib: pip install 'attnflow[plot]'")
        from matplotlib.animation import FFMpegWriter

        if movie.suffix.lower() == ".mp4" and not FFMpegWriter.isAvailable():
            raise ValueError(f"--movie {movie}: writing .mp4 needs ffmpeg; give a .gif name")


def config(args) -> dict:
    """The options of a command, JSON-ready, as recorded in its data file."""
    skip = ("run", "out", "plot", "no_plot", "quiet", "movie", "distributed")
    return {k: v for k, v in vars(args).items() if k not in skip and not k.startswith("_")}


SOLVER_HELP = "diffrax solver name, or 'layers' for the discrete transformer"


def add_ode_solver(command) -> None:
    """--solver: a diffrax solver by name or 'layers' (`solver`); a failed solve then suggests
    --solver layers (`_main._failure`)."""
    add(command, "--solver", "tsit5", SOLVER_HELP)
    command.set_defaults(_ode_solver=True)


def solver(args):
    """`--solver` and `--dt0` as the API takes them, `(solver, dt0)`: `--solver layers` is the
    discrete transformer `Layers(h)` with the layer step `h = --dt0` (0.1 by default); any
    other name is a diffrax solver, stepping from `--dt0`."""
    import attnflow as af

    if args.solver.lower() != "layers":
        return args.solver, args.dt0
    h = 0.1 if args.dt0 is None else args.dt0
    if not h > 0:
        raise ValueError(f"--dt0 must be positive; got {h:g}")
    return af.Layers(h), None


def layer_times(t1: float, h: float, saves: int):
    """`saves` times in `[0, t1]`, rounded to whole layers of `h` (`t1` must be one)."""
    import numpy as np

    steps = round(t1 / h)
    if steps < 1 or abs(t1 / h - steps) > 1e-6:
        raise ValueError(f"--t1 must be a whole number of layers of h = {h:g}; got {t1:g}")
    return np.unique(np.linspace(0, steps, min(saves, steps + 1)).round()) * h


def partial(args) -> Path:
    """The folder of finished chunks next to OUT, made if need be and locked (`FolderLock`)
    until the run ends: refused if another run holds it, or if it holds an interrupted run and
    --resume is not set. Kept in `args._partial`, its lock in `args._lock` and whether it was
    empty in `args._new_partial`, for `main` to say how to resume, or to remove it when a failed
    run finished no chunk. In a multi-process run, process 0 does all that, and the others
    learn the outcome (`attnflow.distributed.agree`)."""
    from ..distributed import agree, is_main

    folder = args.out.with_name(args.out.name + ".partial")
    agree(lambda: _take_partial(args, folder) if is_main() else None)
    if not is_main():
        args._partial, args._lock, args._new_partial = folder, None, False
    return folder


def _take_partial(args, folder: Path) -> None:
    import sys

    from .._files import FolderLock

    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, where the run keeps its chunks; move it away")
    existed = folder.exists()
    folder.mkdir(exist_ok=True)
    lock = FolderLock(folder)  # refused while another run holds it
    new = not any(folder.iterdir())
    if not new and not args.resume:
        lock.close()
        raise ValueError(
            f"{folder} holds an interrupted run: pass --resume to continue it, or delete it"
        )
    if args.resume and not existed:
        print(
            f"attnflow {args.command}: nothing to resume ({folder} does not exist); "
            "starting a new run",
            file=sys.stderr,
        )
    args._partial, args._lock, args._new_partial = folder, lock, new


def _release(args) -> None:
    """Release the folder of chunks this run holds, if any (see `partial`)."""
    lock = getattr(args, "_lock", None)
    if lock is not None:
        lock.close()
        args._lock = None


def figure(name: str, *args, **kwargs):
    """The `draw(path)` of `write` that calls `attnflow.plotting.<name>(*args, **kwargs,
    path=path)` (imported then: matplotlib is needed only for a figure)."""

    def draw(path):
        import attnflow.plotting

        getattr(attnflow.plotting, name)(*args, **kwargs, path=path)

    return draw


def fields(obj, names: str) -> dict:
    """`{name: obj.name}` for each of the space-separated `names`: the arrays of a result, the
    configuration of a command."""
    return {name: getattr(obj, name) for name in names.split()}


def write(args, config: dict, draw, labelled=None, **arrays) -> str:
    """Write the data and, if --plot was given, the figure by `draw(path)`, then remove the
    run's chunks (see `partial`); returns the report line naming what was written. The data:
    the npz with the command's configuration (JSON), or for an `.nc` name the result's
    `labelled()` dataset with it, as netCDF; written atomically, as the sweep store does."""
    from ..distributed import agree, is_main

    # process 0 writes; the others wait to hear that it did (or why not)
    return agree(lambda: _write(args, config, draw, labelled, arrays) if is_main() else "")


def _write(args, config: dict, draw, labelled, arrays: dict) -> str:
    import shutil

    import numpy as np

    from .._files import atomic_write

    text = json.dumps(config, sort_keys=True)
    if args.out.suffix.lower() == ".nc":
        dataset = labelled()
        dataset.attrs["config"] = text
        atomic_write(args.out, lambda file: file.write(dataset.to_netcdf()))
    else:
        atomic_write(args.out, lambda file: np.savez_compressed(file, **arrays, config=text))
    wrote = f"  wrote {args.out}"
    if args.plot is not None:
        draw(args.plot)
        wrote += f", {args.plot}"
    if getattr(args, "_partial", None) is not None:  # only once the data and figure are written
        shutil.rmtree(args._partial)
    return wrote


def sweep_kwargs(args) -> dict:
    """The options of `add_sweep_options` but --t1, --saves and --delta, as studies take them."""
    import jax

    import attnflow as af

    return {
        "key": jax.random.key(args.seed),
        "n": args.n,
        "samples": args.samples,
        "solver": af.Layers(args.h),
        "devices": args.devices,
        "memory": int(args.memory * 2**30),
        "dtype": args.dtype,
        "progress": progress(args),
    }
