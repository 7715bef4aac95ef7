"""The mean-field PDE on S^2 against the particles it describes, to the same time.

`attnflow.meanfield.solve_sphere` at band limit `--degree` (SA, `beta`, a von Mises-Fisher
initial density of concentration 2, `t` in `[0, t1]`, rtol 1e-8, float64) against
`attnflow.simulate` of `--particles` tokens on S^2 (SA with Q = K = V = I, the same `beta`,
drawn uniformly: the cost does not depend on where they start) over the same times with the
same tolerances. Prints each wall time (after compilation, best of `--repeats`), the
compilation, and the PDE's number of right-hand sides.

    python benchmarks/meanfield_sphere.py [--degree 64] [--beta 2] [--t1 10] [--particles 4096]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import attnflow as af  # noqa: E402
from attnflow import meanfield as mf  # noqa: E402


def von_mises_fisher(theta, phi, k=2.0):
    return k / (4 * np.pi * np.sinh(k)) * np.exp(k * np.cos(theta))


def best(call, repeats: int) -> tuple[float, float]:
    """(first call's seconds, best of `repeats` later calls)."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return first, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degree", type=int, default=64)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--t1", type=float, default=10.0)
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    ts = jnp.linspace(0.0, args.t1, 11)
    print(
        f"{platform.processor() or platform.machine()}, jax {jax.__version__}, float64, SA, "
        f"beta = {args.beta:g}, t in [0, {args.t1:g}]"
    )

    def pde():
        return mf.solve_sphere(von_mises_fisher, ts, beta=args.beta, degree=args.degree).density

    first, seconds = best(pde, args.repeats)
    print(f"  solve_sphere, degree {args.degree}: {seconds:.2f} s ({first:.1f} s first call)")
    x0 = af.sphere.uniform(jax.random.key(0), args.particles, 3)

    def particles():
        return af.simulate(af.SA(args.beta), x0, ts, rtol=1e-8, atol=1e-10).xs

    first, seconds_p = best(particles, args.repeats)
    print(f"  simulate, {args.particles} tokens: {seconds_p:.2f} s ({first:.1f} s first call)")
    print(f"  ratio (particles / PDE): {seconds_p / seconds:.2f}x")


if __name__ == "__main__":
    main()
