"""Worked searches (the `attnflow search` commands), each answer checked by a sharp statistic:
`smallest_beta` (GLPR Fig. 4: on the circle, 2 clusters at `beta = 4`, 3 at `beta = 9`, around
`t = 30`), `value_for_groups` and `recover_parameters`.

The searches minimize smooth surrogates; the results report the sharp statistics of
`attnflow.analysis` at the answer (cluster counts, cluster memberships, relative errors), so
that whether the answer truly does what was asked is read off the result, never assumed.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._checks import as_float_array, check_bool, positive_int, positive_number
from .._deprecated import deprecated
from ..analysis import close_pairs, count_clusters
from ..fields import SA, PerLayer, PostLN, Softmax
from ..integrate import Layers, simulate
from ..sphere import uniform
from ._fit import fit_trajectory, identifiable
from ._objectives import soft_cluster_count
from ._search import SearchResult, optimizer as named_optimizer, search

# Width, in clusters, of the logistic step sigma((N - (k - 1/2)) / width) that smooths the
# indicator "the soft count N is at least k": 1 within 1e-8 once N >= k (a soft count exceeds
# an integer count by a few hundredths), 0 within 1e-8 once N <= k - 1.
_COUNT_WIDTH = 0.05

# The layer step of GLPR Fig. 4, the default of `smallest_beta`.
_LAYERS = Layers(0.1)


def _whole_layers(t: float, h: float, name: str) -> int:
    layers = round(t / h)
    if layers < 1 or abs(t / h - layers) > 1e-6:
        raise ValueError(f"{name} must be a whole number of layers of h = {h:g}; got {t:g}")
    return layers


def _float_option(value, name: str, low: float, high: float, what: str) -> float:
    real = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not (real and low <= value <= high and math.isfinite(value)):
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}] ({what}); got {value!r}")
    return float(value)


def _sharp_counts(field, x0s, t1: float, h: float, delta: float) -> tuple[Array, Array]:
    """The tokens at `t1` from each initial state (public `simulate`, outside any jit) and
    their sharp cluster counts."""
    ts = np.array([0.0, t1])
    xs = jnp.stack([simulate(field, x0, ts, solver=Layers(h)).xs[-1] for x0 in x0s])
    return xs, jax.vmap(lambda x: count_clusters(x, delta))(xs)


class SmallestBeta(eqx.Module):
    """The outcome of `smallest_beta`.

    `beta`: the answer, a scalar, or one value per layer (shape `(layers,)`) for a schedule.
    `search`: the `SearchResult` (loss history; `.params` is `log beta`). `x0`: the initial
    tokens, shape `(samples, n, d)`; `xs`: the tokens at `t1` under `beta` from each of them.

    Sharp verification (`attnflow.analysis.count_clusters` at radius `delta`, at `t1`):
    `clusters` under `beta` for each initial state, `clusters_below` under `below * beta`.
    `holds`: every initial state keeps at least `k` clusters, the constraint asked for;
    `tight`: under `below * beta` some initial state keeps fewer, so no much smaller `beta`
    (scaled as a whole) would do.
    """

    search: SearchResult
    beta: Float[Array, "*layers"]
    x0: Float[Array, "samples n d"]
    xs: Float[Array, "samples n d"]
    clusters: Int[Array, " samples"]
    clusters_below: Int[Array, " samples"]
    k: int = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    h: float = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    below: float = eqx.field(static=True)

    @property
    def holds(self) -> bool:
        return bool(jnp.all(self.clusters >= self.k))

    @property
    def tight(self) -> bool:
        return bool(jnp.any(self.clusters_below < self.k))


class _KeptLoss(eqx.Module):
    """`mean(beta) + weight * mean_s (horizon - time the soft count of sample s stays >= k)`,
    a Module so that the initial tokens are traced, not baked into the compiled step."""

    x0: Array
    template: PostLN | None  # the per-layer field of a schedule; None: a constant beta
    k: int = eqx.field(static=True)
    h: float = eqx.field(static=True)
    layers: int = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    temperature: float | None = eqx.field(static=True)
    weight: float = eqx.field(static=True)

    def field(self, beta) -> PostLN:
        if self.template is None:
            return SA(beta)
        return eqx.tree_at(lambda f: f.attention.layers.beta, self.template, beta)

    def __call__(self, log_beta):
        beta = jnp.exp(log_beta)
        field = self.field(beta)

        def count(t, x):
            return soft_cluster_count(x, self.delta, self.temperature)

        ts = np.arange(self.layers + 1) * self.h  # before and after each layer
        solver = Layers(self.h)
        counts = jax.vmap(lambda x: simulate(field, x, ts, solver=solver, save=count).xs)(self.x0)
        kept = jax.nn.sigmoid((counts - (self.k - 0.5)) / _COUNT_WIDTH)
        kept_time = self.h * (jnp.sum(kept, axis=-1) - (kept[..., 0] + kept[..., -1]) / 2)
        shortfall = self.layers * self.h - kept_time
        return jnp.mean(beta) + self.weight * jnp.mean(shortfall)


def smallest_beta(
    *,
    key,
    k: int = 2,
    n: int = 32,
    d: int = 2,
    t1: float = 30.0,
    solver: Layers = _LAYERS,
    samples: int = 4,
    schedule: bool = False,
    init: float = 10.0,
    delta: float = 1e-3,
    temperature: float | None = None,
    margin: float = 1.0,
    weight: float = 1.0,
    below: float = 0.9,
    steps: int = 100,
    optimizer=None,
    progress: bool = True,
    checkpoint=None,
    dtype=None,
    h: float | None = None,
) -> SmallestBeta:
    """The smallest `beta` under which `n` uniform tokens keep at least `k` clusters up to `t1`.

    The dynamics are the discrete post-LN transformer (SA layers with `Q = K = V = I`, step
    `h` of `solver=Layers(h)`), from `samples` initial states drawn uniformly on `S^{d-1}` from
    `key`; clusters are those of `attnflow.analysis.count_clusters` at radius `delta`. With
    `schedule=True`, one `beta` per layer (`PostLN(PerLayer([Softmax(beta_l)], h))`,
    `t1 / h` of them) and the mean `beta` is minimized.

    The search minimizes, over `log beta` (so `beta > 0`, and Adam's steps are relative),
    `mean(beta) + weight * mean_s (T - integral_0^T sigma((N_s(t) - k + 1/2) / 0.05) dt)`,
    `T = t1 + margin`, where `N_s(t)` is `soft_cluster_count(x_s(t), delta, temperature)`
    after each layer: the second term is the time, before `T`, that sample `s` spends with
    fewer than `k` clusters. A penalty on the count at `t1` alone would have no gradient once
    clusters have merged (the count is flat in `beta` there); this time does, since the merge
    time moves with `beta`. `margin` (default 1) asks for the clusters a little beyond `t1`,
    so that the answer holds at `t1` with the sharp count and not only on its edge.

    Arguments:
        key: a JAX PRNG key for the initial tokens.
        k: the number of clusters to keep, `2 <= k <= n`.
        n, d: the number of tokens and their dimension (`d >= 2`).
        t1: the final time, a whole number of layers.
        solver: `attnflow.Layers(h)`, the layer step `h` (default 0.1).
        samples: how many initial states the constraint is averaged over (and verified on).
        schedule: one `beta` per layer instead of one for all.
        init: the initial `beta` (every layer's, for a schedule); start above the answer.
        delta, temperature: the cluster radius and the smoothing of `soft_cluster_count`.
        margin: time beyond `t1` over which the clusters are asked for, `>= 0` (whole layers).
        weight: the price, in units of `beta`, of one unit of time with fewer than `k` clusters.
        below: the factor, in `(0, 1)`, of the check that the answer is tight.
        steps, optimizer, progress, checkpoint: as in `search`; default `optimizer`:
            Adam with learning rate 0.03 (a 3% change of `beta` per step).
        dtype: of the tokens and `beta` (JAX's default float if None).
        h: deprecated, the old spelling of `solver=attnflow.Layers(h)`.

    Returns:
        A `SmallestBeta`: the answer, the search, and the sharp counts that verify it.
    """
    k = positive_int(k, "k", 2)
    n = positive_int(n, "n", 2)
    if k > n:
        raise ValueError(f"k must be at most n = {n} (the number of tokens); got {k}")
    d = positive_int(d, "d", 2)
    samples = positive_int(samples, "samples")
    check_bool(schedule, "schedule")
    if h is not None:
        deprecated("smallest_beta(h=...)", "smallest_beta(solver=attnflow.Layers(h))")
        solver = Layers(h)
    if not isinstance(solver, Layers):
        raise ValueError(
            "solver must be attnflow.Layers(h) (smallest_beta searches the discrete "
            f"transformer); got {solver!r}"
        )
    h = solver.h
    t1 = positive_number(t1, "t1", "the final time")
    layers = _whole_layers(t1, h, "t1")
    init = positive_number(init, "init", "the initial beta")
    delta = positive_number(delta, "delta", "the cluster radius 1 - <x_i, x_j>")
    if temperature is not None:
        temperature = positive_number(temperature, "temperature", "the smoothing width")
    margin = _float_option(margin, "margin", 0.0, np.inf, "time beyond t1")
    extra = _whole_layers(margin, h, "margin") if margin > 0 else 0
    weight = positive_number(weight, "weight", "the price of time with fewer than k clusters")
    below = _float_option(below, "below", 0.0, 1.0, "the factor of the tightness check")
    if not 0 < below < 1:
        raise ValueError(
            f"below must be in (0, 1) (the factor of the tightness check); got {below}"
        )
    x0 = jax.vmap(lambda key: uniform(key, n, d, dtype=dtype))(jax.random.split(key, samples))
    template = None
    if schedule:
        template = PostLN(PerLayer([Softmax(jnp.ones((), x0.dtype))] * layers, h))
    params = jnp.full((layers,) if schedule else (), math.log(init), x0.dtype)
    loss = _KeptLoss(x0, template, k, h, layers + extra, delta, temperature, weight)
    if optimizer is None:
        optimizer = named_optimizer("adam", 0.03)
    result = search(loss, params, optimizer, steps=steps, progress=progress, checkpoint=checkpoint)
    beta = jnp.exp(result.params)
    xs, clusters = _sharp_counts(loss.field(beta), x0, t1, h, delta)
    _, clusters_below = _sharp_counts(loss.field(below * beta), x0, t1, h, delta)
    return SmallestBeta(result, beta, x0, xs, clusters, clusters_below, k, t1, h, delta, below)


class ValueForGroups(eqx.Module):
    """The outcome of `value_for_groups`.

    `V`: the value matrix found; `search`: the `SearchResult` (its `.params` is `V`, or the
    matrix `W` with `V = (W + W^T) / 2` when `symmetric`). `x0`, `labels`: the tokens and
    their prescribed groups; `xs`: the tokens at `t1` under `V`.

    Sharp verification at `t1`, radius `delta`: `clusters`, the cluster of each token (the
    connected components of `<x_i, x_j> >= 1 - delta`, numbered from 0 in the order of their
    first token); `count`, `attnflow.analysis.count_clusters`; `same_min`, the smallest cosine
    within a group (1 if no group has two tokens); `apart_max`, the largest cosine between
    groups (-1 if there is one group). `matches`: the clusters are exactly the groups.
    """

    search: SearchResult
    V: Float[Array, "d d"]
    x0: Float[Array, "n d"]
    labels: Int[Array, " n"]
    xs: Float[Array, "n d"]
    clusters: Int[Array, " n"]
    count: Int[Array, ""]
    same_min: Float[Array, ""]
    apart_max: Float[Array, ""]
    beta: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    delta: float = eqx.field(static=True)

    @property
    def matches(self) -> bool:
        same_group = self.labels[:, None] == self.labels[None, :]
        same_cluster = self.clusters[:, None] == self.clusters[None, :]
        return bool(jnp.all(same_group == same_cluster))


class _GroupLoss(eqx.Module):
    """The pairwise loss of `value_for_groups`; a Module so the tokens are traced."""

    x0: Array
    same: Array
    apart: Array
    beta: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    threshold: float = eqx.field(static=True)
    symmetric: bool = eqx.field(static=True)

    def value(self, W):
        return (W + W.T) / 2 if self.symmetric else W

    def __call__(self, W):
        field = SA(self.beta, None, None, self.value(W))
        x = simulate(field, self.x0, jnp.stack([0.0, self.t1]).astype(self.x0.dtype)).xs[-1]
        gram = x @ x.T
        close = jnp.log1p((1 - gram) / self.delta)
        far = jnp.log1p(jax.nn.relu(gram - self.threshold) / self.delta)
        return _mean(close, self.same) + _mean(far, self.apart)


def _mean(values, where):
    """The mean of `values` where `where` holds (0 where it never does)."""
    return jnp.sum(jnp.where(where, values, 0)) / jnp.maximum(jnp.sum(where), 1)


def _components(close: np.ndarray) -> np.ndarray:
    """The connected component of each node of the graph `close`, numbered from 0 in the
    order of their first node."""
    from scipy.sparse.csgraph import connected_components

    _, labels = connected_components(close, directed=False)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # component -> rank of its first node
    return order[labels]


def value_for_groups(
    x0,
    labels,
    *,
    beta: float = 1.0,
    t1: float = 10.0,
    symmetric: bool = True,
    apart: float = 0.0,
    delta: float = 1e-3,
    init=None,
    steps: int = 300,
    optimizer=None,
    progress: bool = True,
    checkpoint=None,
) -> ValueForGroups:
    """A value matrix `V` under which the tokens `x0` end at time `t1` in the groups `labels`.

    The dynamics are SA with `Q = K = I` and inverse temperature `beta`,
    `dx_i/dt = P_{x_i}(sum_j A_ij V x_j)` (`simulate`'s default solver, Tsit5). The search
    minimizes, over `V`, the mean over pairs in the same group of
    `log(1 + (1 - <x_i(t1), x_j(t1)>) / delta)` plus the mean over pairs in different groups of
    `log(1 + max(<x_i(t1), x_j(t1)> - apart, 0) / delta)`: same groups together, different
    groups at cosine `apart` or below. The logarithm, in units of the cluster radius `delta`,
    keeps the gradient from vanishing as pairs close in, until they are within `delta`.

    Whether groups are reachable depends on `x0` and `labels`: with symmetric `V` the flow
    clusters (GLPR), typically into the two ends `+-v` of an eigenvector, so two groups split
    by a hyperplane through the origin are the reliable case; the result says whether the
    sharp clusters match (`ValueForGroups.matches`).

    Arguments:
        x0: the tokens, shape `(n, d)`, on the unit sphere.
        labels: the group of each token, `n` integers (any values; equal means same group).
        beta: the inverse temperature of the attention, `>= 0`.
        t1: the time at which the groups are asked for.
        symmetric: search over symmetric `V = (W + W^T) / 2` (the matrices under which SA is
            known to cluster), or over all `V`.
        apart: the largest cosine wanted between different groups, in `[-1, 1)`.
        delta: the cluster radius of the loss and of the sharp check.
        init: the initial `V` (or `W`), shape `(d, d)`; default 0, tokens at rest, from where
            the gradient is that of the linearized flow.
        steps, optimizer, progress, checkpoint: as in `search`; default `optimizer`: Adam with
            learning rate 0.02.

    Returns:
        A `ValueForGroups`: `V`, the search, and the sharp clusters at `t1` that verify it.
    """
    x0 = as_float_array(x0, "x0")
    if x0.ndim != 2 or x0.shape[0] < 2 or x0.shape[1] < 2:
        raise ValueError(f"x0 must have shape (n, d) with n, d >= 2; got shape {x0.shape}")
    n, d = x0.shape
    x0 = SA(1.0).check(x0)  # finite, on the sphere
    given = np.asarray(labels)
    if given.shape != (n,) or not np.issubdtype(given.dtype, np.integer):
        raise ValueError(
            f"labels must be {n} integers (the group of each token of x0); got "
            f"{'dtype ' + str(given.dtype) if given.shape == (n,) else 'shape ' + str(given.shape)}"
        )
    labels = jnp.asarray(np.unique(given, return_inverse=True)[1].reshape(n))
    beta = _float_option(beta, "beta", 0.0, np.inf, "the inverse temperature")
    t1 = positive_number(t1, "t1", "the final time")
    check_bool(symmetric, "symmetric")
    apart = _float_option(apart, "apart", -1.0, 1.0, "the largest cosine between groups")
    if apart == 1:
        raise ValueError("apart must be below 1 (the largest cosine between groups); got 1.0")
    delta = positive_number(delta, "delta", "the cluster radius 1 - <x_i, x_j>")
    if init is None:
        init = jnp.zeros((d, d), x0.dtype)
    init = as_float_array(init, "init").astype(x0.dtype)
    if init.shape != (d, d):
        raise ValueError(f"init must have shape ({d}, {d}); got shape {init.shape}")
    same = labels[:, None] == labels[None, :]
    loss = _GroupLoss(x0, same & ~jnp.eye(n, dtype=bool), ~same, beta, t1, delta, apart, symmetric)
    if optimizer is None:
        optimizer = named_optimizer("adam", 0.02)
    result = search(loss, init, optimizer, steps=steps, progress=progress, checkpoint=checkpoint)
    V = loss.value(result.params)
    xs = simulate(SA(beta, None, None, V), x0, np.array([0.0, t1])).xs[-1]
    clusters = jnp.asarray(_components(np.asarray(close_pairs(xs, delta))))
    gram = xs @ xs.T
    same_min = jnp.min(jnp.where(loss.same, gram, 1))
    apart_max = jnp.max(jnp.where(loss.apart, gram, -1))
    count = count_clusters(xs, delta)
    return ValueForGroups(
        result, V, x0, labels, xs, clusters, count, same_min, apart_max, beta, t1, delta
    )


class Recovery(eqx.Module):
    """The outcome of `recover_parameters`.

    `true`: the field that made the recording, `SA(beta, Q, K, V)`; `fitted`: the field
    `fit_trajectory` found; `search`: its `SearchResult`. `ts`, `xs`: the recording.
    `held_out`: tokens not used by the fit, `held_true`, `held_fitted`: their trajectories
    (at `ts`) under the true and the fitted field.

    Verification: `logits_error` and `value_error`, the relative Frobenius errors
    `|A_fit - A| / |A|` of the identifiable combinations `A = beta Q^T K` and `V` (see
    `identifiable`; `beta`, `Q`, `K` separately are not determined by any trajectory);
    `prediction_error`, the root-mean-square distance `sqrt(mean_{t, i} |x_i - x_i'|^2)`
    between the held-out trajectories.
    """

    search: SearchResult
    true: PostLN
    fitted: PostLN
    ts: Float[Array, " T"]
    xs: Float[Array, "T n d"]
    held_out: Float[Array, "n d"]
    held_true: Float[Array, "T n d"]
    held_fitted: Float[Array, "T n d"]
    logits_error: Float[Array, ""]
    value_error: Float[Array, ""]
    prediction_error: Float[Array, ""]


def recover_parameters(
    *,
    key,
    n: int = 8,
    d: int = 3,
    m: int = 2,
    beta: float = 1.0,
    t1: float = 5.0,
    saves: int = 21,
    steps: int = 200,
    optimizer=None,
    progress: bool = True,
    dtype=None,
) -> Recovery:
    """Recover known attention parameters from the trajectory they generate.

    Draws `Q`, `K` of shape `(m, d)` (non-square when `m != d`) and `V` of shape `(d, d)`,
    entries normal with variance `1 / d`, and `n` tokens uniform on `S^{d-1}`, all from `key`;
    records `simulate(SA(beta, Q, K, V), x0, ts)` at `saves` times evenly spaced in `[0, t1]`
    (tolerances `1e-10` in float64, `1e-6` in float32); fits it with `fit_trajectory`; and
    compares the identifiable combinations `beta Q^T K` and `V` and the prediction of a
    trajectory from held-out tokens (also drawn from `key`).

    Arguments:
        key: a JAX PRNG key for the weights and the tokens.
        n, d, m: tokens (`n >= d + 1`, so that their differences can span `R^d`), dimension
            (`>= 2`), and rows of `Q` and `K`.
        beta: the inverse temperature of the true field, `> 0`.
        t1, saves: the length of the recording and its number of save times (`>= 2`).
        steps, optimizer, progress: as in `fit_trajectory`.
        dtype: of the weights and tokens (JAX's default float if None).

    Returns:
        A `Recovery`: both fields, the recording, the held-out trajectories and the errors.
    """
    d = positive_int(d, "d", 2)
    n = positive_int(n, "n", d + 1)
    m = positive_int(m, "m")
    beta = positive_number(beta, "beta", "the inverse temperature")
    t1 = positive_number(t1, "t1", "the length of the recording")
    saves = positive_int(saves, "saves", 2)
    keys = jax.random.split(key, 5)
    dtype = dtype or jnp.zeros(()).dtype
    scale = 1 / math.sqrt(d)
    Q, K = (scale * jax.random.normal(keys[i], (m, d), dtype) for i in (0, 1))
    V = scale * jax.random.normal(keys[2], (d, d), dtype)
    true = SA(jnp.asarray(beta, dtype), Q, K, V)
    x0 = uniform(keys[3], n, d, dtype=dtype)
    held_out = uniform(keys[4], n, d, dtype=dtype)
    ts = jnp.linspace(0.0, t1, saves, dtype=dtype)
    tol = 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-6
    xs = simulate(true, x0, ts, rtol=tol, atol=tol).xs
    fit_key = jax.random.fold_in(key, 5)  # the fit's initial guess
    result = fit_trajectory(
        ts, xs, steps=steps, optimizer=optimizer, progress=progress, key=fit_key
    )
    fitted = result.params
    (A, Vt), (A_fit, V_fit) = identifiable(true), identifiable(fitted)
    held_true = simulate(true, held_out, ts, rtol=tol, atol=tol).xs
    held_fitted = simulate(fitted, held_out, ts, rtol=tol, atol=tol).xs
    relative = lambda a, b: jnp.linalg.norm(a - b) / jnp.linalg.norm(b)  # noqa: E731
    prediction_error = jnp.sqrt(jnp.mean(jnp.sum((held_fitted - held_true) ** 2, axis=-1)))
    return Recovery(
        search=result,
        true=true,
        fitted=fitted,
        ts=ts,
        xs=xs,
        held_out=held_out,
        held_true=held_true,
        held_fitted=held_fitted,
        logits_error=relative(A_fit, A),
        value_error=relative(V_fit, Vt),
        prediction_error=prediction_error,
    )
