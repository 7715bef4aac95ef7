"""The cost of a GLPR Fig. 3 panel per dimension, against the panel at `d = n = 32`.

With identity weights and `d > n` the study evolves the tokens in the `n`-dimensional span of
their initial positions, so every panel with `d >= n` should cost what `d = n` costs: the only
work that grows with `d` is drawing each realization's tokens and reducing them, once per
realization. This script runs `phase_diagram` at the settings of `attnflow figure3` (n = 32,
betas in [0.1, 9], T = 30, h = 0.1, 151 saves), with fewer samples, for each `d`; it times a
first call (compilation included) and a second, compiled one, and prints the compiled time's
ratio to `d = 32`. The bar is 1.5x; a ratio above it is flagged. (Drawing and reducing the tokens
once per `(beta, sample)` item instead of once per realization made `d = 1024` cost 1.28x
`d = 32` on an idle 2-core machine, and 2.5x or more beside other work.) The totals, times
`1024 / samples`, estimate the full figure's time.

Like `attnflow figure3`, it presents the CPU as one JAX device per core
(`attnflow.sweep.use_cpu_cores`) so that each panel's items are split over every core;
`--cpu-devices 1` measures one device (one core), as before that change.

    python benchmarks/figure3_dims.py [--samples 32] [--num-betas 90] [--dims 2 8 32 128 512 1024]
                                      [--cpu-devices N] [--dtype float32]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import attnflow as af  # noqa: E402

BAR = 1.5


def panel(d: int, betas, ts, samples: int, dtype: str) -> tuple[float, float]:
    """Seconds of a first and a second (compiled) `phase_diagram` at dimension `d`."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        af.phase_diagram(
            key=jax.random.key(0),
            n=32,
            d=d,
            betas=betas,
            ts=ts,
            samples=samples,
            dtype=dtype,
            progress=False,
        )
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--num-betas", type=int, default=90)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32, 128, 512, 1024])
    parser.add_argument("--cpu-devices", type=int, default=None, help="(default: the cores)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    args = parser.parse_args()
    af.sweep.use_cpu_cores(args.cpu_devices)
    betas = np.linspace(0.1, 9.0, args.num_betas)
    ts = np.arange(151) * 0.2
    items = args.num_betas * args.samples
    print(
        f"{platform.processor() or platform.machine()}, {jax.device_count()} JAX device(s), "
        f"{args.dtype}"
    )
    print(f"n = 32, {args.num_betas} betas x {args.samples} samples = {items} items per panel")
    times = {d: panel(d, betas, ts, args.samples, args.dtype) for d in args.dims}
    reference = times[32][1] if 32 in times else None
    for d, (first, warm) in times.items():
        ratio = "" if reference is None else f"{warm / reference:5.2f} x d=32"
        flag = "  ABOVE THE BAR" if reference and warm > BAR * reference else ""
        print(
            f"d = {d:5d}: first {first:6.1f} s, compiled {warm:6.1f} s "
            f"({items / warm:6.0f} items/s)  {ratio}{flag}"
        )
    warm_total = sum(warm for _, warm in times.values())
    scale = 1024 / args.samples
    print(
        f"compiled total {warm_total:.1f} s; at 1024 samples about {warm_total * scale / 60:.1f} "
        "min plus compilation"
    )


if __name__ == "__main__":
    main()
