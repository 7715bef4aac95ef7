"""The circle's mean-field PDE: attnflow (JAX + diffrax) against NumPy + SciPy's solve_ivp.

The same scheme in both (solve_circle's `scheme="finite-volume"`): finite volumes in theta,
the velocity (the convolutions with exp(beta cos)) by FFT and shifted to the cell faces,
minmod-limited upwind
fluxes; adaptive Runge-Kutta 5(4) in time (diffrax's Tsit5 / SciPy's RK45,
Dormand-Prince), the same tolerances. SA, beta = 4, M = 1024 grid points, t in [0, 10], a
smooth two-bump initial density, float64. Prints both wall times (attnflow's after compilation,
and its compilation), their ratio, the number of right-hand-side evaluations, and the largest
difference between the two final densities; then the time of the default scheme, WENO5, on the
same problem.

    python benchmarks/meanfield.py [--grid 1024] [--beta 4] [--t1 10] [--repeats 3]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.integrate  # noqa: E402
import scipy.special  # noqa: E402

from attnflow import meanfield as mf  # noqa: E402


def initial(theta):
    rho = np.exp(np.cos(theta - 0.3)) + 0.8 * np.exp(2 * np.cos(theta - 2.5))
    return rho / (rho.sum() * 2 * np.pi / theta.shape[0])


def numpy_rhs(beta: float, M: int):
    """The same right-hand side in NumPy (SA, no noise, finite volumes)."""
    k = np.fft.fftfreq(M, 1.0 / M)
    derivative = np.where(np.abs(k) == M // 2, 0.0, k)
    ratios = scipy.special.ive(np.abs(k), beta) / scipy.special.ive(0, beta)
    q = 2 * np.pi * ratios / beta
    h = 2 * np.pi / M
    shift = np.exp(0.5j * derivative * h)
    calls = [0]

    def minmod(a, b):
        return np.where(a * b > 0, np.sign(a) * np.minimum(np.abs(a), np.abs(b)), 0.0)

    def rhs(t, rho):
        calls[0] += 1
        rho_hat = np.fft.fft(rho)
        numerator = np.fft.ifft(1j * k * q * rho_hat).real
        velocity = numerator / np.fft.ifft(2 * np.pi * ratios * rho_hat).real
        faces = np.fft.ifft(np.fft.fft(velocity) * shift).real
        up, down = np.roll(rho, -1), np.roll(rho, 1)
        slope = minmod(rho - down, up - rho)
        left, right = rho + slope / 2, up - np.roll(slope, -1) / 2
        flux = np.where(faces > 0, faces * left, faces * right)
        return -(flux - np.roll(flux, 1)) / h

    return rhs, calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=1024)
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument("--t1", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    M, beta, rtol, atol = args.grid, args.beta, 1e-8, 1e-10
    theta = 2 * np.pi * np.arange(M) / M
    rho0 = initial(theta)
    ts = jnp.linspace(0.0, args.t1, 11)
    print(
        f"{platform.machine()}, {jax.default_backend()}, jax {jax.__version__}, float64, "
        f"SA, beta = {beta:g}, M = {M}, t in [0, {args.t1:g}], rtol {rtol:g}, atol {atol:g}"
    )

    def attnflow_solve():
        return mf.solve_circle(
            rho0, ts, beta=beta, rtol=rtol, atol=atol, scheme="finite-volume"
        ).density

    start = time.perf_counter()
    jax.block_until_ready(attnflow_solve())
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = jax.block_until_ready(attnflow_solve())
        times.append(time.perf_counter() - start)
    ours_time = min(times)

    rhs, calls = numpy_rhs(beta, M)
    times = []
    for _ in range(args.repeats):
        calls[0] = 0
        start = time.perf_counter()
        theirs = scipy.integrate.solve_ivp(
            rhs, (0.0, args.t1), rho0, method="RK45", t_eval=np.asarray(ts), rtol=rtol, atol=atol
        )
        times.append(time.perf_counter() - start)
    theirs_time = min(times)
    difference = np.abs(np.asarray(ours[-1]) - theirs.y[:, -1]).max()
    print(
        f"attnflow solve_circle: {ours_time * 1e3:8.1f} ms (first call {first:.1f} s with "
        f"compilation)"
    )
    print(f"NumPy + solve_ivp:     {theirs_time * 1e3:8.1f} ms ({calls[0]} right-hand sides)")
    print(
        f"ratio (NumPy / attnflow): {theirs_time / ours_time:.1f}x; largest difference of "
        f"the final densities {difference:.1e} (peak {np.abs(theirs.y[:, -1]).max():.2f})"
    )
    jax.block_until_ready(mf.solve_circle(rho0, ts, beta=beta, rtol=rtol, atol=atol).density)
    weno = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(mf.solve_circle(rho0, ts, beta=beta, rtol=rtol, atol=atol).density)
        weno.append(time.perf_counter() - start)
    print(f"attnflow solve_circle, default scheme (weno5): {min(weno) * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
