"""One gradient through the flow, for each adjoint and for the layers, against the forward solve.

SA with random `Q, K, V` (entries `N(0, 1/d)`), `beta = 2`, `n = 32` tokens uniform on the
sphere in `d = 64`, save times `ts = 0, 1, ..., 30`. The loss is a scalar of the trajectory: the
sum over tokens and save times of the cosine to a fixed direction `e_1` (a `save` statistic), and
its gradient is taken with respect to `(beta, V, x0)` with `jax.grad`, through
`simulate(adjoint="checkpoint")`, `simulate(adjoint="backsolve")` (Tsit5, rtol 1e-6,
atol 1e-8) and `simulate(solver=af.Layers(0.1))` (300 layers).

1. Time: forward loss and gradient compiled separately (`jax.jit(...).lower(...).compile()`),
   then `--repeats` calls of each, alternated; the ratio of the medians gradient / forward
   (target: at most 4x), and of the best times.
2. Memory: XLA's memory analysis of each compiled program (arguments + outputs + temporaries)
   at three depths `T = 15, 30, 90` with 31 save times each; for the ODE solvers `ts` is an
   argument of the compiled program (the same program at every depth), the layers compile per
   depth. Also the checkpoint adjoint's memory against `max_steps` (it reserves its checkpoints
   from `max_steps`, not from the steps taken).
3. Accuracy (float64 only): the relative error of the gradient of each leaf, backsolve against
   checkpoint at the same tolerances, and both against checkpoint at rtol 1e-12, atol 1e-14.

    python benchmarks/gradients.py [--repeats 9] [--dtype float64|float32] [--no-accuracy]
"""

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import attnflow as af  # noqa: E402

N, D, BETA, H, SAVES = 32, 64, 2.0, 0.1, 31
METHODS = ("checkpoint", "backsolve", "layers")
DEPTHS = (15.0, 30.0, 90.0)
TOLERANCES = ((1e-6, 1e-8), (1e-8, 1e-10), (1e-10, 1e-12))
REFERENCE = (1e-12, 1e-14)


def problem(dtype):
    """`(params, Q, K, e)`: `params = (beta, V, x0)` are differentiated, `Q, K, e` fixed."""
    kq, kk, kv, kx = jax.random.split(jax.random.key(0), 4)
    Q, K, V = (jax.random.normal(k, (D, D), dtype) / D**0.5 for k in (kq, kk, kv))
    x0 = af.sphere.uniform(kx, N, D, dtype=dtype)
    e = jnp.zeros(D, dtype).at[0].set(1)
    return (jnp.asarray(BETA, dtype), V, x0), Q, K, e


def save_times(T: float) -> np.ndarray:
    return np.linspace(0.0, T, SAVES)


def layers_trajectory(field, x0, ts: np.ndarray, save):
    """`simulate(solver=Layers(h))`; concrete `ts` keep it traceable by an outer `jax.jit`."""
    return af.simulate(field, x0, ts, solver=af.Layers(H), save=save)


def make_loss(method: str, Q, K, e, ts=None, rtol=1e-6, atol=1e-8, **options):
    """`loss(params, ts)` for an ODE adjoint (`ts` traced), `loss(params)` for the layers."""

    def statistic(t, x):
        return x @ e  # cosines to e: tokens stay on the sphere

    if method == "layers":

        def loss(params):
            beta, V, x0 = params
            trajectory = layers_trajectory(af.SA(beta, Q, K, V), x0, ts, statistic)
            return jnp.sum(trajectory.xs)

        return loss

    def loss(params, ts):
        beta, V, x0 = params
        trajectory = af.simulate(
            af.SA(beta, Q, K, V),
            x0,
            ts,
            adjoint=method,
            rtol=rtol,
            atol=atol,
            save=statistic,
            **options,
        )
        return jnp.sum(trajectory.xs)

    return loss


def compiled(fn, *args):
    """(executable, compile seconds)."""
    start = time.perf_counter()
    executable = jax.jit(fn).lower(*args).compile()
    return executable, time.perf_counter() - start


def paired_times(forward, gradient, *args, repeats: int) -> tuple[list[float], list[float]]:
    """Call times of the two executables, alternated so that both see the same machine load."""
    jax.block_until_ready((forward(*args), gradient(*args)))  # warm up
    times = ([], [])
    for _ in range(repeats):
        for executable, out in zip((forward, gradient), times, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(executable(*args))
            out.append(time.perf_counter() - start)
    return times


def memory(executable) -> tuple[float, float]:
    """(total, temporaries) in MiB: arguments + outputs + temporaries - aliased."""
    m = executable.memory_analysis()
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
    return total / 2**20, m.temp_size_in_bytes / 2**20


def num_steps(params, Q, K, ts, rtol=1e-6, atol=1e-8) -> int:
    """Accepted Tsit5 steps of the forward solve (diffrax directly, same controller)."""
    beta, V, x0 = params
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(af.SA(beta, Q, K, V)),
        diffrax.Tsit5(),
        ts[0],
        ts[-1],
        None,
        x0,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=100_000,
    )
    return int(solution.stats["num_accepted_steps"])


