"""The cost of one step of each kernel and normalization scheme, relative to SA, in one process.

Velocity of `n` tokens uniform on S^{d-1} (`d = 64`, float64, `beta = 1`), jit-compiled, best of
several runs, at `n = 32, 256, 2048`. Sinkhorn's cost is also compared with its bound,
(iterations + 1) times softmax: the iterations are counted by running ott-jax's solver directly.

    python benchmarks/variants.py [--n 32 256 2048] [--d 64] [--repeats 20]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)


import attnflow as af  # noqa: E402


def best_of(fn, x, repeats):
    fn(x).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return min(times)


def sinkhorn_iterations(x, beta):
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    n = x.shape[0]
    kernel = af.Sinkhorn(beta)
    problem = linear_problem.LinearProblem(geometry.Geometry(cost_matrix=-beta * x @ x.T))
    tol = kernel.tol or max(1e-9, 100 * float(jax.numpy.finfo(x.dtype).eps))  # the default
    out = sinkhorn.Sinkhorn(threshold=tol / n, max_iterations=kernel.max_iter)(problem)
    return int(out.n_iters)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[32, 256, 2048])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    beta = args.beta
    fields = {
        "SA = PostLN(Softmax)": af.SA(beta),
        "USA": af.USA(beta),
        "causal SA": af.PostLN(af.Softmax(beta, causal=True)),
        "Hardmax": af.PostLN(af.Hardmax()),
        "Sinkhorn": af.PostLN(af.Sinkhorn(beta)),
        "PreLN": af.PreLN(af.Softmax(beta)),
        "PeriLN": af.PeriLN(af.Softmax(beta)),
        "NGPT": af.NGPT(af.Softmax(beta), 1.0),
        "NoNorm": af.NoNorm(af.Softmax(beta)),
    }
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}, d = {args.d}, beta = {beta}")
    for n in args.n:
        x = af.sphere.uniform(jax.random.key(0), n, args.d)
        times = {
            name: best_of(jax.jit(lambda x, f=field: f(0.0, x)), x, args.repeats)
            for name, field in fields.items()
        }
        base = times["SA = PostLN(Softmax)"]
        row = ", ".join(f"{name} {t / base:.2f}x" for name, t in times.items())
        iters = sinkhorn_iterations(x, beta)
        print(f"n = {n:5d}: SA {base * 1e6:9.1f} us | {row}")
        print(
            f"           Sinkhorn: {iters} iterations, {times['Sinkhorn'] / base:.1f}x SA "
            f"(bound {iters + 1}x)"
        )


if __name__ == "__main__":
    main()
