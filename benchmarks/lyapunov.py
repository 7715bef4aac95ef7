"""The full Lyapunov spectrum of SA (n = 32, d = 3, T = 100) through attnflow and through the
finite-difference perturbation method, hand-written in NumPy/SciPy, in one process.

attnflow: `stability.lyapunov_spectrum` (tangent vectors by `jax.jvp`, integrated by diffrax with
the state, QR every 1, 5 or 10 time units).
Baseline: the method as it is commonly hand-written: the reference trajectory and one perturbed
trajectory per exponent (`x + eps q_j`, renormalized onto the sphere), all integrated together by
scipy's `solve_ivp` (one vectorized NumPy right-hand side for all 65 copies), then every time unit
the differences `(x_j - x) / eps` are projected onto the tangent space, QR-factorized, their
`log |R_jj|` summed, and the copies reset to `x + eps Q_j`.

"Equal accuracy": every run is scored by its largest error against a reference spectrum
(attnflow, Dopri8 at rtol = atol = 1e-12, from the same tangent frame). attnflow runs at a ladder
of solvers, tolerances and QR intervals, the baseline at a ladder of tolerances; for each baseline
run the ratio uses the fastest attnflow run at least as accurate.

    python benchmarks/lyapunov.py [--n 32] [--d 3] [--t1 100] [--beta 1]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import attnflow as af  # noqa: E402


def sa_velocity(x, beta):
    """SA with Q = K = V = I for a stack of configurations `x` of shape (m, n, d), in NumPy."""
    logits = beta * np.einsum("mid,mjd->mij", x, x)
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    y = np.einsum("mij,mjd->mid", w, x)
    return y - np.sum(x * y, axis=-1, keepdims=True) * x / np.sum(x * x, axis=-1, keepdims=True)


def tangent(x, w):
    return w - np.sum(x * w, axis=-1, keepdims=True) * x / np.sum(x * x, axis=-1, keepdims=True)


def finite_difference_spectrum(x0, frame, beta, t1, rtol, atol, eps=1e-7):
    """Benettin's method with finite differences: one perturbed trajectory per exponent, started
    along the orthonormal tangent `frame` (shape (k, n, d))."""
    k, n, d = frame.shape
    x = x0
    sums = np.zeros(k)
    for step in range(int(round(t1))):
        copies = x + eps * frame
        copies /= np.linalg.norm(copies, axis=-1, keepdims=True)
        state = np.concatenate([x[None], copies]).ravel()
        solution = solve_ivp(
            lambda t, s: sa_velocity(s.reshape(k + 1, n, d), beta).ravel(),
            (step, step + 1),
            state,
            method="DOP853",
            rtol=rtol,
            atol=atol,
        )
        end = solution.y[:, -1].reshape(k + 1, n, d)
        x = end[0]
        differences = tangent(x, (end[1:] - x) / eps)
        q, r = np.linalg.qr(differences.reshape(k, -1).T)
        sums += np.log(np.abs(np.diagonal(r)))
        frame = q.T.reshape(k, n, d)
    return np.sort(sums / t1)[::-1]


def timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--d", type=int, default=3)
    parser.add_argument("--t1", type=float, default=100.0)
    parser.add_argument("--beta", type=float, default=1.0)
    args = parser.parse_args()
    field = af.SA(args.beta)
    x0 = af.sphere.uniform(jax.random.key(0), args.n, args.d)
    k = args.n * (args.d - 1)
    print(
        f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}; SA, beta = {args.beta}, n = {args.n}, d = {args.d}, "
        f"T = {args.t1}, {k} exponents, float64"
    )

    key = jax.random.key(1)  # both methods start from the same tangent frame
    frame = jax.random.normal(key, (k, args.n, args.d))
    frame = np.asarray(frame) - np.sum(
        np.asarray(x0) * np.asarray(frame), -1, keepdims=True
    ) * np.asarray(x0)
    q, _ = np.linalg.qr(frame.reshape(k, -1).T)
    frame = q.T.reshape(k, args.n, args.d)

    def attnflow_run(solver, rtol, atol, every):
        spectrum = af.stability.lyapunov_spectrum(
            field, x0, args.t1, rtol=rtol, atol=atol, key=key, solver=solver, every=every
        )
        return np.asarray(spectrum.exponents)

    _, cold = timed(lambda: attnflow_run("tsit5", 1e-6, 1e-8, 1.0))
    print(f"attnflow at its defaults (tsit5, rtol 1e-6), compilation included: {cold:.2f} s")

    # In exact arithmetic the exponents at t1 do not depend on when the QRs happen (the R
    # factors multiply), so tangents by jvp may be re-orthonormalized less often; finite
    # differences may not, their perturbations must stay small.
    reference = attnflow_run("dopri8", 1e-12, 1e-12, 1.0)
    ladder = [(1e-6, 1e-8), (1e-8, 1e-10), (1e-10, 1e-12)]
    configurations = [
        (solver, rtol, rtol * 1e-2, every)
        for every in (1.0, 5.0, 10.0)
        for solver, rtol in [("tsit5", r) for r in (1e-3, 1e-4, 1e-5, 1e-6, 1e-8)]
        + [("dopri8", r) for r in (1e-5, 1e-6, 1e-8, 1e-10)]
    ]
    ours = []
    for configuration in configurations:
        attnflow_run(*configuration)  # compile
        exponents, elapsed = timed(lambda c=configuration: attnflow_run(*c))
        solver, rtol, atol, every = configuration
        name = f"{solver}, rtol {rtol:.0e}, atol {atol:.0e}, QR every {every:g}"
        ours.append((elapsed, np.abs(exponents - reference).max(), name))
        print(f"attnflow, jvp tangents ({name}): {elapsed:.2f} s; max error {ours[-1][1]:.1e}")
    for rtol, atol in ladder:
        theirs, elapsed = timed(
            lambda rtol=rtol, atol=atol: finite_difference_spectrum(
                np.asarray(x0), frame, args.beta, args.t1, rtol, atol
            )
        )
        error = np.abs(theirs - reference).max()
        match = [o for o in ours if o[1] <= error]
        line = (
            f"finite differences, NumPy/SciPy DOP853 (rtol {rtol:.0e}, atol {atol:.0e}): "
            f"{elapsed:.2f} s; max error {error:.1e}"
        )
        if match:
            best = min(match)
            line += f"; attnflow as accurate ({best[2]}) is {elapsed / best[0]:.1f}x faster"
        print(line)


if __name__ == "__main__":
    main()
