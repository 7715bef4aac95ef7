"""Peak memory of a phase-diagram sweep against its budget, as the number of samples grows.

Each run is a fresh process (so peak RSS is its own): n = 32, d = 512, 2 betas, T = 30,
h = 0.1, float64, with a memory budget. A run with 1 sample gives the fixed cost (Python, JAX,
XLA, compilation); what a sweep adds on top of it must not grow with the number of samples, and
stays near the budget (which bounds the compiled chunk's working memory, see README.md).

    python benchmarks/sweep_memory.py [--budget-mib 16] [--samples 1 256 4096]
"""

import argparse
import subprocess
import sys

CHILD = """
import resource, sys, jax, numpy as np
jax.config.update("jax_enable_x64", True)
import attnflow as af
samples, budget = int(sys.argv[1]), int(sys.argv[2])
af.phase_diagram(key=jax.random.key(0), n=32, d=512, betas=[1.0, 6.0],
                 ts=np.arange(0, 301, 2) * 0.1, samples=samples, memory=budget, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-mib", type=float, default=16.0)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 256, 4096])
    args = parser.parse_args()
    budget = int(args.budget_mib * 2**20)
    base = None
    for samples in args.samples:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(samples), str(budget)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        peak = int(out.split()[-1]) / 2**10  # ru_maxrss is in KiB on Linux
        base = peak if base is None else base
        print(
            f"samples = {samples:6d}: peak RSS {peak:7.1f} MiB, above the 1-sample run "
            f"{peak - base:6.1f} MiB (budget {args.budget_mib:g} MiB)"
        )


if __name__ == "__main__":
    main()
