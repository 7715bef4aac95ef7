"""`phase_diagram`: when do tokens cluster, over temperatures and random initializations (GLPR
Figs. 3 and 5)."""

import functools
import math
from collections.abc import Callable
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import float_dtype
from .._deprecated import keyword_key
from .._names import WEIGHTS
from ..analysis import crossing_time
from ..fields import KINDS
from ..integrate import Layers, integrate, layer_indices, solver_config, state_status
from ..sphere import uniform
from ..sweep import (
    DEFAULT_MEMORY,
    AbstractStudyItem,
    check_study,
    item_key,
    labelled,
    open_store,
    report,
    run,
    study_args,
    study_config,
    study_times,
)
from ._common import GLPR_LAYERS, directions, make_field, model, study_solver

# Items per device in a chunk, at most: a batch stops when its last item has clustered, so
# chunks of one beta's realizations stop together.
_LARGEST = 128


def random_weights(key: jax.Array, d: int, weights: str = "identity", dtype=None):
    """`(Q, K, V)` of GLPR Fig. 5 (docs/science.md section 6), from `d x d` standard Gaussians `G`.

    The name is `<interaction>_<value>`:

    - interaction `ginibre`: `Q^T K = G1 G2 / sqrt(d)`; `goe`: `Q^T K = (G + G^T) / sqrt(2)`;
    - value `psd`: `V = G3 G3^T / sqrt(d)`; `qk`: `V = Q^T K / sqrt(d)` (Ginibre) or
      `Q^T K / sqrt(d + 1)` (GOE), the scales of the code published with GLPR.
    `"ginibre_qk_published"` is the Ginibre `qk` ensemble as that code computes it: it applies
    the value matrix to row vectors, `x_j^T V`, which is `V^T x_j` in attnflow's convention
    (`V x_j`), so its value matrix is `(Q^T K)^T / sqrt(d)`. For the symmetric ensembles (GOE,
    `psd`) the two conventions agree; for Ginibre `qk` they give different dynamics (at
    `beta = 5`, `t = 15`, `n = 32`, `d = 64`, 256 samples, key 0, P(clustered pair) is 0.394
    with `V = Q^T K` and 0.192 with its transpose; see docs/guide/studies.md).
    Returned as `Q = (Q^T K)^T`, `K = None` (identity), which gives the same logits
    `<Q x_i, K x_j> = x_i^T (Q^T K) x_j`. `"identity"` gives `(None, None, None)`.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    if weights == "identity":
        return None, None, None
    dtype = float_dtype(dtype)
    k1, k2, k3 = jax.random.split(key, 3)
    interaction, value, *published = weights.split("_")
    g1 = jax.random.normal(k1, (d, d), dtype)
    if interaction == "ginibre":
        qk = g1 @ jax.random.normal(k2, (d, d), dtype) / math.sqrt(d)
    else:
        qk = (g1 + g1.T) / math.sqrt(2)
    if value == "psd":
        g3 = jax.random.normal(k3, (d, d), dtype)
        v = g3 @ g3.T / math.sqrt(d)
    else:  # the scale of the GLPR code: sqrt(d) (Ginibre), sqrt(d + 1) (GOE)
        v = qk / math.sqrt(d if interaction == "ginibre" else d + 1)
    if published:  # the GLPR code's row-vector convention: x_j^T V = (V^T x_j)^T
        v = v.T
    return qk.T, None, v


def phase_diagram_sample(key: jax.Array, index, *, n: int, d: int, weights="identity", dtype=None):
    """Realization `index` of a phase diagram (and of `metastability` and `ftle_diagram`):
    `(x0, Q, K, V)`.

    Its key is `jax.random.fold_in(key, index)`, split in two: uniform tokens on `S^{d-1}` from
    the first, `random_weights` from the second. Every `beta` uses the same realizations.
    """
    tokens, weight = jax.random.split(item_key(key, index))
    return (uniform(tokens, n, d, dtype=dtype), *random_weights(weight, d, weights, dtype))


def span_coordinates(x: jax.Array) -> jax.Array:
    """Coordinates of the `n` tokens in an orthonormal basis of their span, shape `(n, n)`.

    For `n < d`: all inner products are kept (to rounding). With `V = I` each layer (and the
    ODE) moves every token within the span of the current tokens, so the dynamics, and every
    statistic of inner products, can be computed in `n` dimensions instead of `d`.
    """
    _, r = jnp.linalg.qr(x.T)  # x^T = B r with B (d, n) orthonormal, so x = r^T B^T
    return r.T


@functools.partial(jax.jit, static_argnames=("samples", "n", "d", "dtype"))
def span_realizations(key: jax.Array, *, samples: int, n: int, d: int, dtype: str):
    """`span_coordinates` of the tokens of realizations `0, ..., samples - 1` of
    `phase_diagram_sample` (identity weights), shape `(samples, n, n)`.

    A study draws them once and every beta reads them: drawing `n` tokens in `d` dimensions and
    reducing them costs `O(n d (n + 1))`, which for `d >> n` exceeds the reduced dynamics
    themselves if it is repeated for each `(beta, sample)` item.
    """

    def one(sample):
        return span_coordinates(phase_diagram_sample(key, sample, n=n, d=d, dtype=dtype)[0])

    return jax.lax.map(one, jnp.arange(samples), batch_size=16)


class PhaseDiagram(eqx.Module):
    """Mean fraction of clustered pairs over time and temperature.

    `prob[b, k]`: over the realizations that succeeded, the mean fraction of pairs `i != j`
    with `<x_i(ts[k]), x_j(ts[k])> >= 1 - delta` at `beta = betas[b]` (NaN where every
    realization of that beta failed). `status[b, s]`: 0 when realization `s` at `betas[b]`
    ran to the end with finite tokens, otherwise the index of its failure in
    `attnflow.STATUS` (a solver that hit `max_steps`, a non-finite state); failed items are
    left out of `prob`, never counted as unclustered, and `phase_diagram` warns about them.
    `config` holds every option (and the seed), as written to disk.
    """

    betas: np.ndarray
    ts: np.ndarray
    prob: np.ndarray
    config: dict = eqx.field(static=True)
    status: np.ndarray

    @property
    def failed(self) -> np.ndarray:
        """The `(beta index, sample)` pairs of the failed items, shape `(F, 2)`."""
        return np.argwhere(self.status != 0)

    def to_xarray(self):
        """The diagram as an `xarray.Dataset` (needs xarray): `prob` over `(beta, t)`,
        `status` over `(beta, sample)`; its attributes hold `config` and attnflow's version."""
        return labelled(self, "phase_diagram", {"prob": (("beta", "t"), self.prob)})

    @property
    def has_gamma(self) -> bool:
        """Whether the curve `Gamma` describes this diagram: identity weights, a model whose
        equiangular solution is known in closed form (`fields.KINDS`), and `0 < delta < 1`
        (`delta = 0` counts only coincident tokens, which the equiangular solution never
        reaches)."""
        c = self.config
        return c["weights"] == "identity" and c["kind"] in KINDS and 0 < c["delta"] < 1

    def summary(self) -> list[str]:
        """A few lines: at four betas across the range, when the fraction of clustered pairs
        first reaches 1/2, beside `Gamma` where it describes the diagram."""
        picks = np.unique(np.linspace(0, len(self.betas) - 1, 4).round().astype(int))
        gamma = self.gamma() if self.has_gamma else None
        lines = []
        for b in picks:
            above = np.nonzero(self.prob[b] >= 0.5)[0]
            when = f"at t = {self.ts[above[0]]:g}" if above.size else f"not by t = {self.ts[-1]:g}"
            line = f"  beta = {self.betas[b]:.3g}: P >= 1/2 {when}"
            if gamma is not None and np.isfinite(gamma[b]):
                line += f" (Gamma: t = {gamma[b]:.3g})"
            elif gamma is not None:  # the equiangular solve failed there (float32, large beta)
                line += f" (Gamma: unavailable in {self.config['dtype']} at this beta)"
            lines.append(line)
        return lines

    def gamma(self, betas=None) -> np.ndarray:
        """The curve `Gamma` at `betas` (default `self.betas`): the time at which the
        equiangular solution with `rho(0) = 0` reaches `1 - delta` (GLPR Thm 6.9: the limit
        of the boundary as `d` grows). Defined for SA and USA (ValueError otherwise)."""
        c = self.config
        betas = self.betas if betas is None else np.asarray(betas)
        return np.asarray(crossing_time(jnp.asarray(betas), c["n"], c["delta"], kind=c["kind"]))


