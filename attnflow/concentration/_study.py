"""`concentration`: the Wasserstein distance of the finite-beta flow to the push-forward by the
limit map, over `(beta, t)`, through the sweep engine (ABRR; docs/science.md section 5)."""

import math
import warnings
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import as_float_array, float_dtype, positive_int
from .._deprecated import keyword_key
from .._names import INITS
from .._version import __version__
from ..analysis import wasserstein_exact
from ..fields import Hardmax
from ..integrate import integrate, state_status
from ..sweep import (
    DEFAULT_MEMORY,
    AbstractStudyItem,
    SweepFailureWarning,
    check_study,
    collect,
    failure_counts,
    failures,
    item_key,
    key_data,
    labelled,
    open_store,
    run,
    study_times,
)
from ._limit import (
    LIMIT_STATUS,
    attention_flow,
    check_options,
    default_tolerances,
    hardmax_limit,
    solver_tolerances,
)


def _check_init(init) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}; got {init!r}")


def initial_tokens(key, sample, *, n: int, d: int, init: str = "ball", dtype=None):
    """Realization `sample` of the initial tokens: `n` i.i.d. points of `R^d`, uniform in the
    unit ball (`init="ball"`) or standard Gaussian (`"gaussian"`), from `item_key(key, sample)`
    (the same realization whatever the other arguments of the study)."""
    _check_init(init)
    n, d = positive_int(n, "n"), positive_int(d, "d")
    dtype = float_dtype(dtype)
    direction_key, radius_key = jax.random.split(item_key(key, sample))
    g = jax.random.normal(direction_key, (n, d), dtype)
    if init == "gaussian":
        return g
    radius = jax.random.uniform(radius_key, (n, 1), dtype) ** (1 / d)
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True) * radius


class _Static(AbstractStudyItem):
    """The configuration of the concentration items: realizations of `initial_tokens`."""

    init: str = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def tokens(self, key, sample):
        return initial_tokens(key, sample, n=self.n, d=self.d, init=self.init, dtype=self.dtype)


class LimitItem(_Static):
    """Item `s` (a realization): the limit of its zero-temperature flow; `args` holds `key`,
    `Q`, `K`, `V`, `tol`, `max_time`, `rtol`, `atol` (traced: new values reuse the code)."""

    def __call__(self, index, args):
        limit = hardmax_limit(
            self.tokens(args["key"], index),
            args["Q"],
            args["K"],
            args["V"],
            **{name: args[name] for name in ("tol", "max_time", "rtol", "atol")},
            max_steps=self.max_steps,
        )
        return {"points": limit.points, "time": limit.time, "status": limit.status}


class FlowItem(_Static):
    """Item `b * samples + s`: realization `s` moved by the softmax flow at `betas[b]`, and
    what the study reads from its tokens at the save times, computed on the device (not the
    trajectory): the distance to the push-forward `limits[s]` at each save time, and the
    terminal phase (`terminal_phase`). `args` holds `betas`, `key`, `Q`, `K`, `V`, `ts`,
    `rtol`, `atol`, `limits` and `limit_status` (traced: new values reuse the code)."""

    def __call__(self, index, args):
        beta = self.beta(index, args)
        s = self.sample(index)
        field = attention_flow(beta, args["Q"], args["K"], args["V"])
        trajectory = integrate(
            field,
            self.tokens(args["key"], s),
            args["ts"],
            diffrax.Tsit5(),
            rtol=args["rtol"],
            atol=args["atol"],
            max_steps=self.max_steps,
            throw=False,
        )
        status = state_status(trajectory.xs, trajectory.status)
        solved = status == 0
        # A failed run or limit is left out as NaN; its states stand in by zeros (finite) so
        # that nothing downstream raises.
        xs = jnp.where(solved, trajectory.xs, 0)
        measured = solved & (args["limit_status"][s] == 0)
        limit = jnp.where(measured, args["limits"][s], 0)
        distance = jax.vmap(
            lambda x: wasserstein_exact(x, limit, cost="euclidean", max_points=self.n)
        )(xs)
        direction, k, spread = terminal_phase(xs)
        return {
            "distance": jnp.where(measured, distance, jnp.nan),
            "direction": jnp.where(solved, direction, jnp.nan),
            "terminal": jnp.where(solved, k, -1),
            "spread": jnp.where(solved, spread, jnp.nan),
            "final": jnp.where(solved, trajectory.xs[k], trajectory.xs[-1]),
            "status": status,
        }


