"""`d = 1024` against `d = n`: the exact span reduction in `simulate` and in every study.

`n = 32` tokens, SA with `Q = K = V = I` (the studies' default), float64, up to `t = 30`. Each
line runs the same call at `d = 32` and at `d = 1024` and prints both times (the second of two
calls, so compilation is left out) and their ratio; 1.0x means `d = 1024` costs what `d = n`
does. With `--full`, the same calls also run at `d = 1024` with the reductions switched off (the
sweep engine's executables are cleared for it), for the cost they save; `phase_diagram` has its
own reduction, always on.

    python benchmarks/reduction.py [--full]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import attnflow as af  # noqa: E402
from attnflow.integrate import _simulate  # noqa: E402
from attnflow.stability import _lyapunov, lyapunov_spectrum  # noqa: E402
from attnflow.studies import _metastability, ftle_diagram  # noqa: E402

N = 32
TS = jnp.linspace(0.0, 30.0, 31)
STUDY_TS = np.arange(0, 301, 10) * 0.1


@jax.jit  # traced tokens: the tangents' span is taken inside the compiled function
def lyapunov(x0):
    return lyapunov_spectrum(af.SA(4.0), x0, 30.0, k=1, key=jax.random.key(1)).exponents


def calls(d: int) -> dict:
    x0 = af.sphere.uniform(jax.random.key(0), N, d)
    key = jax.random.key(1)
    study = dict(n=N, d=d, betas=[1.0, 4.0], samples=32, progress=False)
    return {
        "simulate, tsit5": lambda: af.simulate(af.SA(1.0), x0, TS).xs,
        "simulate, layers": lambda: af.simulate(af.SA(1.0), x0, TS, solver=af.Layers(0.1)).xs,
        "lyapunov_spectrum, k = 1": lambda: (
            lyapunov_spectrum(af.SA(4.0), x0, 10.0, k=1, key=jax.random.key(1)).exponents
        ),
        "phase_diagram": lambda: (
            af.phase_diagram(key=key, ts=np.arange(0, 101, 10) * 0.1, **study).prob
        ),
        "metastability": lambda: (
            _metastability.metastability(key=key, ts=np.arange(0, 101, 10) * 0.1, **study).clusters
        ),
        "ftle_diagram": lambda: ftle_diagram(key=key, t1=5.0, **study).ftle,
    }


def second(f) -> float:
    jax.block_until_ready(f())
    t = time.perf_counter()
    jax.block_until_ready(f())
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also time d = 1024 unreduced")
    args = parser.parse_args()
    small, large = calls(N), calls(1024)
    for name in small:
        a, b = second(small[name]), second(large[name])
        line = f"{name:26s} d = {N}: {a:7.3f} s   d = 1024: {b:7.3f} s   ratio {b / a:5.2f}x"
        if args.full and name == "phase_diagram":
            line += "   (its own reduction, always on)"
        elif args.full:
            saved = (
                _simulate.span_reduction,
                _metastability.span_reduction,
                _lyapunov.span_of_tangents,
            )
            _simulate.span_reduction = _metastability.span_reduction = lambda f, x: None
            _lyapunov.span_of_tangents = lambda f, y, w: (f, y, w)
            af.sweep.clear_cache()
            lyapunov.clear_cache()
            try:
                c = second(calls(1024)[name])
            finally:
                (
                    _simulate.span_reduction,
                    _metastability.span_reduction,
                    _lyapunov.span_of_tangents,
                ) = saved
                af.sweep.clear_cache()
                lyapunov.clear_cache()
            line += f"   unreduced: {c:7.3f} s ({c / b:.1f}x the reduced)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
