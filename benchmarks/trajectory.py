"""One SA trajectory through attnflow and through scipy's solve_ivp, in the same process.

n = 32 tokens uniform on S^2, beta = 1, Q = K = V = I, t in [0, 30], float64, RK45 / Tsit5
(both 5th-order embedded pairs) at the same tolerances (rtol 1e-6, atol 1e-8), 31 save times.
scipy's right-hand side is a vectorized NumPy SA field (the fair, usual way to write it).
attnflow's compilation is timed separately; run times are the best of --repeats runs.

    python benchmarks/trajectory.py [--n 32] [--d 3] [--beta 1] [--t1 30] [--repeats 5]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import attnflow as af  # noqa: E402


def numpy_sa(x, beta):
    logits = beta * (x @ x.T)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    y = w @ x
    return y - np.sum(x * y, axis=1, keepdims=True) * x


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--t1", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rtol, atol = 1e-6, 1e-8
    x0 = af.sphere.uniform(jax.random.key(0), args.n, args.d)
    ts = np.linspace(0.0, args.t1, 31)
    field = af.SA(args.beta)

    def run_attnflow():
        return af.simulate(
            field, x0, ts, solver="tsit5", rtol=rtol, atol=atol
        ).xs.block_until_ready()

    start = time.perf_counter()
    run_attnflow()
    first = time.perf_counter() - start
    t_af, xs = best_of(run_attnflow, args.repeats)

    x0n, shape = np.asarray(x0), (args.n, args.d)

    def run_scipy():
        sol = solve_ivp(
            lambda t, y: numpy_sa(y.reshape(shape), args.beta).ravel(),
            (0.0, args.t1),
            x0n.ravel(),
            method="RK45",
            t_eval=ts,
            rtol=rtol,
            atol=atol,
        )
        return sol.y.T.reshape(len(ts), *shape)

    t_sp, ys = best_of(run_scipy, args.repeats)
    err = float(jnp.abs(xs - ys).max())
    print(
        f"machine: {platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}"
    )
    print(
        f"workload: SA n={args.n} d={args.d} beta={args.beta:g} t1={args.t1:g} float64 "
        f"rtol={rtol:g} atol={atol:g}"
    )
    print(f"attnflow (tsit5): compile {first - t_af:.3f} s, run {t_af * 1e3:.2f} ms")
    print(f"scipy (RK45):     run {t_sp * 1e3:.2f} ms")
    print(f"max |difference| of the trajectories: {err:.2e}")
    print(f"ratio scipy / attnflow (run): {t_sp / t_af:.1f}x")


if __name__ == "__main__":
    main()