def close_pair_count(x: jax.Array, delta) -> jax.Array:
    """Number of ordered pairs `i != j` with `<x_i, x_j> >= 1 - delta` (int32)."""
    close = x @ x.T >= 1 - delta
    return (jnp.sum(close) - jnp.sum(jnp.diagonal(close))).astype(jnp.int32)


class AbstractRealizationItem(AbstractStudyItem):
    """An item whose realization is `phase_diagram_sample(args["key"], sample, ...)`: the
    same tokens (and weights) in `phase_diagram`, `metastability` and `ftle_diagram`."""

    weights: str = eqx.field(static=True)
    kind: Callable = eqx.field(static=True)

    def realization(self, index, args, reduce: bool = False):
        """`(field, x0)` of item `index`: `x0` from `args["tokens"]` when the study drew the
        realizations beforehand (`span_realizations`), otherwise drawn here, and taken to span
        coordinates when `reduce`."""
        if "tokens" in args:  # identity weights, tokens in span coordinates
            field = make_field(self.kind, self.beta(index, args), None, None, None)
            return field, args["tokens"][self.sample(index)]
        x0, q, k, v = phase_diagram_sample(
            args["key"],
            self.sample(index),
            n=self.n,
            d=self.d,
            weights=self.weights,
            dtype=self.dtype,
        )
        if reduce:
            x0 = span_coordinates(x0)
        return make_field(self.kind, self.beta(index, args), q, k, v), x0


