"""`attnflow simulate`: one trajectory of SA or USA from uniform tokens."""

import time
from pathlib import Path

from .._names import CLOSED_FORM
from . import _options as opts


def add_commands(commands) -> None:
    """Add `simulate` to the `attnflow` subparsers."""
    sim = commands.add_parser(
        "simulate",
        help="simulate one trajectory of self-attention dynamics",
        description="Simulate n tokens, uniform on the sphere S^{d-1}, under SA or USA with "
        "Q = K = V = I; write the trajectory (and a plot).",
    )
    opts.add(sim, "--n", 32, "number of tokens", type=opts.positive_int)
    opts.add(sim, "--d", 3, "dimension, >= 2", type=opts.at_least_2)
    opts.add(sim, "--beta", 1.0, "inverse temperature, >= 0", type=opts.real)
    opts.add(sim, "--t1", 15.0, "final time, > 0", type=opts.positive)
    opts.add(sim, "--seed", 0, "seed of the initial tokens", type=opts.seed)
    opts.add(sim, "--model", "SA", "dynamics", choices=CLOSED_FORM)
    opts.add_ode_solver(sim)
    step = "step size; the layer step h for --solver layers (default 0.1 there)"
    sim.add_argument("--dt0", type=opts.real, default=None, help=step)
    opts.add(sim, "--saves", 151, "number of save times in [0, t1]", type=opts.at_least_2)
    opts.add_dtype(sim)
    opts.add(sim, "--out", Path("traj.npz"), "output data file, .npz", type=opts.output(".npz"))
    figure = opts.output(".png", ".pdf", ".svg")
    opts.add(sim, "--plot", None, "output figure, .png/.pdf/.svg", shown="none", type=figure)
    movie = "also a movie of the tokens and the energy, .gif/.mp4 (.mp4 needs ffmpeg)"
    opts.add(sim, "--movie", None, movie, shown="none", type=opts.output(".gif", ".mp4"))
    sim.set_defaults(run=_simulate)


def _simulate(args) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    solver, dt0 = opts.solver(args)
    if isinstance(solver, af.Layers):
        ts = opts.layer_times(args.t1, solver.h, args.saves)  # save times must be whole layers
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
    config = opts.config(args) | {"dt0": step, "version": af.__version__}
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
    lines.append(opts.write(args, config, opts.figure("plot_trajectory", traj, args.beta), **data))
    if args.movie is not None:
        from attnflow.plotting import animate

        animate(traj, args.beta, path=args.movie)
        lines.append(f"  wrote {args.movie}")
    return "\n".join(lines)
