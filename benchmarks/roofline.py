"""Roofline: the achieved FLOP rate of an attention field against this machine's matmul rate.

The ceiling is the best rate of a square `4096 x 4096` matmul (`2 N^3` flops) in each dtype.
The field is SA with `Q = K = V = I` and `d` coordinates (default 128), `block="auto"` (the dense
matrix up to 2048 tokens, key blocks above): its useful work is two `n x n x d` products, the
logits `<x_i, x_j>` and the weighted sum of the values, `4 n^2 d` flops (the exponentials and the
projection are not counted). "Field" is one velocity evaluation, "step" one discrete layer
`normalize(x + h A x)` (`PostLN.layer`, what `simulate(solver=Layers(h))` repeats). Each time is
the best of several runs of the compiled function.

At `d = 3` the exponentials dominate (one per pair against 12 flops of products), so the rate is
far below the ceiling whatever the implementation: pass `--d 3` to see it.

    python benchmarks/roofline.py [--d 128] [--max-log2 16] [--dtypes float32 float64]
"""

import argparse
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

import attnflow as af  # noqa: E402
from attnflow import sphere  # noqa: E402


def best(f, *args, budget: float = 2.0, most: int = 10) -> float:
    """The best time of `f(*args)` (compiled and run once before), over at most `most` runs
    or about `budget` seconds."""
    jax.block_until_ready(f(*args))
    times, total = [], 0.0
    while len(times) < most and (total < budget or len(times) < 2):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
        total += times[-1]
    return min(times)


def ceiling(dtype, size: int = 4096) -> float:
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    return 2 * size**3 / best(jax.jit(lambda a: a @ a), a)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--min-log2", type=int, default=8)
    parser.add_argument("--max-log2", type=int, default=16)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    args = parser.parse_args()
    print(f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s), d = {args.d}")
    for name in args.dtypes:
        dtype = jnp.dtype(name)
        top = ceiling(dtype)
        print(f"\n{name}: matmul ceiling {top / 1e9:.1f} GFLOP/s")
        print("      n |  field (s) | GFLOP/s | of ceiling |   step (s) | GFLOP/s | of ceiling")
        for k in range(args.min_log2, args.max_log2 + 1):
            n = 2**k
            x = sphere.uniform(jax.random.key(k), n, args.d, dtype=dtype)
            field = af.SA(jnp.asarray(1.0, dtype))
            flops = 4 * n * n * args.d
            t_field = best(jax.jit(lambda x, field=field: field(0.0, x)), x)
            t_step = best(jax.jit(lambda x, field=field: field.layer(0.0, x, 0.1)), x)
            print(
                f"{n:7d} | {t_field:10.4f} | {flops / t_field / 1e9:7.1f} | "
                f"{flops / t_field / top:9.0%} | {t_step:10.4f} | {flops / t_step / 1e9:7.1f} | "
                f"{flops / t_step / top:9.0%}"
            )


if __name__ == "__main__":
    main()