class Concentration(eqx.Module):
    """Result of `concentration`.

    `distance[b, s, k]`: `W_2(mu_t^beta, T_# mu_0)` for `beta = betas[b]`, realization `s`, at
    `t = ts[k]` (exact, by optimal assignment; NaN for a failed item). `mean()`: its mean over
    the realizations that succeeded, shape `(B, T)`.

    `closest[b]`: the minimum over `t` of the mean distance; `closest_time[b]`: when it is
    reached, the first save time where the mean distance is within `ARRIVAL = 10%` of it (at
    large beta the minimum is a plateau, the metastable state, whose exact argmin is noise);
    `resolved[b]`: False where the minimum sits at the first or last save time (then it is
    not resolved: extend `ts`). `slope`: the least-squares slope of `log closest` against
    `log beta` over the resolved betas (ABRR's rate `sqrt(log(beta+1)/beta)` has slope about
    `-1/2`); `exponent`: the slope against `log sqrt(log(beta+1)/beta)` (1 when the minimum
    follows that rate exactly). NaN with fewer than two resolved betas.

    Terminal phase: `eigenvalues` of `V`, by increasing real part (the first is the slowest
    mode of the linearization `d(x_i - mean)/dt = -V (x_i - mean)` near consensus);
    `alignment[b, s, k]`: `|cos|` of the angle between the principal direction of the tokens
    about their mean and the `k`-th eigenvector of `V` (for a complex pair, the norm of the
    projection on its real invariant plane), read at `terminal_time[b, s]`: the last save time
    where their rms spread is still `>= TERMINAL = 1e-3` times the initial one (after they
    merge, the direction is rounding noise); `spread[b, s]`: the rms spread at `ts[-1]`.

    `limits[s]`: `T(x0)` of realization `s`, shape `(n, d)`; `limit_time[s]` when its flow came
    to rest; `limit_status[s]` an index into `LIMIT_STATUS` (realizations whose flow did not
    come to rest are left out). `status[b, s]`: the finite-beta run, an index into
    `attnflow.STATUS`. `x0`, `final[b]`: realization 0 at `t = 0` and at `terminal_time[b, 0]`
    (`ts[-1]` if its run failed), for pictures.
    """

    betas: np.ndarray
    ts: np.ndarray
    distance: np.ndarray
    closest: np.ndarray
    closest_time: np.ndarray
    resolved: np.ndarray
    slope: float
    exponent: float
    eigenvalues: np.ndarray
    alignment: np.ndarray
    spread: np.ndarray
    terminal_time: np.ndarray
    limits: np.ndarray
    limit_time: np.ndarray
    limit_status: np.ndarray
    status: np.ndarray
    x0: np.ndarray
    final: np.ndarray
    config: dict

    def mean(self) -> np.ndarray:
        """The distance averaged over the realizations that succeeded, shape `(B, T)`."""
        return mean_distance(self.distance)

    def to_xarray(self):
        """The result as an `xarray.Dataset` (needs xarray), dimensions `beta`, `sample`, `t`,
        `mode` (`V`'s eigenvalues, by increasing real part), `token`, `d`; `slope` and
        `exponent` are 0-d variables, the eigenvalues split into real and imaginary parts; its
        attributes hold `config` and attnflow's version."""
        runs = ("beta", "sample")
        return labelled(
            self,
            "concentration",
            {
                "distance": ((*runs, "t"), self.distance),
                "closest": (("beta",), self.closest),
                "closest_time": (("beta",), self.closest_time),
                "resolved": (("beta",), self.resolved),
                "slope": ((), self.slope),
                "exponent": ((), self.exponent),
                "eigenvalues": (("mode",), np.asarray(self.eigenvalues, complex)),
                "alignment": ((*runs, "mode"), self.alignment),
                "spread": (runs, self.spread),
                "terminal_time": (runs, self.terminal_time),
                "limits": (("sample", "token", "d"), self.limits),
                "limit_time": (("sample",), self.limit_time),
                "limit_status": (("sample",), self.limit_status),
                "x0": (("token", "d"), self.x0),
                "final": (("beta", "token", "d"), self.final),
            },
        )

    def summary(self) -> list[str]:
        """The result in lines of text: per beta the closest approach, the distance and spread
        at the last save time and the terminal alignment (averages over the realizations that
        succeeded), with why a minimum is unresolved; the fit against ABRR's rate; `V`'s
        eigenvalues; the failures."""
        mean = self.mean()
        lines = ["  mean W2(mu_t^beta, T#mu0): closest approach; at t1 (terminal phase):"]
        for b, beta in enumerate(self.betas):
            line = (
                f"  beta = {beta:g}: closest {self.closest[b]:.4g} at t = "
                f"{self.closest_time[b]:.3g}; at t1 {mean[b, -1]:.4g}, spread "
                f"{_average(self.spread[b]):.3g}; alignment with V's slowest eigenvector "
                f"{_average(self.alignment[b, :, 0]):.3f} (at t = "
                f"{_average(self.terminal_time[b]):.3g})"
            )
            if not self.resolved[b]:
                if not np.isfinite(self.closest[b]):
                    line += " [UNRESOLVED: no run succeeded]"
                elif np.isfinite(mean[b, -1]) and mean[b, -1] <= np.nanmin(mean[b]):
                    line += " [UNRESOLVED: the minimum sits at the last save time; extend ts]"
                else:
                    line += (
                        " [UNRESOLVED: the minimum sits at t = 0: at this beta the flow never "
                        "gets closer to T#mu0 than it starts]"
                    )
            failed = int((self.status[b] != 0).sum())
            if failed:
                line += f" [{failed} of {self.status.shape[1]} runs failed]"
            lines.append(line)
        resolved = int(self.resolved.sum())
        if np.isfinite(self.slope):
            lines.append(
                f"  fit over the {resolved} resolved betas: slope of log closest vs log beta "
                f"{self.slope:.3f} (ABRR's rate sqrt(log(beta+1)/beta): about -1/2); exponent "
                f"against that rate {self.exponent:.3f} (1)"
            )
        else:
            lines.append(f"  no fit: {resolved} resolved betas (2 needed); extend ts or add betas")
        values = ", ".join(f"{e.real:g}" if e.imag == 0 else f"{e:g}" for e in self.eigenvalues)
        if np.sum(np.isclose(self.eigenvalues.real, self.eigenvalues[0].real)) > 1:
            values += (
                " (the slowest eigenvalue is repeated: the alignment with its first eigenvector "
                "is not a prediction)"
            )
        lines.append(f"  V's eigenvalues by increasing real part: {values}")
        failures = [
            failure_counts(self.status, "finite-beta runs"),
            failure_counts(self.limit_status, "limit maps", LIMIT_STATUS),
        ]
        failures = [line for line in failures if line]
        lines.append("  failures: " + ("; ".join(failures) + "; left out" if failures else "none"))
        return lines


