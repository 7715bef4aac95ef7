"""`attnflow simulate`: one trajectory of SA or USA from uniform tokens."""

import time
from pathlib import Path

from ._options import (
    _add_dtype,
    _at_least_2,
    _config,
    _layer_times,
    _output,
    _positive,
    _positive_int,
    _real,
    _solver,
    _write,
)


def add_commands(commands) -> None:
    """Add `simulate` to the `attnflow` subparsers."""
    sim = commands.add_parser(
        "simulate",
        help="simulate one trajectory of self-attention dynamics",
        description="Simulate n tokens, uniform on the sphere S^{d-1}, under SA or USA with "
        "Q = K = V = I; write the trajectory (and a plot).",
    )
    sim.add_argument("--n", type=_positive_int, default=32, help="number of tokens (32)")
    sim.add_argument("--d", type=_at_least_2, default=3, help="dimension, >= 2 (3)")
    sim.add_argument("--beta", type=_real, default=1.0, help="inverse temperature, >= 0 (1)")
    sim.add_argument("--t1", type=_positive, default=15.0, help="final time, > 0 (15)")
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
        "--saves", type=_at_least_2, default=151, help="number of save times in [0, t1] (151)"
    )
    _add_dtype(sim)
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
    sim.add_argument(
        "--movie",
        type=_output(".gif", ".mp4"),
        default=None,
        help="also a movie of the tokens and the energy, .gif/.mp4 (.mp4 needs ffmpeg) (none)",
    )
    sim.set_defaults(run=_simulate)


def _simulate(args) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    solver, dt0 = _solver(args)
    if isinstance(solver, af.Layers):
        ts = _layer_times(args.t1, solver.h, args.saves)  # save times must be whole layers
    else:
        ts = np.linspace(0.0, args.t1, args.saves)
    dtype = jnp.dtype(args.dtype)
    field = af.fields.KINDS[args.model](jnp.asarray(args.beta, dtype))
    x0 = af.sphere.uniform(jax.random.key(args.seed), args.n, args.d, dtype=dtype)
    start = time.perf_counter()
    traj = af.simulate(field, x0, ts, solver=solver, dt0=dt0)
    traj.xs.block_until_ready()
    elapsed = time.perf_counter() - start
    step = solver.h if isinstance(solver, af.Layers) else dt0
    config = _config(args) | {"dt0": step, "version": af.__version__}
    data = {"ts": np.asarray(traj.ts), "xs": np.asarray(traj.xs), "x0": np.asarray(x0)}
    lines = [
        f"attnflow simulate: {args.model}, n = {args.n}, d = {args.d}, beta = {args.beta:g}, "
        f"t in [0, {ts[-1]:g}], solver {args.solver}, {args.dtype}"
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

    def draw(path):
        from attnflow.plotting import plot_trajectory

        plot_trajectory(traj, args.beta, path=path)

    lines.append(_write(args, config, draw, **data))
    if args.movie is not None:
        from attnflow.plotting import animate

        animate(traj, args.beta, path=args.movie)
        lines.append(f"  wrote {args.movie}")
    return "\n".join(lines)
