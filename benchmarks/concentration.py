"""ABRR's concentration experiment: attnflow (JAX + diffrax, two sweeps) against NumPy + SciPy.

The same work in both: for `samples` realizations of `n` tokens uniform in the unit disk
(`Q = K = V = I`, `d = 2`), the zero-temperature flow run until it is at rest (the limit map),
and the finite-temperature flow `dx_i/dt = sum_j A_ij (x_j - x_i)` at each beta, saved at the
same log-spaced times; adaptive Runge-Kutta 5(4) in both (diffrax's Tsit5 / SciPy's RK45),
rtol 1e-8, atol 1e-10, float64; then the exact W2 distance of the tokens to the push-forward
at every save time (attnflow: on the device, inside the sweep; the baseline: SciPy's
assignment on the host). Prints both wall times (attnflow's after compilation, and with it),
their ratio, and the largest difference of the results.

    python benchmarks/concentration.py [--n 128] [--samples 16] [--t1 100] [--repeats 2]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402
import scipy.optimize  # noqa: E402

from attnflow import concentration as cn  # noqa: E402

BETAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
RTOL, ATOL = 1e-8, 1e-10


def softmax_rhs(beta: float, n: int, d: int):
    def rhs(t, y):
        x = y.reshape(n, d)
        logits = beta * (x @ x.T)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        return (w @ x - x).ravel()

    return rhs


def hardmax_rhs(n: int, d: int):
    def rhs(t, y):
        x = y.reshape(n, d)
        logits = x @ x.T
        best = logits == logits.max(axis=1, keepdims=True)
        return (best @ x / best.sum(axis=1, keepdims=True) - x).ravel()

    return rhs


def baseline(x0s, ts, tol: float):
    """The limits (RK45 until the largest speed is <= tol: a terminal event) and the
    finite-beta trajectories, one solve_ivp call per realization and beta."""
    samples, n, d = x0s.shape
    hard = hardmax_rhs(n, d)

    limits = []
    for x0 in x0s:
        threshold = tol * max(1.0, np.linalg.norm(x0, axis=1).max())

        def at_rest(t, y, threshold=threshold):
            return np.max(np.linalg.norm(hard(t, y).reshape(n, d), axis=1)) - threshold

        at_rest.terminal = True
        solution = scipy.integrate.solve_ivp(
            hard, (0, 1e3), x0.ravel(), rtol=RTOL, atol=ATOL, events=at_rest
        )
        limits.append(solution.y[:, -1].reshape(n, d))
    flows = np.zeros((len(BETAS), samples, ts.size, n, d))
    for b, beta in enumerate(BETAS):
        for s, x0 in enumerate(x0s):
            solution = scipy.integrate.solve_ivp(
                softmax_rhs(beta, n, d), (0, ts[-1]), x0.ravel(), t_eval=ts, rtol=RTOL, atol=ATOL
            )
            flows[b, s] = solution.y.T.reshape(ts.size, n, d)
    return np.asarray(limits), flows


def attnflow_run(ts, samples: int, n: int, d: int):
    """`concentration` (the two sweeps, and the distances on the device)."""
    result = cn.concentration(
        key=jax.random.key(0),
        n=n,
        d=d,
        betas=BETAS,
        ts=ts,
        samples=samples,
        tol=1e-7,
        rtol=RTOL,
        atol=ATOL,
        progress=False,
    )
    return result.limits, result.distance


def distances(limits, flows):
    """The exact W2 between the tokens and the push-forward at every `(beta, realization,
    save time)`: SciPy's assignment on the squared Euclidean cost matrix."""
    out = np.zeros(flows.shape[:3])
    for index in np.ndindex(*out.shape):
        x, y = flows[index], limits[index[1]]
        cost = np.sum((x[:, None] - y[None]) ** 2, axis=-1)
        rows, cols = scipy.optimize.linear_sum_assignment(cost)
        out[index] = np.sqrt(cost[rows, cols].mean())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--t1", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n, d, samples = args.n, 2, args.samples
    ts = np.concatenate([[0.0], np.geomspace(args.t1 / 2000, args.t1, 40)])
    key = jax.random.key(0)
    x0s = np.stack([np.asarray(cn.initial_tokens(key, s, n=n, d=d)) for s in range(samples)])
    print(
        f"{platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}; n = {n}, d = {d}, {samples} realizations, "
        f"{len(BETAS)} betas, {ts.size} save times to t = {args.t1:g}"
    )

    start = time.perf_counter()
    ours = attnflow_run(ts, samples, n, d)
    first = time.perf_counter() - start
    ours_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = attnflow_run(ts, samples, n, d)
        ours_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    limits, flows = baseline(x0s, ts, 1e-7)
    theirs = limits, distances(limits, flows)
    base = time.perf_counter() - start
    best = min(ours_times)
    print(f"attnflow: {best:.2f} s (first call, with compilation: {first:.2f} s)")
    print(f"NumPy + solve_ivp: {base:.2f} s")
    print(f"ratio: {base / best:.1f}x")
    print(
        f"difference: limits {np.abs(ours[0] - theirs[0]).max():.2e} (largest); W2 "
        f"{np.median(np.abs(ours[1] - theirs[1])):.2e} (median), "
        f"{np.abs(ours[1] - theirs[1]).max():.2e} (largest: near-ties at large beta)"
    )


if __name__ == "__main__":
    main()
