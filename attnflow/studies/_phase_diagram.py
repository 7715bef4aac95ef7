"""`phase_diagram`: when do tokens cluster, over temperatures and random initializations (GLPR
Figs. 3 and 5)."""

import dataclasses
import math
import numbers
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import sphere
from .._checks import as_float_array, positive_int
from .._simulate import LAYERS, _layer_indices, _simulate_layers, simulate
from ..analysis import crossing_time
from ..fields import KINDS
from ..sweep import DEFAULT_MEMORY, Store, item_key, run

# Items per device in a chunk, at most: a chunk stops when its last item has clustered, so
# chunks of one beta's realizations stop together (128 loses nothing to kernel overheads).
_LARGEST = 128
WEIGHTS = ("identity", "ginibre_psd", "goe_psd", "ginibre_qk", "goe_qk")


def random_weights(key: jax.Array, d: int, weights: str = "identity", dtype=None):
    """`(Q, K, V)` of GLPR Fig. 5 (SCIENCE.md section 6), from `d x d` standard Gaussians `G`.

    The name is `<interaction>_<value>`:
    - interaction `ginibre`: `Q^T K = G1 G2 / sqrt(d)`; `goe`: `Q^T K = (G + G^T) / sqrt(2)`;
    - value `psd`: `V = G3 G3^T / sqrt(d)`; `qk`: `V = Q^T K / sqrt(d)` (Ginibre) or
      `Q^T K / sqrt(d + 1)` (GOE), the scales of the code published with GLPR.
    Returned as `Q = (Q^T K)^T`, `K = None` (identity), which gives the same logits
    `<Q x_i, K x_j> = x_i^T (Q^T K) x_j`. `"identity"` gives `(None, None, None)`.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    if weights == "identity":
        return None, None, None
    dtype = dtype or jnp.result_type(float)
    k1, k2, k3 = jax.random.split(key, 3)
    interaction, value = weights.split("_")
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
    return qk.T, None, v


def phase_diagram_sample(key: jax.Array, index, *, n: int, d: int, weights="identity", dtype=None):
    """Realization `index` of a phase diagram: `(x0, Q, K, V)`.

    Its key is `jax.random.fold_in(key, index)`, split in two: uniform tokens on `S^{d-1}` from
    the first, `random_weights` from the second. Every `beta` uses the same realizations.
    """
    tokens, weight = jax.random.split(item_key(key, index))
    return (sphere.uniform(tokens, n, d, dtype=dtype), *random_weights(weight, d, weights, dtype))


def span_coordinates(x: jax.Array) -> jax.Array:
    """Coordinates of the `n` tokens in an orthonormal basis of their span, shape `(n, n)`.

    For `n < d`: all inner products are kept (to rounding). With `V = I` each layer (and the
    ODE) moves every token within the span of the current tokens, so the dynamics, and every
    statistic of inner products, can be computed in `n` dimensions instead of `d`.
    """
    _, r = jnp.linalg.qr(x.T)  # x^T = B r with B (d, n) orthonormal, so x = r^T B^T
    return r.T


@dataclasses.dataclass(frozen=True)
class PhaseDiagram:
    """Mean fraction of clustered pairs over time and temperature.

    `prob[b, k]`: over the realizations, the mean fraction of pairs `i != j` with
    `<x_i(ts[k]), x_j(ts[k])> >= 1 - delta` at `beta = betas[b]`. `config` holds every option
    (and the seed), as written to disk.
    """

    betas: np.ndarray
    ts: np.ndarray
    prob: np.ndarray
    config: dict

    def gamma(self, betas=None) -> np.ndarray:
        """The curve `Gamma` at `betas` (default `self.betas`): the time at which the
        equiangular solution with `rho(0) = 0` reaches `1 - delta` (GLPR Thm 6.9: the limit
        of the boundary as `d` grows)."""
        c = self.config
        betas = self.betas if betas is None else np.asarray(betas)
        return np.asarray(crossing_time(jnp.asarray(betas), c["n"], c["delta"], kind=c["kind"]))


def _key_data(key) -> list[int]:
    if isinstance(key, numbers.Integral):
        raise ValueError("key must be a JAX random key, e.g. jax.random.key(0); got an int")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).ravel().tolist()


def close_pair_count(x: jax.Array, delta) -> jax.Array:
    """Number of ordered pairs `i != j` with `<x_i, x_j> >= 1 - delta` (int32)."""
    close = x @ x.T >= 1 - delta
    return (jnp.sum(close) - jnp.sum(jnp.diagonal(close))).astype(jnp.int32)


def phase_diagram(
    key: jax.Array,
    *,
    n: int,
    d: int,
    betas,
    ts,
    samples: int,
    delta: float = 1e-3,
    weights: str = "identity",
    solver: str = LAYERS,
    h: float = 0.1,
    kind: str = "SA",
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
        betas: inverse temperatures (>= 0), shape `(B,)`. ts: save times, shape `(T,)`;
            multiples of `h` with `solver="layers"`; the runs start at `ts[0]`.
        samples: realizations per beta.
        delta: pairs with `<x_i, x_j> >= 1 - delta` count as clustered.
        weights: `"identity"` (`Q = K = V = I`) or a random ensemble drawn per realization,
            see `random_weights`.
        solver: `"layers"` (the discrete transformer with step `h`, as in GLPR) or a diffrax
            solver name (then `h` is ignored and the ODE is solved adaptively).
        kind: `"SA"` or `"USA"`.
        dtype: float dtype of the computation (JAX's default float: float64 with x64 on).
        memory: peak working memory of the sweep, in bytes (2 GiB); it sets the chunk size.
        devices: how many (or which) JAX devices to shard the realizations over (all).
        store: a folder that receives every finished chunk; an existing one with the same
            configuration is resumed, one with another configuration is refused.
        progress: a tqdm progress bar.

    Exact shortcuts, both for `weights="identity"` only: for `d > n` the tokens are evolved in
    coordinates of the span of `x0` (`span_coordinates`; inner products are unchanged), and with
    `solver="layers"` a chunk stops as soon as all its pairs have clustered. Both rest on `V = I`:
    each layer maps a token to a nonnegative combination of tokens, and if all inner products
    are `>= rho >= 0` then so are those of `normalize(sum_k W_ik x_k)` with `W >= 0`, because
    `<u_i, u_j> >= rho (sum W_i)(sum W_j) >= rho |u_i| |u_j|`. So a fully clustered
    configuration stays fully clustered (with `delta <= 1`) and the rest of its row is 1.
    """
    n, d, samples, dtype, betas = check_study(n, d, samples, kind, delta, dtype, betas, False)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    ts = np.asarray(as_float_array(ts, "ts"), dtype=dtype)
    if ts.ndim != 1 or ts.size < 2 or not np.all(np.diff(ts) > 0):
        raise ValueError(f"ts must be a strictly increasing 1-D array of >= 2 times; got {ts}")
    layers = isinstance(solver, str) and solver.lower() == LAYERS
    if layers:
        if not h > 0:
            raise ValueError(f"h must be positive; got {h}")
        steps = _layer_indices(ts, h)
    identity = weights == "identity"
    reduce = identity and d > n
    width = n if reduce else d
    stop_early = identity and layers and delta <= 1
    field_of = KINDS[kind]
    all_close = n * (n - 1)
    grid = jnp.asarray(betas)

    def statistic(t, x):
        return {"close": close_pair_count(x, delta)}

    def item(index):
        beta = grid[index // samples]
        x0, q, k, v = phase_diagram_sample(
            key, index % samples, n=n, d=d, weights=weights, dtype=dtype
        )
        if reduce:
            x0 = span_coordinates(x0)
        field = field_of(beta, q, k, v)
        if layers:
            until = (lambda s: s["close"] == all_close) if stop_early else None
            trajectory = _simulate_layers(field, x0, ts, steps, h, statistic, until)
            return trajectory.xs
        # diffrax fills its save buffer with inf before writing, so save a float count.
        float_count = lambda t, x: close_pair_count(x, delta).astype(x.dtype)  # noqa: E731
        counts = simulate(field, x0, ts, solver=solver, save=float_count).xs
        return {"close": counts.astype(jnp.int32)}

    itemsize = np.dtype(dtype).itemsize
    working = 10 * n * width + 8 * n * n + n * d + (0 if identity else 4 * d * d)
    bytes_per_item = itemsize * working + 8 * ts.size
    config = study_config("phase_diagram", key, n, d, betas, ts, samples, delta, kind, dtype)
    config |= {
        "weights": weights,
        "solver": solver if layers else str(solver),
        "h": float(h) if layers else None,
    }
    count = betas.size * samples
    totals = np.zeros((betas.size, ts.size), np.int64)
    chunks = run(
        item,
        count,
        bytes_per_item=bytes_per_item,
        memory=memory,
        largest=_LARGEST,
        devices=devices,
        store=None if store is None else Store(store, config, count),
        progress=progress,
        desc=f"phase diagram d={d}",
    )
    for start, stop, results in chunks:
        np.add.at(totals, np.arange(start, stop) // samples, results["close"])
    prob = totals / (samples * all_close)
    return PhaseDiagram(betas=betas, ts=ts, prob=prob, config=config)


def check_study(n, d, samples, kind, delta, dtype, betas, positive: bool):
    """Validate the options every study shares; returns `n, d, samples, dtype, betas`, with
    `betas` a NumPy array of `dtype` of finite values `>= 0` (`> 0` if `positive`)."""
    n = positive_int(n, "n", 2)
    d = positive_int(d, "d", 2)
    samples = positive_int(samples, "samples")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if not 0 <= delta <= 2:
        raise ValueError(f"delta must lie in [0, 2]; got {delta}")
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")
    betas = np.asarray(as_float_array(betas, "betas"), dtype=dtype)
    low, bound = (betas > 0, "> 0") if positive else (betas >= 0, ">= 0")
    if betas.ndim != 1 or betas.size < 1 or not np.all(np.isfinite(betas) & low):
        raise ValueError(
            f"betas must be a non-empty 1-D array of finite values {bound}; got {betas}"
        )
    return n, d, samples, dtype, betas


def study_config(study, key, n, d, betas, ts, samples, delta, kind, dtype) -> dict:
    """The configuration a study records (JSON-ready), with its seed and the package version."""
    from .. import __version__

    return {
        "study": study,
        "key": _key_data(key),
        "n": n,
        "d": d,
        "betas": betas.tolist(),
        "ts": ts.tolist(),
        "samples": samples,
        "delta": None if delta is None else float(delta),
        "kind": kind,
        "dtype": np.dtype(dtype).name,
        "version": __version__,
    }
