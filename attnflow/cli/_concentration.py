"""`attnflow concentration`: low-temperature concentration onto the hardmax limit (ABRR)."""

import time

from ..concentration import INITS
from ._options import (
    _add_dtype,
    _add_outputs,
    _at_least_2,
    _positive,
    _positive_int,
    _progress,
    _write,
)


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
    conc.add_argument("--n", type=_at_least_2, default=64, help="number of tokens (64)")
    conc.add_argument("--d", type=_at_least_2, default=2, help="dimension, >= 2 (2)")
    conc.add_argument(
        "--betas",
        type=_betas,
        default=(10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0),
        help="inverse temperatures, comma-separated (10,30,100,300,1000,3000,10000)",
    )
    conc.add_argument("--t1", type=_positive, default=100.0, help="final time (100)")
    conc.add_argument(
        "--saves", type=_positive_int, default=40, help="log-spaced save times after 0 (40)"
    )
    conc.add_argument("--samples", type=_positive_int, default=16, help="realizations (16)")
    conc.add_argument(
        "--value",
        type=_values,
        default=(1.0,),
        help="diagonal of V, comma-separated, d entries; one number c is c I (1: V = I)",
    )
    conc.add_argument("--init", choices=INITS, default="ball", help="initial tokens (ball)")
    conc.add_argument("--seed", type=int, default=0, help="seed of the initial tokens (0)")
    _add_dtype(conc)
    _add_outputs(conc, "concentration", labelled=True)
    conc.set_defaults(run=_concentration)


def _numbers(text: str, what: str) -> tuple[float, ...]:
    """`1,0.5` as a tuple of finite positive numbers (`ArgumentTypeError` naming `what`)."""
    import argparse
    import math

    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}")
    return values


def _betas(text: str) -> tuple[float, ...]:
    """`10,100,1000` as at least two distinct positive numbers, in increasing order."""
    import argparse

    betas = _numbers(text, "at least two distinct positive numbers")
    if len(set(betas)) < 2:
        raise argparse.ArgumentTypeError(
            f"expected at least two distinct positive numbers separated by commas, got {text!r}"
        )
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
        progress=_progress(args),
    )
    elapsed = time.perf_counter() - start
    config = result.config | {"seed": args.seed, "value": list(args.value)}

    def draw(path):
        from attnflow.plotting import plot_concentration

        plot_concentration(result, path=path)

    wrote = _write(
        args,
        config,
        draw,
        result.to_xarray,
        betas=result.betas,
        ts=result.ts,
        distance=result.distance,
        mean=result.mean(),
        closest=result.closest,
        closest_time=result.closest_time,
        resolved=result.resolved,
        slope=np.asarray(result.slope),
        exponent=np.asarray(result.exponent),
        eigenvalues=result.eigenvalues,
        alignment=result.alignment,
        terminal_time=result.terminal_time,
        spread=result.spread,
        limits=result.limits,
        x0=result.x0,
        final=result.final,
        status=result.status,
        limit_status=result.limit_status,
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
