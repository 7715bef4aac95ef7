"""Compiled code reused across calls: a repeated study compiles nothing.

A small phase diagram (n = d = 32, 10 betas x 16 samples = 160 items, T = 30, h = 0.1, float64)
is computed three times in one process: once cold, once identically, once with other betas, key
and delta (values, not program: nothing to compile). `crossing_time` likewise (jit-compiled and
vectorized over beta). XLA compilations are counted through `jax.monitoring`.

    python benchmarks/repeat_calls.py [--repeats 3]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from jax import monitoring  # noqa: E402

import attnflow as af  # noqa: E402

_COMPILES = []
monitoring.register_event_duration_secs_listener(
    lambda name, duration, **kw: (
        _COMPILES.append(duration) if name.endswith("backend_compile_duration") else None
    )
)


def timed(call, repeats: int = 1):
    """(best wall time, XLA compilations in the first run, compile seconds in the first run)."""
    times = []
    for i in range(repeats):
        _COMPILES.clear()
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
        if i == 0:
            count, seconds = len(_COMPILES), sum(_COMPILES)
    return min(times), count, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, {jax.device_count()} device(s)"
    )
    ts = np.arange(31) * 1.0

    def diagram(seed=0, low=0.1, delta=1e-3):
        return af.phase_diagram(
            key=jax.random.key(seed),
            n=32,
            d=32,
            betas=np.linspace(low, 9.0, 10),
            ts=ts,
            samples=16,
            delta=delta,
            progress=False,
        ).prob

    rows = [
        ("phase_diagram, first call", timed(diagram)),
        ("phase_diagram, identical call", timed(diagram, args.repeats)),
        ("phase_diagram, other betas, key, delta", timed(lambda: diagram(3, 0.2, 2e-3))),
    ]
    betas = np.linspace(0.1, 9.0, 90)
    rows += [
        ("crossing_time(90 betas), first call", timed(lambda: af.crossing_time(betas, 32))),
        (
            "crossing_time(90 betas), identical call",
            timed(lambda: af.crossing_time(betas, 32), args.repeats),
        ),
        (
            "crossing_time, other betas and delta",
            timed(lambda: af.crossing_time(betas + 0.5, 32, delta=2e-3)),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'call':<{width}}  {'wall':>9}  {'compiles':>8}  {'compiling':>9}")
    for name, (wall, count, seconds) in rows:
        print(f"{name:<{width}}  {wall:8.3f}s  {count:8d}  {seconds:8.3f}s")
    for study, first, second in (("phase_diagram", 0, 1), ("crossing_time", 3, 4)):
        ratio = rows[first][1][0] / rows[second][1][0]
        print(f"{study}: second identical call {ratio:.1f}x faster than the first (target 5x)")


if __name__ == "__main__":
    main()