def relative_errors(grads, reference) -> list[float]:
    return [
        float(jnp.linalg.norm(g - r) / jnp.linalg.norm(r))
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True)
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--no-accuracy", action="store_true", help="skip part 3")
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    print(
        f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, diffrax {diffrax.__version__}, {args.dtype}, "
        f"n = {N}, d = {D}, beta = {BETA}, {SAVES} save times, median of {args.repeats}"
    )
    params, Q, K, e = problem(dtype)

    print("\n1-2. time and memory of one gradient vs the forward loss, T = 15 / 30 / 90")
    print(
        f"{'method':<12} {'T':>4} {'steps':>6} {'compile f/g':>12} {'forward':>9} "
        f"{'gradient':>9} {'ratio':>6} {'(best)':>6} {'mem fwd':>9} {'mem grad':>9} {'(temp)':>9}"
    )
    steps = {T: num_steps(params, Q, K, save_times(T)) for T in DEPTHS}
    for method in METHODS:
        if method != "layers":  # one program for every depth, ts an argument
            loss = make_loss(method, Q, K, e)
            ts30 = jnp.asarray(save_times(30.0), dtype)
            f, cf = compiled(loss, params, ts30)
            g, cg = compiled(jax.grad(loss), params, ts30)
        for T in DEPTHS:
            ts = save_times(T)
            if method == "layers":
                loss = make_loss(method, Q, K, e, ts=ts)
                f, cf = compiled(loss, params)
                g, cg = compiled(jax.grad(loss), params)
                call = (params,)
                count = f"{round(T / H)}L"
                if T == 30.0:
                    layers_grad_30 = g(params)
            else:
                call = (params, jnp.asarray(ts, dtype))
                count = str(steps[T])
            times_f, times_g = paired_times(f, g, *call, repeats=args.repeats)
            tf, tg = np.median(times_f), np.median(times_g)
            best = min(times_g) / min(times_f)
            (mf, _), (mg, temp) = memory(f), memory(g)
            print(
                f"{method:<12} {T:4.0f} {count:>6} {cf:5.1f}/{cg:4.1f} s {tf * 1e3:6.2f} ms "
                f"{tg * 1e3:6.1f} ms {tg / tf:5.1f}x {best:5.1f}x "
                f"{mf:5.2f} MiB {mg:5.2f} MiB {temp:5.2f} MiB"
            )
        if method == "layers" and dtype == jnp.float64:
            public = jax.grad(make_loss(method, Q, K, e, ts=save_times(30.0)))(params)
            error = max(relative_errors(layers_grad_30, public))
            print(f"{'':<12} layers under jax.jit vs eager public simulate: rel. diff {error:.1e}")

    print("\n   checkpoint adjoint against max_steps (T = 30): checkpoints reserved when compiled")
    ts30 = jnp.asarray(save_times(30.0), dtype)
    for max_steps in (1_000, 10_000, 100_000):
        loss = make_loss("checkpoint", Q, K, e, max_steps=max_steps)
        f, _ = compiled(loss, params, ts30)
        g, _ = compiled(jax.grad(loss), params, ts30)
        times_f, times_g = paired_times(f, g, params, ts30, repeats=args.repeats)
        tf, tg = np.median(times_f), np.median(times_g)
        mg, temp = memory(g)
        print(
            f"   max_steps {max_steps:>7}: gradient {tg * 1e3:6.1f} ms, {tg / tf:5.1f}x forward, "
            f"memory {mg:5.2f} MiB (temp {temp:5.2f} MiB)"
        )

    if args.no_accuracy or dtype != jnp.float64:
        return
    print(
        f"\n3. gradient accuracy (T = 30, float64): relative error of (beta, V, x0); reference: "
        f"checkpoint at rtol {REFERENCE[0]:g}, atol {REFERENCE[1]:g}"
    )
    grads = {}
    for tolerance in (*TOLERANCES, REFERENCE):
        for method in ("checkpoint", "backsolve") if tolerance != REFERENCE else ("checkpoint",):
            loss = make_loss(method, Q, K, e, rtol=tolerance[0], atol=tolerance[1])
            grads[method, tolerance] = jax.jit(jax.grad(loss))(params, ts30)
    reference = grads["checkpoint", REFERENCE]

    def fmt(errors):
        return " ".join(f"{x:8.1e}" for x in errors)

    print(
        f"{'rtol/atol':<12} {'backsolve vs checkpoint':>26}   {'checkpoint vs reference':>26}"
        f"   {'backsolve vs reference':>26}"
    )
    for tolerance in TOLERANCES:
        checkpoint, backsolve = grads["checkpoint", tolerance], grads["backsolve", tolerance]
        print(
            f"{tolerance[0]:.0e}/{tolerance[1]:.0e}  {fmt(relative_errors(backsolve, checkpoint))}"
            f"   {fmt(relative_errors(checkpoint, reference))}"
            f"   {fmt(relative_errors(backsolve, reference))}"
        )


if __name__ == "__main__":
    main()
