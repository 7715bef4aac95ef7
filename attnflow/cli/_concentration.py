"""`attnflow concentration`: low-temperature concentration onto the hardmax limit (ABRR)."""

import time

from .._names import INITS
from . import _options as opts


def add_commands(commands) -> None:
    """Add `concentration` to the `attnflow` subparsers."""
    conc = commands.add_parser(
        "concentration",
        help="low-temperature concentration onto the hardmax limit (ABRR): W2 over (beta, t)",
        description="n tokens in R^d (uniform in the unit ball, or Gaussian) move by the "
        "centered attention flow dx_i/dt = sum_j A_ij V (x_j - x_i) (Q = K = I) at each beta; "
        "the exact W2 distance of their measure to the push-forward by the zero-temperature "
        "(hardmax) limit map over log-spaced times, its closest approach against ABRR's rate "
        "sqrt(log(beta+1)/beta), and the terminal phase along V's slowest eigenvector.",
    )
    opts.add(conc, "--n", 64, "number of tokens", type=opts.at_least_2)
    opts.add(conc, "--d", 2, "dimension, >= 2", type=opts.at_least_2)
    betas = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
    shown = ",".join(f"{beta:g}" for beta in betas)
    opts.add(
        conc, "--betas", betas, "inverse temperatures, comma-separated", shown=shown, type=_betas
    )
    opts.add(conc, "--t1", 100.0, "final time", type=opts.positive)
    opts.add(conc, "--saves", 40, "log-spaced save times after 0", type=opts.positive_int)
    opts.add(conc, "--samples", 16, "realizations", type=opts.positive_int)
    value = "diagonal of V, comma-separated, d entries; one number c is c I"
    opts.add(conc, "--value", (1.0,), value, shown="1: V = I", type=_values)
    opts.add(conc, "--init", "ball", "initial tokens", choices=INITS)
    opts.add(conc, "--seed", 0, "seed of the initial tokens", type=opts.seed)
    opts.add_dtype(conc)
    opts.add_distributed(conc)
    opts.add_outputs(conc, "concentration", labelled=True)
    conc.set_defaults(run=_concentration)


def _numbers(text: str, what: str, distinct: int = 1) -> tuple[float, ...]:
    """`1,0.5` as a tuple of finite positive numbers, at least `distinct` of them different
    (`ArgumentTypeError` naming `what`)."""
    import argparse
    import math

    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(set(values)) < distinct or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}")
    return values


def _betas(text: str) -> tuple[float, ...]:
    """`10,100,1000` as at least two distinct positive numbers, in increasing order."""
    betas = _numbers(text, "at least two distinct positive numbers", distinct=2)
    return tuple(sorted(set(betas)))


def _values(text: str) -> tuple[float, ...]:
    """`1,0.5` (the diagonal of V) as positive numbers: V's eigenvalues, whose real parts
    must be positive for the flow to come to rest."""
    return _numbers(text, "positive numbers (the diagonal of V)")


def _concentration(args) -> str:
    import jax
    import numpy as np

    from ..concentration import concentration

    dtype = args.dtype
    if len(args.value) not in (1, args.d):
        raise ValueError(
            f"--value must have 1 or d = {args.d} entries (the diagonal of V); "
            f"got {len(args.value)}"
        )
    diagonal = np.broadcast_to(np.asarray(args.value), (args.d,))
    V = None if np.all(diagonal == 1) else np.diag(diagonal)
    if len(args.value) == 1:
        value = "I" if args.value[0] == 1 else f"{args.value[0]:g} I"
    else:
        value = f"diag({', '.join(f'{v:g}' for v in args.value)})"
    ts = np.concatenate([[0.0], np.geomspace(args.t1 / 2000, args.t1, args.saves)])
    start = time.perf_counter()
    result = concentration(
        key=jax.random.key(args.seed),
        n=args.n,
        d=args.d,
        betas=args.betas,
        ts=ts,
        V=V,
        samples=args.samples,
        init=args.init,
        dtype=dtype,
        progress=opts.progress(args),
    )
    elapsed = time.perf_counter() - start
    config = result.config | {"seed": args.seed, "value": list(args.value)}
    wrote = opts.write(
        args,
        config,
        opts.figure("plot_concentration", result),
        result.to_xarray,
        **opts.fields(result, "betas ts distance"),
        mean=result.mean(),
        **opts.fields(
            result,
            "closest closest_time resolved slope exponent eigenvalues alignment terminal_time "
            "spread limits x0 final status limit_status",
        ),
    )
    return "\n".join(
        [
            f"attnflow concentration: n = {args.n}, d = {args.d}, V = {value}, Q = K = I, "
            f"init {args.init}, {args.samples} samples, t in [0, {args.t1:g}] ({args.saves} "
            f"log-spaced saves), {dtype}: {elapsed:.1f} s",
            *result.summary(),
            wrote,
        ]
    )
