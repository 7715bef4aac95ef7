"""`attnflow <command> ...`: parse, validate, call the public API, report."""

import argparse
import json
import sys
import time
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line and exit status 2, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _output(*suffixes: str):
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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnflow", description="Transformers as particle systems on the sphere.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser(
        "simulate",
        help="simulate one trajectory of self-attention dynamics",
        description="Simulate n tokens, uniform on the sphere S^{d-1}, under SA or USA with "
        "Q = K = V = I; write the trajectory (and a plot).",
    )
    sim.add_argument("--n", type=_positive_int, default=32, help="number of tokens (32)")
    sim.add_argument("--d", type=_positive_int, default=3, help="dimension, >= 2 (3)")
    sim.add_argument("--beta", type=_real, default=1.0, help="inverse temperature, >= 0 (1)")
    sim.add_argument("--t1", type=_real, default=15.0, help="final time, > 0 (15)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the initial tokens (0)")
    sim.add_argument("--model", choices=["SA", "USA"], default="SA", help="dynamics (SA)")
    sim.add_argument(
        "--solver",
        default="tsit5",
        help="diffrax solver name, or 'layers' for the discrete transformer (tsit5)",
    )
    sim.add_argument(
        "--dt0",
        type=_real,
        default=None,
        help="step size; the layer step h for --solver layers (default 0.1 there)",
    )
    sim.add_argument(
        "--saves", type=_positive_int, default=151, help="number of save times in [0, t1] (151)"
    )
    sim.add_argument("--float32", action="store_true", help="compute in float32 (float64)")
    sim.add_argument(
        "--out",
        type=_output(".npz"),
        default=Path("traj.npz"),
        help="output data file, .npz (traj.npz)",
    )
    sim.add_argument(
        "--plot",
        type=_output(".png", ".pdf", ".svg"),
        default=None,
        help="output figure, .png/.pdf/.svg (none)",
    )
    sim.set_defaults(run=_simulate)
    return parser


def _simulate(args) -> str:
    import jax

    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    if args.d < 2:
        raise ValueError(f"--d must be at least 2; got {args.d}")
    if not args.t1 > 0:
        raise ValueError(f"--t1 must be positive; got {args.t1:g}")
    if args.saves < 2:
        raise ValueError(f"--saves must be at least 2; got {args.saves}")
    layers = args.solver.lower() == "layers"
    dt0 = args.dt0 if args.dt0 is not None or not layers else 0.1
    if layers:
        # Save times must be whole layers: spread the saves over the layers of [0, t1].
        if not dt0 > 0:
            raise ValueError(f"--dt0 must be positive; got {dt0:g}")
        steps = round(args.t1 / dt0)
        if steps < 1 or abs(args.t1 / dt0 - steps) > 1e-6:
            raise ValueError(
                f"--t1 must be a whole number of layers of h = --dt0 = {dt0:g} with "
                f"--solver layers; got {args.t1:g}"
            )
        ts = np.unique(np.linspace(0, steps, min(args.saves, steps + 1)).round()) * dt0
    else:
        ts = np.linspace(0.0, args.t1, args.saves)
    dtype = jnp.float32 if args.float32 else jnp.float64
    field = {"SA": af.SA, "USA": af.USA}[args.model](jnp.asarray(args.beta, dtype))
    x0 = af.sphere.uniform(jax.random.key(args.seed), args.n, args.d, dtype=dtype)
    start = time.perf_counter()
    traj = af.simulate(field, x0, ts, solver=args.solver, dt0=dt0)
    traj.xs.block_until_ready()
    elapsed = time.perf_counter() - start
    config = {k: v for k, v in vars(args).items() if k not in ("run", "out", "plot")}
    config |= {"dt0": dt0, "version": af.__version__}
    data = {"ts": np.asarray(traj.ts), "xs": np.asarray(traj.xs), "x0": np.asarray(x0)}
    lines = [
        f"attnflow simulate: {args.model}, n = {args.n}, d = {args.d}, beta = {args.beta:g}, "
        f"t in [0, {ts[-1]:g}], solver {args.solver}, {'float32' if args.float32 else 'float64'}"
        f": {elapsed:.2f} s (compilation included)"
    ]
    if args.beta > 0:
        data["energy"] = np.asarray(jax.vmap(lambda x: af.energy(x, args.beta))(traj.xs))
        lines.append(f"  energy E_beta: {data['energy'][0]:.6g} -> {data['energy'][-1]:.6g}")
    gram = np.einsum("nd,md->nm", data["xs"][-1], data["xs"][-1])
    off = gram[~np.eye(args.n, dtype=bool)]
    if off.size:
        lines.append(
            f"  pairwise cosines at t = {ts[-1]:g}: min {off.min():.6f}, mean {off.mean():.6f}"
        )
    np.savez_compressed(args.out, **data, config=json.dumps(config))
    written = [str(args.out)]
    if args.plot is not None:
        from attnflow.plotting import plot_trajectory

        plot_trajectory(traj, args.beta, path=args.plot)
        written.append(str(args.plot))
    lines.append("  wrote " + ", ".join(written))
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        print(args.run(args))
    except (ValueError, ImportError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"attnflow {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0