def _average(values: np.ndarray) -> float:
    """The mean over the realizations that succeeded (NaN if none did)."""
    return float(np.nanmean(values)) if np.isfinite(values).any() else np.nan


def rate(betas) -> np.ndarray:
    """ABRR's rate `sqrt(log(beta + 1) / beta)`, for finite `betas > 0`."""
    betas = np.asarray(as_float_array(betas, "betas"), np.float64)
    if not np.all(np.isfinite(betas) & (betas > 0)):
        raise ValueError(f"betas must be finite and > 0; got {betas}")
    return np.sqrt(np.log1p(betas) / betas)


def _weights(Q, K, V, d: int, dtype):
    """`Q, K, V` checked as `Hardmax` checks them (shapes, finite entries) and to act on
    `R^d`, in `dtype`; None is the identity."""
    kernel = Hardmax(Q, K, V)
    if kernel.d is not None and kernel.d != d:
        raise ValueError(f"Q, K, V must have d = {d} columns; got {kernel.d}")
    return tuple(None if a is None else a.astype(dtype) for a in (kernel.Q, kernel.K, kernel.V))


def eigenvectors(V, d: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """`V`'s eigenvalues by increasing real part, and for each an orthonormal basis of its
    real invariant subspace (one vector for a real eigenvalue, two for a complex one)."""
    if V is None:
        return np.ones(d, complex), [row[:, None] for row in np.eye(d)]
    values, vectors = np.linalg.eig(np.asarray(V, np.float64))
    order = np.argsort(values.real, kind="stable")
    bases = []
    for k in order:
        v = vectors[:, k]
        span = v.real[:, None] if abs(values[k].imag) == 0 else np.stack([v.real, v.imag], 1)
        bases.append(np.linalg.qr(span)[0])
    return values[order], bases


TERMINAL = 1e-3  # the smallest spread, relative to the initial one, of `terminal_phase`


def terminal_phase(xs: Float[Array, "T n d"]) -> tuple[Float[Array, " d"], Array, Array]:
    """For tokens `xs` `(T, n, d)`: `(direction, k, spread)`, where `k` is the last save time
    whose rms spread about the mean is `>= TERMINAL` times the initial one, `direction` the
    principal direction of the tokens about their mean at `k` (unit, sign arbitrary), and
    `spread` the rms spread at the last save time. Jit- and vmap-able."""
    deviations = xs - xs.mean(axis=1, keepdims=True)
    spreads = jnp.sqrt(jnp.mean(jnp.sum(deviations**2, axis=-1), axis=-1))
    ahead = spreads >= TERMINAL * spreads[0]
    k = jnp.max(jnp.where(ahead, jnp.arange(spreads.size), 0))
    direction = jnp.linalg.svd(deviations[k], full_matrices=False)[2][0]
    return direction, k, spreads[-1]


def alignment(directions: np.ndarray, bases: list[np.ndarray]) -> np.ndarray:
    """`|cos|` of the angle between each row of `directions` `(..., d)` and each basis of
    `eigenvectors` (the norm of the projection on its span), shape `(..., len(bases))`."""
    cosines = np.stack([np.linalg.norm(directions @ basis, axis=-1) for basis in bases], -1)
    return np.minimum(cosines, 1.0)


def _fit(betas, closest, resolved) -> tuple[float, float]:
    ok = resolved & np.isfinite(closest) & (closest > 0)
    if ok.sum() < 2:
        return math.nan, math.nan
    y = np.log(closest[ok])
    slope = float(np.polyfit(np.log(betas[ok]), y, 1)[0])
    exponent = float(np.polyfit(np.log(rate(betas[ok])), y, 1)[0])
    return slope, exponent


@keyword_key
def concentration(
    *,
    key: jax.Array,
    n: int,
    d: int,
    betas,
    ts,
    Q=None,
    K=None,
    V=None,
    samples: int,
    init: str = "ball",
    dtype=None,
    tol: float | None = None,
    max_time: float = 1e3,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 1_000_000,
    memory: int = DEFAULT_MEMORY,
    devices=None,
    store: str | Path | None = None,
    progress: bool = True,
) -> Concentration:
    """ABRR's concentration experiment: `W_2(mu_t^beta, T_# mu_0)` over `(beta, t)`.

    For each realization `s < samples`, `n` tokens `x0` are drawn in `R^d` (`initial_tokens`:
    uniform in the unit ball by default), their limit map `T(x0)` is computed by the
    zero-temperature flow (`hardmax_limit`, one sweep over the realizations), and each `beta`
    moves them by the finite-temperature flow `dx_i/dt = sum_j A_ij V (x_j - x_i)` (a second
    sweep over `(beta, realization)`, adaptive Tsit5). The distance between the empirical
    measures at each save time is exact (`attnflow.analysis.wasserstein_exact`, Euclidean cost,
    `p = 2`), computed on the device by each item: the sweep keeps statistics, not
    trajectories.

    Arguments:
        key: a JAX random key; realization `s` is `initial_tokens(key, s, ...)` for every beta.
        n, d: tokens (`n >= 2`) and dimension (`d >= 2`).
        betas: inverse temperatures `> 0` (up to `1e4` and beyond), shape `(B,)`.
        ts: save times, strictly increasing from `ts[0] = 0`, shape `(T,)`; log-spaced times
            resolve the `O(log beta)` time of closest approach.
        Q, K, V: `(m, d)`, `(m, d)` and `(d, d)` (`None`: identity).
        samples: realizations.
        init: `"ball"` or `"gaussian"` (see `initial_tokens`).
        dtype: float dtype (JAX's default float: float64 with x64 on).
        tol, max_time, rtol, atol, max_steps: the zero-temperature flow's options (see
            `limit_map`); `rtol, atol` (default `1e-8, 1e-10` in float64) also set the
            finite-beta solves.
        memory, devices, progress: the sweep engine's options (`attnflow.sweep.run`).
        store: a folder that receives every finished chunk of both sweeps (subfolders
            `limits/` and `flows/`, each an `attnflow.sweep.Store`); an existing one with the
            same configuration is resumed, one with another configuration is refused.

    Returns:
        A `Concentration`. Failed runs (a finite-beta solve, or a zero-temperature flow that
        does not come to rest) are recorded in its `status` / `limit_status`, left out of the
        averages and reported by a `SweepFailureWarning`; never counted as data.

    ABRR's bound: `W(mu_t^beta, T_# mu_0) <~ sqrt(log(beta+1)/beta) e^{Ct} + e^{-ct}`: the
    distance falls like `e^{-ct}` while the zero-temperature flow converges, reaches its
    minimum at `t = O(log beta)`, then grows as the finite-beta flow leaves the metastable
    state (for `V` with eigenvalues of positive real part: toward one cluster, along `V`'s
    slowest eigenvector: `alignment`). Compiled once per static configuration (`n, d,
    samples, init, dtype`, the shapes): new betas, key, weights or tolerances reuse the code.
    """
    n, d, samples, dtype, betas = check_study(n, d, samples, 0.0, dtype, betas, True)
    _check_init(init)
    ts = study_times(ts, dtype)
    if ts[0] != 0:
        raise ValueError(f"ts must start at 0 (the initial measure); got ts[0] = {ts[0]}")
    Q, K, V = _weights(Q, K, V, d, dtype)
    check_options(tol=tol, max_time=max_time, max_steps=max_steps, rtol=rtol, atol=atol)
    max_steps = positive_int(max_steps, "max_steps")
    # the limits' solver tolerances follow tol (solver_tolerances); the flows' are the defaults
    tol, limit_rtol, limit_atol = solver_tolerances(dtype, tol, rtol, atol)
    _, rtol0, atol0 = default_tolerances(dtype)
    rtol, atol = rtol or rtol0, atol or atol0
    config = {
        "study": "concentration",
        "key": key_data(key),
        "n": n,
        "d": d,
        "betas": betas.tolist(),
        "ts": ts.tolist(),
        "Q": None if Q is None else np.asarray(Q).tolist(),
        "K": None if K is None else np.asarray(K).tolist(),
        "V": None if V is None else np.asarray(V).tolist(),
        "samples": samples,
        "init": init,
        "dtype": dtype.name,
        "tol": tol,
        "max_time": float(max_time),
        "rtol": rtol,
        "atol": atol,
        "version": __version__,
    }
    engine = {"memory": memory, "devices": devices, "progress": progress}
    static = dict(n=n, d=d, samples=samples, init=init, dtype=dtype.name, max_steps=max_steps)
    weights = {"key": key, "Q": Q, "K": K, "V": V}
    tolerances = {"rtol": jnp.asarray(rtol, dtype), "atol": jnp.asarray(atol, dtype)}
    limits = np.zeros((samples, n, d), dtype)
    limit_time = np.zeros(samples, dtype)
    limit_status = np.zeros(samples, np.int8)
    with _open_part(store, "limits", config, samples) as opened:
        chunks = run(
            LimitItem(**static),
            samples,
            args=weights
            | {"rtol": jnp.asarray(limit_rtol, dtype), "atol": jnp.asarray(limit_atol, dtype)}
            | {"tol": jnp.asarray(tol, dtype), "max_time": jnp.asarray(max_time, dtype)},
            bytes_per_item=dtype.itemsize * (40 * n * d + 6 * n * n),
            store=opened,
            **engine,
            desc="concentration: limit maps",
        )
        collect(chunks, points=limits, time=limit_time, status=limit_status)
    count = betas.size * samples
    distance = np.full((count, ts.size), np.nan)
    status = np.zeros(count, np.int8)
    direction = np.full((count, d), np.nan)
    terminal = np.full(count, -1)
    spread = np.full(count, np.nan)
    final = np.zeros((betas.size, n, d), dtype)
    flows = weights | tolerances | {"betas": jnp.asarray(betas), "ts": jnp.asarray(ts)}
    flows |= {"limits": jnp.asarray(limits), "limit_status": jnp.asarray(limit_status)}
    # the items save statistics, not trajectories (format 2); a store of trajectories is refused
    with _open_part(store, "flows", config | {"format": 2}, count) as opened:
        chunks = run(
            FlowItem(**static),
            count,
            args=flows,
            bytes_per_item=dtype.itemsize * (ts.size * n * (d + n) + 40 * n * d + 6 * n * n),
            store=opened,
            **engine,
            desc="concentration: finite-beta flows",
        )
        for start, stop, results in chunks:
            distance[start:stop] = results["distance"]
            status[start:stop] = results["status"]
            direction[start:stop] = results["direction"]
            terminal[start:stop] = results["terminal"]
            spread[start:stop] = results["spread"]
            firsts = [i for i in range(start, stop) if i % samples == 0]
            final[[i // samples for i in firsts]] = results["final"][[i - start for i in firsts]]
    eigenvalues, bases = eigenvectors(V, d)
    terminal_time = np.where(terminal >= 0, ts[terminal], np.nan)
    shape = (betas.size, samples)
    status = status.reshape(shape)
    _report(status, limit_status, betas)
    distance = distance.reshape(*shape, ts.size)
    closest, closest_time, resolved = closest_approach(mean_distance(distance), ts)
    slope, exponent = _fit(betas, closest, resolved)
    return Concentration(
        betas=betas,
        ts=ts,
        distance=distance,
        closest=closest,
        closest_time=closest_time,
        resolved=resolved,
        slope=slope,
        exponent=exponent,
        eigenvalues=eigenvalues,
        alignment=alignment(direction, bases).reshape(*shape, d),
        spread=spread.reshape(shape),
        terminal_time=terminal_time.reshape(shape),
        limits=limits,
        limit_time=limit_time,
        limit_status=limit_status,
        status=status,
        x0=np.asarray(initial_tokens(key, 0, n=n, d=d, init=init, dtype=dtype)),
        final=final,
        config=config,
    )


def mean_distance(distance: np.ndarray) -> np.ndarray:
    """The mean over realizations (axis 1) of the runs that succeeded (NaN-free entries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row stays NaN
        return np.nanmean(distance, axis=1)


ARRIVAL = 1.1  # the closest approach is reached where the mean distance is within 10% of it


def closest_approach(mean: np.ndarray, ts: np.ndarray):
    """`(minimum over t, when it is reached, resolved)` per row of `mean` `(B, T)`: reached at
    the first save time within `ARRIVAL` times the minimum; resolved: the minimum is finite and
    neither at the first nor at the last save time."""
    filled = np.where(np.isfinite(mean), mean, np.inf)
    where = np.argmin(filled, axis=1)
    closest = mean[np.arange(mean.shape[0]), where]
    resolved = np.isfinite(closest) & (where > 0) & (where < ts.size - 1)
    arrival = np.argmax(filled <= ARRIVAL * np.where(np.isfinite(closest), closest, 0)[:, None], 1)
    return closest, ts[np.where(np.isfinite(closest), arrival, where)], resolved


def _open_part(store, part: str, config: dict, count: int):
    """`open_store` at `store / part`, for one of the study's two sweeps."""
    folder = None if store is None else Path(store) / part
    return open_store(folder, config | {"part": part}, count)


def _report(status: np.ndarray, limit_status: np.ndarray, betas: np.ndarray) -> None:
    no_limit = failure_counts(limit_status, "realizations", LIMIT_STATUS)
    if no_limit:
        no_limit += " have no limit map; they are left out (see .limit_status)"
    lines = [line for line in (no_limit, failures(status, betas)) if line]
    if lines:
        warnings.warn("; ".join(lines), SweepFailureWarning, stacklevel=3)
