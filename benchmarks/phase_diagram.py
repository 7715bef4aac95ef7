"""A reduced GLPR Fig. 3 through attnflow and through the published method (NumPy), in one process.

n = 32 tokens, 8 values of beta in [0.1, 9], 256 realizations, T = 30, h = 0.1 (300 layers),
float64, 200 checkpoints (the layers nearest to 200 evenly spaced times), at d = 32 and d = 512.
Both get the same initial tokens (attnflow's realizations); the script checks that they give
the same probabilities (to 1e-8) and prints both times and the ratio. attnflow's time is end to
end, compilation included ("cold"), and again once compiled ("warm").

    python benchmarks/phase_diagram.py [--d 32 512] [--samples 256] [--betas 8]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from phase_diagram_baseline import layers_phase_diagram  # noqa: E402

import attnflow as af  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, nargs="+", default=[32, 512])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--betas", type=int, default=8)
    parser.add_argument("--checkpoints", type=int, default=200)
    args = parser.parse_args()
    h, t1, delta = 0.1, 30.0, 1e-3
    betas = np.linspace(0.1, 9.0, args.betas)
    layers = np.unique(np.rint(np.linspace(0, round(t1 / h), args.checkpoints))).astype(int)
    ts = layers * h
    key = jax.random.key(0)
    print(
        f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}; n = {args.n}, {args.betas} betas, {args.samples} samples, "
        f"{layers.size} checkpoints, T = {t1}, h = {h}, float64"
    )
    for d in args.d:

        def attnflow_run(d=d):
            return af.phase_diagram(
                key=key,
                n=args.n,
                d=d,
                betas=betas,
                ts=ts,
                samples=args.samples,
                solver=af.Layers(h),
                progress=False,
            ).prob

        start = time.perf_counter()
        prob = attnflow_run()
        cold = time.perf_counter() - start
        start = time.perf_counter()
        attnflow_run()
        warm = time.perf_counter() - start

        x0 = jax.vmap(lambda s, d=d: af.studies.phase_diagram_sample(key, s, n=args.n, d=d)[0])(
            np.arange(args.samples)
        )
        x0 = np.asarray(x0)
        start = time.perf_counter()
        reference = layers_phase_diagram(x0, betas, layers, h, delta)
        baseline = time.perf_counter() - start
        diff = np.max(np.abs(prob - reference))
        print(
            f"d = {d:4d}: attnflow {cold:7.2f} s cold, {warm:7.2f} s warm | baseline "
            f"{baseline:7.2f} s | baseline / attnflow: {baseline / cold:5.1f}x cold, "
            f"{baseline / warm:5.1f}x warm | max |prob diff| {diff:.1e}"
        )
        if diff > 1e-8:
            raise SystemExit(f"the probabilities differ by {diff:.2e} > 1e-8 at d = {d}")


if __name__ == "__main__":
    main()