class PhaseItem(AbstractRealizationItem):
    """One item of a phase diagram: `{"close": (T,), "status": ()}`, the close-pair counts at
    the save times; `args` holds `betas`, `key`, `delta`, `ts`, and `tokens` when the study
    drew the reduced realizations once (`span_realizations`)."""

    solver: Layers | diffrax.AbstractSolver = eqx.field(static=True)
    steps: tuple[int, ...] | None = eqx.field(static=True)
    reduce: bool = eqx.field(static=True)
    stop_early: bool = eqx.field(static=True)

    def __call__(self, index, args):
        field, x0 = self.realization(index, args, self.reduce)
        delta, ts = args["delta"], args["ts"]

        def statistic(t, x):
            return {"close": close_pair_count(directions(field, x), delta)}

        if isinstance(self.solver, Layers):
            all_close = self.n * (self.n - 1)
            until = (lambda s: s["close"] == all_close) if self.stop_early else None
            trajectory = integrate(
                field,
                x0,
                ts,
                self.solver,
                save=statistic,
                until=until,
                steps=self.steps,
                throw=False,
            )
            return {"close": trajectory.xs["close"], "status": trajectory.status}

        # diffrax fills its save buffer with inf before writing, so save a float count.
        def float_count(t, x):
            return statistic(t, x)["close"].astype(x.dtype)

        trajectory = integrate(field, x0, ts, self.solver, save=float_count, throw=False)
        finite = jnp.isfinite(trajectory.xs)
        return {
            "close": jnp.where(finite, trajectory.xs, -1).astype(jnp.int32),
            "status": state_status(trajectory.xs, trajectory.status),
        }


