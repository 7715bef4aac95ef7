"""Many tokens: blockwise against dense attention, memory against n, and a long simulation.

Each measurement runs in a fresh process, so its peak resident memory (`ru_maxrss`, which
includes Python, JAX and compilation) is its own; "during the run" is the resident memory
sampled while the compiled field runs, above what the process held just before.

1. `n = 16384`, `d = 3`, float32: SA velocity, blockwise (`block=512`) and dense
   (`block=None`): time (best of 3) and memory, and their ratios (targets: time within 1.5x,
   at least 10x less memory).
2. The blockwise SA velocity for `n = 2^14 ... 2^max` (`--max-log2`, default 18; 20 takes
   about 10 more minutes on 2 cores): peak memory, and a fit `a + b n` of the memory used
   during the run, with the log-log slope over the last three sizes (1 = linear). The compiled
   program's own account (`memory_analysis`, without running it) is fitted up to `2^20` in
   any case.
3. `n = 65536`, `d = 3`, float32: 100 layers of SA (`simulate(solver=af.Layers(0.1))`),
   time and peak memory (`--steps-n` to change `n`, `--skip-simulation` to skip).

    python benchmarks/large_n.py [--max-log2 18] [--steps-n 65536] [--skip-simulation]
"""

import argparse
import subprocess
import sys

import numpy as np

COMMON = """
import resource, sys, threading, time
import jax, jax.numpy as jnp
import attnflow as af
from attnflow import sphere

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def during(f, *args):
    \"\"\"(seconds, bytes): one run of the compiled `f`, and the resident memory it added.\"\"\"
    start, top, done = rss(), [0], threading.Event()
    def sample():
        while not done.is_set():
            top[0] = max(top[0], rss())
            time.sleep(0.001)
    thread = threading.Thread(target=sample)
    thread.start()
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    seconds = time.perf_counter() - t
    done.set()
    thread.join()
    return seconds, max(top[0], rss()) - start

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

VELOCITY = (
    COMMON
    + """
n, block, repeats = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
block = None if block == "dense" else int(block)
x = sphere.uniform(jax.random.key(0), n, 3, dtype=jnp.float32)
f = jax.jit(lambda x: af.SA(jnp.float32(1.0), block=block)(0.0, x))
f.lower(x).compile()
times, used = [], 0
for _ in range(repeats):
    seconds, grew = during(f, x)
    times.append(seconds)
    used = max(used, grew)
print(min(times), used, peak())
"""
)

COMPILED = """
import sys, jax, jax.numpy as jnp
import attnflow as af
for k in range(14, 21):
    x = jax.ShapeDtypeStruct((2**k, 3), jnp.float32)
    m = jax.jit(lambda x: af.SA(jnp.float32(1.0), block=512)(0.0, x)).lower(x).compile()
    m = m.memory_analysis()
    print(2**k, m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
"""

SIMULATION = (
    COMMON
    + """
n = int(sys.argv[1])
x0 = sphere.uniform(jax.random.key(0), n, 3, dtype=jnp.float32)
ts = jnp.linspace(0.0, 10.0, 11, dtype=jnp.float32)
run = jax.jit(lambda x0: af.simulate(af.SA(jnp.float32(1.0)), x0, ts, solver=af.Layers(0.1)).xs)
t = time.perf_counter()
run.lower(x0).compile()
compiled = time.perf_counter() - t
seconds, used = during(run, x0)
print(compiled, seconds, used, peak())
"""
)


def child(script: str, *args) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], check=True, capture_output=True, text=True
    ).stdout
    return [float(v) for v in out.split()]


def report_fit(what: str, ns: np.ndarray, used: np.ndarray) -> None:
    """Linear in n means `used = a + b n`: the least-squares fit, its worst relative residual,
    and the log-log slope over the last three sizes (tends to 1 once `b n` dominates `a`)."""
    b, a = np.polyfit(ns, used, 1)
    worst = np.max(np.abs(a + b * ns - used) / used)
    tail = np.polyfit(np.log(ns[-3:]), np.log(used[-3:]), 1)[0]
    print(
        f"   {what}: fit {a / 2**20:.1f} MiB + {b:.1f} bytes x n (worst residual {worst:.0%}); "
        f"log-log slope over the last three sizes {tail:.2f}"
    )


def mib(b: float) -> str:
    return f"{b / 2**20:8.1f} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-log2", type=int, default=18)
    parser.add_argument("--steps-n", type=int, default=65536)
    parser.add_argument("--skip-simulation", action="store_true")
    args = parser.parse_args()

    print("1. n = 16384, d = 3, float32, one SA velocity (best of 3)")
    blockwise = child(VELOCITY, 16384, 512, 3)
    dense = child(VELOCITY, 16384, "dense", 3)
    for name, (seconds, used, top) in (("blockwise", blockwise), ("dense", dense)):
        print(
            f"   {name:9s}: {seconds:7.3f} s, during the run {mib(used)}, process peak {mib(top)}"
        )
    print(
        f"   blockwise / dense time: {blockwise[0] / dense[0]:.2f}x (target <= 1.5x); "
        f"memory during the run: {dense[1] / max(blockwise[1], 4096):.0f}x less (target >= 10x)"
    )

    print("2. blockwise SA velocity (block 512), d = 3, float32: memory against n")
    ns, used = [], []
    for k in range(14, args.max_log2 + 1):
        seconds, grew, top = child(VELOCITY, 2**k, 512, 1)
        ns.append(2**k)
        used.append(grew)
        print(f"   n = 2^{k} = {2**k:8d}: {seconds:8.2f} s, during {mib(grew)}, peak {mib(top)}")
    if len(ns) >= 3:
        report_fit("memory during the run", np.asarray(ns, float), np.asarray(used, float))
    compiled = np.asarray(child(COMPILED)).reshape(-1, 2)
    for n, b in compiled:
        print(f"   compiled (not run) n = {int(n):8d}: arguments + output + scratch {mib(b)}")
    report_fit("compiled memory", compiled[:, 0], compiled[:, 1])

    if not args.skip_simulation:
        print(f"3. 100 layers of SA at n = {args.steps_n}, d = 3, float32")
        compiled, seconds, grew, top = child(SIMULATION, args.steps_n)
        print(
            f"   compilation {compiled:.1f} s, run {seconds:.1f} s; "
            f"during the run {mib(grew)}, process peak {mib(top)}"
        )


if __name__ == "__main__":
    main()
