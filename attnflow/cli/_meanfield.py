"""`attnflow meanfield`: the mean-field PDE on the circle against particles."""

from .._names import CLOSED_FORM
from . import _options as opts


def add_commands(commands) -> None:
    """Add `meanfield` to the `attnflow` subparsers."""
    meanfield = commands.add_parser(
        "meanfield",
        help="the mean-field PDE on the circle against particles (W1 over time, n^-1/2 law)",
        description="The continuity equation for the density of token angles on the circle "
        "(Q = K = V = I) from a smooth two-bump density, against n particles sampled from it "
        "and moved by the same dynamics: the exact circle W1 distance over time for each n, "
        "and its fitted exponent in n.",
    )
    opts.add(meanfield, "--beta", 4.0, "inverse temperature", type=opts.nonnegative)
    opts.add(meanfield, "--kind", "SA", "dynamics", choices=CLOSED_FORM)
    opts.add(meanfield, "--grid", 512, "grid points", type=opts.positive_int)
    sizes = (256, 1024, 4096)
    opts.add(meanfield, "--particles", sizes, "sizes n", shown="256,1024,4096", type=_counts)
    opts.add(meanfield, "--samples", 2, "per size", type=opts.positive_int)
    opts.add(meanfield, "--t1", 10.0, "final time", type=opts.positive)
    opts.add(meanfield, "--saves", 41, "save times", type=opts.at_least_2)
    opts.add(meanfield, "--seed", 0, "seed of the particles", type=opts.seed)
    opts.add_dtype(meanfield)
    opts.add_outputs(meanfield, "meanfield")
    meanfield.set_defaults(run=_meanfield)


def _counts(text: str) -> tuple[int, ...]:
    """`256,1024,4096` as a tuple of at least two positive integers."""
    import argparse

    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if len(counts) < 2 or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected at least two positive integers separated by commas, got {text!r}"
        )
    return counts


def _meanfield(args) -> str:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    dtype = args.dtype
    needed = af.meanfield.smallest_grid(args.beta)
    if args.grid < needed:
        raise ValueError(
            f"--grid {args.grid} is too coarse at beta = {args.beta:g}; use >= {needed}"
        )

    start = time.perf_counter()
    ts = jnp.linspace(0.0, args.t1, args.saves, dtype=dtype)
    result = af.meanfield.particles_versus_pde(
        af.meanfield.two_bump_density(args.grid, dtype),
        ts,
        key=jax.random.key(args.seed),
        beta=args.beta,
        kind=args.kind,
        particles=args.particles,
        samples=args.samples,
        grid=args.grid,
        progress=opts.progress(args),
    )
    elapsed = time.perf_counter() - start
    config = opts.fields(args, "beta kind grid particles samples t1 saves seed dtype")
    wrote = opts.write(
        args,
        config,
        opts.figure("plot_meanfield", result, beta=args.beta, kind=args.kind),
        theta=result.pde.theta,
        ts=ts,
        density=result.pde.density,
        **opts.fields(result, "particles distance slope"),
        min_density=result.pde.min_density,
    )
    mean = np.asarray(result.mean())
    rows = ", ".join(
        f"n = {n}: {a:.3g} -> {b:.3g}"
        for n, a, b in zip(np.asarray(result.particles), mean[:, 0], mean[:, -1], strict=True)
    )
    return "\n".join(
        [
            f"attnflow meanfield: {args.kind}, beta = {args.beta:g}, grid {args.grid}, "
            f"t in [0, {args.t1:g}]: {elapsed:.1f} s",
            f"  mean W1(particles, PDE) at t = 0 -> t = {args.t1:g}: {rows}",
            f"  fitted exponent in n: {float(result.slope[0]):.2f} at t = 0, "
            f"{float(result.slope[-1]):.2f} at t = {args.t1:g} (the n^-1/2 law: -0.5); "
            f"mass {float(result.pde.mass()[-1]):.12f}, smallest density "
            f"{float(jnp.min(result.pde.min_density)):.2g}",
            wrote,
        ]
    )