@keyword_key
def phase_diagram(
    *,
    key: jax.Array,
    n: int,
    d: int,
    betas,
    ts,
    samples: int,
    delta: float = 1e-3,
    weights: str = "identity",
    solver=GLPR_LAYERS,
    h: float | None = None,
    kind="SA",
    dtype=None,
    memory: int = DEFAULT_MEMORY,
    devices=None,
    store: str | Path | None = None,
    progress: bool = True,
) -> PhaseDiagram:
    """GLPR Fig. 3 (and Fig. 5 with random weights): `P(clustered pair)` over `(beta, t)`.

    Arguments:
        key: a JAX random key; realization `s` is `phase_diagram_sample(key, s, ...)`, the
            same for every beta.
        n, d: tokens (`n >= 2`) and dimension (`d >= 2`).
        betas: inverse temperatures (>= 0), shape `(B,)`.
        ts: save times, shape `(T,)`; multiples of the layer step with `Layers`; the runs start
            at `ts[0]`.
        samples: realizations per beta.
        delta: pairs with `<x_i, x_j> >= 1 - delta` count as clustered (measured on the
            directions `x_i / |x_i|` for the schemes in `R^d`, Pre-LN and Peri-LN).
        weights: `"identity"` (`Q = K = V = I`) or a random ensemble drawn per realization,
            see `random_weights`.
        solver: `attnflow.Layers(h)` (the discrete transformer with layer step `h`, as in
            GLPR; `Layers(0.1)` by default) or a diffrax ODE solver, or its name (the ODE is
            then solved adaptively). `h=` is the deprecated spelling of `Layers(h)`.
        kind: a model of `attnflow.studies.MODELS` by name (`"SA"`, `"USA"`, `"PreLN"`,
            `"PeriLN"`, `"nGPT"`, `"Sinkhorn"`, `"CausalSA"`, `"Hardmax"`, `"MultiHead"`), or a
            callable `(beta, Q, K, V) -> field` (with `Q = K = V = None` for identity weights).
        dtype: float dtype of the computation (JAX's default float: float64 with x64 on).
        memory: peak working memory of the sweep, in bytes (2 GiB); it sets the chunk size.
        devices: how many (or which) JAX devices to shard the realizations over (all).
        store: a folder that receives every finished chunk; an existing one with the same
            configuration is resumed, one with another configuration is refused.
        progress: a tqdm progress bar.

    Returns a `PhaseDiagram`; items that failed (see its `status`) are left out of `prob` and
    reported by a `RuntimeWarning`. Compiled once per static configuration: a second call with
    other `betas` (of the same length), another key or `delta` reuses the executable.

    Exact shortcuts, for `weights="identity"` and the models of `MODELS` only (a callable
    `kind` gets none): for `d > n` the tokens are evolved in coordinates of the span of `x0`
    (`span_coordinates`; inner products are unchanged), drawn and reduced once per realization
    for every beta, so a panel at `d >> n` costs what one at `d = n` costs; with `Layers` a batch
    stops as soon as all its pairs have clustered. Both rest on `V = I` and on attention
    weights that depend only on inner products: each layer maps a token to a nonnegative
    combination of tokens (of directions, for Pre-LN and Peri-LN), and if all inner products
    of unit vectors are `>= rho >= 0` then so are those of `normalize(sum_k W_ik x_k)` with
    `W >= 0`, because `<u_i, u_j> >= rho (sum W_i)(sum W_j) >= rho |u_i| |u_j|`. So a fully
    clustered configuration stays fully clustered (with `delta <= 1`) and the rest of its row
    is 1.
    """
    factory, name, proved = model(kind)
    n, d, samples, dtype, betas = check_study(n, d, samples, delta, dtype, betas, False)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    ts = study_times(ts, dtype)
    solver = study_solver(solver, h)
    layers = isinstance(solver, Layers)
    identity = weights == "identity"
    reduce = identity and proved and d > n
    width = n if reduce else d
    # d > n: the reduced realizations are drawn once for every beta, when they fit in a quarter
    # of the memory budget (otherwise each item draws and reduces its own)
    table = samples * n * n * dtype.itemsize
    drawn = reduce and table <= memory // 4
    static = dict(n=n, d=d, samples=samples, dtype=dtype.name)
    item = PhaseItem(
        **static,
        weights=weights,
        kind=factory,
        solver=solver,
        steps=layer_indices(ts, solver.h) if layers else None,
        reduce=reduce and not drawn,
        stop_early=identity and proved and layers and delta <= 1,
    )
    working = 10 * n * width + 8 * n * n + n * d + (0 if identity else 4 * d * d)
    config = study_config("phase_diagram", key, n, d, betas, ts, samples, delta, name, dtype)
    config |= {"weights": weights, **solver_config(solver)}
    count = betas.size * samples
    args = study_args(key, betas, dtype, delta, ts)
    if drawn:
        args["tokens"] = span_realizations(key, samples=samples, n=n, d=d, dtype=dtype.name)
    totals = np.zeros((betas.size, ts.size), np.int64)
    status = np.zeros(count, np.int8)
    with open_store(store, config, count) as opened:
        chunks = run(
            item,
            count,
            args=args,
            bytes_per_item=dtype.itemsize * working + 8 * ts.size,
            memory=memory - table if drawn else memory,
            largest=_LARGEST,
            devices=devices,
            store=opened,
            progress=progress,
            desc=f"phase diagram {name} d={d}",
        )
        for start, stop, results in chunks:
            ok = results["status"] == 0
            status[start:stop] = results["status"]
            rows = np.arange(start, stop)[ok] // samples
            np.add.at(totals, rows, results["close"][ok])
    status = status.reshape(betas.size, samples)
    succeeded = (status == 0).sum(axis=1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.where(succeeded > 0, totals / (succeeded * n * (n - 1)), np.nan)
    report(status, betas)
    return PhaseDiagram(betas=betas, ts=ts, prob=prob, config=config, status=status)
