"""attnflow.optimize: gradients through the flow, objectives, search, fit_trajectory.

Every gradient is checked against central finite differences of the forward solve (float64),
the objectives against their sharp counterparts in `attnflow.analysis`, the fit against the
parameters that generated the data.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import attnflow as af
from attnflow import optimize as opt

TS = jnp.linspace(0.0, 2.0, 5)


def _problem(getkey, n=6, d=3, m=4):
    x0 = af.sphere.uniform(getkey(), n, d)
    Q, K = (jax.random.normal(getkey(), (m, d)) / np.sqrt(m) for _ in range(2))
    V = jax.random.normal(getkey(), (d, d))
    return x0, Q, K, V


def _scalar(xs):
    """A scalar that depends on every save time and every token."""
    weights = jnp.arange(1.0, 1.0 + xs.size).reshape(xs.shape) / xs.size
    return jnp.sum(jnp.sin(xs * weights))


def _run(params, method):
    beta, Q, K, V, x0 = params
    if method == "layers":
        trajectory = af.simulate(af.SA(beta, Q, K, V), x0, TS, solver=af.Layers(0.1))
    else:
        trajectory = af.simulate(
            af.SA(beta, Q, K, V), x0, TS, rtol=1e-12, atol=1e-12, adjoint=method
        )
    return _scalar(trajectory.xs)


def _directional_fd(f, params, direction, eps=1e-5):
    plus = jax.tree.map(lambda p, u: p + eps * u, params, direction)
    minus = jax.tree.map(lambda p, u: p - eps * u, params, direction)
    return (f(plus) - f(minus)) / (2 * eps)


@pytest.mark.parametrize("method", ["checkpoint", "backsolve", "layers"])
def test_gradients_match_finite_differences(getkey, method):
    x0, Q, K, V = _problem(getkey)
    params = (jnp.asarray(1.5), Q, K, V, x0)
    grads = jax.grad(_run)(params, method)
    # One directional derivative per argument (beta, Q, K, V, x0 along the sphere's tangent).
    for i in range(5):
        direction = [jnp.zeros_like(p) for p in params]
        u = jax.random.normal(getkey(), params[i].shape)
        if i == 4:
            u = af.sphere.project(x0, u)  # stay on the sphere to first order
        direction[i] = u
        fd = _directional_fd(lambda p: _run(p, method), params, tuple(direction))
        exact = jnp.sum(grads[i] * u)
        assert float(exact) == pytest.approx(float(fd), rel=1e-6, abs=1e-9), (method, i)


def test_gradients_under_vmap_over_initial_conditions(getkey):
    x0s = jax.vmap(lambda k: af.sphere.uniform(k, 5, 3))(jax.random.split(getkey(), 3))

    def f(beta, x0):
        return _scalar(af.simulate(af.SA(beta), x0, TS, rtol=1e-12, atol=1e-12).xs)

    grads = jax.vmap(jax.grad(f), in_axes=(None, 0))(2.0, x0s)
    for x0, g in zip(x0s, grads, strict=True):
        fd = (f(2.0 + 1e-5, x0) - f(2.0 - 1e-5, x0)) / 2e-5
        assert float(g) == pytest.approx(float(fd), rel=1e-6)


def test_gradients_of_per_layer_weights(getkey):
    """`jax.grad` with respect to one weight set per layer (PerLayer), through the layers."""
    x0 = af.sphere.uniform(getkey(), 5, 3)
    h, layers = 0.1, 8
    ts = jnp.asarray([0.0, 0.4, 0.8])

    def f(betas, Vs):
        kernels = [af.Softmax(b, V=V) for b, V in zip(betas, Vs, strict=True)]
        field = af.PostLN(af.PerLayer(kernels, h))
        return _scalar(af.simulate(field, x0, ts, solver=af.Layers(h)).xs)

    betas = jnp.linspace(0.5, 3.0, layers)
    Vs = jax.random.normal(getkey(), (layers, 3, 3))
    g_beta, g_V = jax.grad(f, argnums=(0, 1))(betas, Vs)
    u, w = jax.random.normal(getkey(), betas.shape), jax.random.normal(getkey(), Vs.shape)
    fd = (f(betas + 1e-5 * u, Vs + 1e-5 * w) - f(betas - 1e-5 * u, Vs - 1e-5 * w)) / 2e-5
    assert float(jnp.sum(g_beta * u) + jnp.sum(g_V * w)) == pytest.approx(float(fd), rel=1e-6)


def test_backsolve_applies_a_statistic_after_the_solve(getkey):
    x0 = af.sphere.uniform(getkey(), 5, 3)
    save = lambda t, x: jnp.mean(x @ x.T)  # noqa: E731
    kwargs = dict(rtol=1e-10, atol=1e-10, save=save)
    a = af.simulate(af.SA(2.0), x0, TS, adjoint="backsolve", **kwargs).xs
    b = af.simulate(af.SA(2.0), x0, TS, **kwargs).xs
    np.testing.assert_allclose(a, b, rtol=1e-8)


def test_layers_under_an_outer_jit(getkey):
    """Concrete save times stay usable under jax.jit (the layer count is static)."""
    x0 = af.sphere.uniform(getkey(), 4, 3)
    ts = np.linspace(0.0, 1.0, 11)

    def run(x0):
        return af.simulate(af.SA(1.0), x0, ts, solver=af.Layers(0.1)).xs

    np.testing.assert_allclose(jax.jit(run)(x0), run(x0), rtol=1e-12)


def test_adjoint_errors(getkey):
    x0 = af.sphere.uniform(getkey(), 4, 3)
    # float64 weights with float32 tokens: the backsolve adjoint works in the tokens' dtype
    x32 = x0.astype(jnp.float32)

    def loss(V):
        return jnp.sum(af.simulate(af.SA(1.0, V=V), x32, TS, adjoint="backsolve").xs)

    assert jax.grad(loss)(jnp.eye(3)).dtype == jnp.float64
    with pytest.raises(ValueError, match="adjoint must be one of 'checkpoint', 'backsolve'"):
        af.simulate(af.SA(1.0), x0, TS, adjoint="direct-ish")
    with pytest.raises(ValueError, match="adjoint applies to ODE solvers"):
        af.simulate(af.SA(1.0), x0, TS, solver=af.Layers(0.1), adjoint="backsolve")


# ---------------------------------------------------------------- objectives


def _clusters(getkey, sizes, d=3, spread=1e-4):
    centers = af.sphere.uniform(getkey(), len(sizes), d)
    points = [
        jnp.repeat(c[None], s, 0) + spread * jax.random.normal(getkey(), (s, d))
        for c, s in zip(centers, sizes, strict=True)
    ]
    return af.sphere.normalize(jnp.concatenate(points))


def test_soft_cluster_count_tends_to_the_sharp_count(getkey, dtype):
    x = _clusters(getkey, [3, 1, 5, 2]).astype(dtype)
    sharp = int(af.analysis.count_clusters(x, 1e-2))
    assert sharp == 4
    soft = opt.soft_cluster_count(x, delta=1e-2, temperature=1e-4)
    assert soft.dtype == dtype
    assert float(soft) == pytest.approx(sharp, abs=1e-3)
    # smooth: finite gradients also at coincident and antipodal tokens
    x = jnp.asarray([[1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]], dtype)
    g = jax.grad(lambda x: opt.soft_cluster_count(x, 0.1, 0.05))(x)
    assert jnp.all(jnp.isfinite(g))
    assert float(opt.soft_cluster_count(x, 0.1, 0.01)) == pytest.approx(2.0, abs=1e-4)


def test_soft_collapse_time_tends_to_the_equiangular_crossing_time(dtype):
    """Equiangular tokens stay equiangular; all pairs cross `1 - delta` at once, at the time
    `attnflow.crossing_time` gives (GLPR Thm 6.8)."""
    n, beta, delta = 4, 1.0, 1e-2
    # regular simplex: pairwise inner products -1/(n-1)... shifted toward one pole
    simplex = jnp.eye(n) - 1.0 / n
    x0 = af.sphere.normalize(simplex + 1.0 * jnp.ones((n, n)) / np.sqrt(n))
    rho0 = float(x0[0] @ x0[1])
    ts = jnp.linspace(0.0, 8.0, 801)
    xs = af.simulate(af.SA(beta), x0.astype(dtype), ts.astype(dtype), rtol=1e-8, atol=1e-8).xs
    t_star = float(af.crossing_time(beta, n, delta=delta, rho0=rho0))
    soft = float(opt.soft_collapse_time(ts, xs, delta=delta, temperature=1e-5))
    assert soft == pytest.approx(t_star, abs=0.02)
    # a run that never collapses gives the end time
    assert float(opt.soft_collapse_time(ts[:50], xs[:50], delta, 1e-5)) == pytest.approx(0.49)


def test_objectives_bad_input(getkey):
    xs = jnp.stack([af.sphere.uniform(getkey(), 4, 3)] * 3)
    with pytest.raises(ValueError, match="ts must be finite and strictly increasing"):
        opt.soft_collapse_time(jnp.asarray([0.0, 2.0, 1.0]), xs)
    with pytest.raises(ValueError, match="xs must have shape \\(T, n, d\\) with T = len"):
        opt.soft_collapse_time(jnp.arange(4.0), xs)
    with pytest.raises(ValueError, match="delta must be at most 2"):
        opt.soft_cluster_count(xs[0], delta=3.0)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        opt.soft_cluster_count(xs[0], delta=0.1, temperature=0.0)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda x: x.at[0, 0].set(jnp.nan), "must hold only finite numbers"),
        (lambda x: x.at[0, 0].set(jnp.inf), "must hold only finite numbers"),
        (lambda x: 10 * x, "must lie on the unit sphere"),  # counted 1.5 clusters
        (lambda x: 0 * x, "must lie on the unit sphere"),
        (lambda x: x[:0], r"must have shape \(\.\.\., n, d\) with every size >= 1"),
        (lambda x: x[:, :0], r"must have shape \(\.\.\., n, d\) with every size >= 1"),
    ],
)
def test_objectives_refuse_tokens_off_the_sphere(getkey, dtype, bad, match):
    x = bad(af.sphere.uniform(getkey(), 4, 3, dtype=dtype))
    with pytest.raises(ValueError, match="x " + match):
        opt.soft_cluster_count(x)
    with pytest.raises(ValueError, match="xs " + match):
        opt.soft_collapse_time(jnp.arange(3.0, dtype=dtype), jnp.stack([x] * 3))


def test_objectives_check_traced_tokens_and_short_inputs(getkey):
    x = af.sphere.uniform(getkey(), 4, 3)
    count = eqx.filter_jit(opt.soft_cluster_count)
    assert 1 <= float(count(x)) <= 4
    with pytest.raises(Exception, match="x must lie on the unit sphere"):
        count(2 * x)
    with pytest.raises(ValueError, match="ts must hold at least two save times"):
        opt.soft_collapse_time(jnp.zeros(1), x[None])
    with pytest.raises(ValueError, match=r"pred must have shape .* with every size >= 1"):
        opt.trajectory_loss(x[:0], x[:0])


def test_trajectory_loss_and_energy(getkey):
    x0 = af.sphere.uniform(getkey(), 5, 3)
    a = af.simulate(af.SA(1.0), x0, TS)
    assert float(opt.trajectory_loss(a, a)) == 0.0
    shifted = a.xs.at[:, 0].set(-a.xs[:, 0])
    assert float(opt.trajectory_loss(a, shifted)) == pytest.approx(4 / 5)  # |2x|^2 / n
    with pytest.raises(ValueError, match="same shape"):
        opt.trajectory_loss(a.xs, a.xs[1:])
    assert opt.energy is af.energy  # one implementation, re-exported


# ---------------------------------------------------------------- search


def _quadratic(p):
    return jnp.sum((p["a"] - 3.0) ** 2) + (p["b"] + 1.0) ** 2


def test_search_finds_known_minima():
    start = {"a": jnp.zeros(3), "b": jnp.asarray(0.0)}
    result = opt.search(_quadratic, start, "lbfgs", steps=20, progress=False)
    np.testing.assert_allclose(result.params["a"], 3.0, atol=1e-8)
    assert float(result.loss) < 1e-12
    assert result.history.shape == (21,)
    assert float(result.history[int(result.best)]) == float(result.loss)
    adam = opt.search(_quadratic, start, optax.adam(0.1), steps=400, progress=False)
    assert float(adam.loss) < 1e-6


def test_search_early_stopping():
    start = {"a": jnp.zeros(3), "b": jnp.asarray(0.0)}
    # sgd on a quadratic reaches the rounding floor, then the loss stops improving
    result = opt.search(_quadratic, start, "sgd", steps=100_000, patience=5, progress=False)
    assert len(result.history) < 5000
    assert float(result.loss) < 1e-20


def test_search_compiles_once():
    compiles = []

    def listen(event, *_, **__):
        if "backend_compile" in event:
            compiles.append(event)

    def loss(p):  # a new function: never compiled before this test
        return jnp.sum((p["a"] - 1.0) ** 4) + p["b"] ** 2

    first = {"a": jnp.zeros(3), "b": jnp.asarray(0.0)}
    second = {"a": jnp.ones(3), "b": jnp.asarray(2.0)}
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        opt.search(loss, first, "adam", steps=3, progress=False)
        assert compiles  # the listener hears compilations
        before = len(compiles)
        opt.search(loss, second, "adam", steps=5, progress=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert len(compiles) == before


def _counting_bar(monkeypatch, fail_after=None, error=KeyboardInterrupt):
    """Patch the search's tqdm to count the steps taken, raising `error` after `fail_after`."""
    import tqdm.auto

    import attnflow.optimize._search as search_module

    taken = []

    class Bar(tqdm.auto.tqdm):
        def update(self, k=1):
            if fail_after is not None and len(taken) >= fail_after:
                raise error("interrupted")
            taken.append(k)
            super().update(k)

    monkeypatch.setattr(search_module, "tqdm", Bar)
    return taken


def test_interrupted_search_resumes_to_the_same_result(tmp_path, monkeypatch):
    start = {"a": jnp.zeros(3), "b": jnp.asarray(0.0)}
    whole = opt.search(_quadratic, start, "adam", steps=25, progress=False)
    for error, saved in ((KeyboardInterrupt, 8), (RuntimeError, 6)):
        # the 8th step done, Ctrl-C writes it at once; another failure leaves the last
        # periodic checkpoint (every 3 steps: 6)
        path = tmp_path / f"{error.__name__}.eqx"
        _counting_bar(monkeypatch, fail_after=7, error=error)
        with pytest.raises(error):
            opt.search(
                _quadratic,
                start,
                "adam",
                steps=25,
                checkpoint=path,
                checkpoint_every=3,
                progress=False,
            )
        taken = _counting_bar(monkeypatch)
        resumed = opt.search(_quadratic, start, "adam", steps=25, checkpoint=path, progress=False)
        assert len(taken) == 25 - saved  # resumed, not restarted
        np.testing.assert_array_equal(resumed.history, whole.history)
        np.testing.assert_array_equal(resumed.params["a"], whole.params["a"])
        assert int(resumed.best) == int(whole.best)
    # a finished search returns its result without stepping; more steps continue it
    taken = _counting_bar(monkeypatch)
    again = opt.search(_quadratic, start, "adam", steps=25, checkpoint=path, progress=False)
    assert not taken
    np.testing.assert_array_equal(again.history, whole.history)
    longer = opt.search(_quadratic, start, "adam", steps=30, checkpoint=path, progress=False)
    assert len(taken) == 5
    np.testing.assert_array_equal(
        longer.history, opt.search(_quadratic, start, "adam", steps=30, progress=False).history
    )
    with pytest.raises(ValueError, match="holds a search of 30 steps, more than steps=10"):
        opt.search(_quadratic, start, "adam", steps=10, checkpoint=path, progress=False)
    # another search's checkpoint is refused: other initial params, or another optimizer
    with pytest.raises(ValueError, match="belongs to another search"):
        opt.search(
            _quadratic,
            {"a": jnp.ones(3), "b": jnp.asarray(0.0)},
            "adam",
            steps=30,
            checkpoint=path,
            progress=False,
        )
    with pytest.raises(ValueError, match="belongs to another search"):
        opt.search(_quadratic, start, optax.adam(0.5), steps=30, checkpoint=path, progress=False)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="damaged"):
        opt.search(_quadratic, start, "adam", steps=30, checkpoint=path, progress=False)


def test_two_searches_on_one_checkpoint_both_finish(tmp_path, monkeypatch):
    """Issue 22: two searches writing one checkpoint at once shared one temporary file, and
    one crashed (FileNotFoundError) after the other renamed it. Both now finish with the
    result of a search done alone, and the file left is a complete checkpoint of theirs."""
    import threading

    import equinox as eqx

    start = {"a": jnp.zeros(3), "b": jnp.asarray(0.0)}
    alone = opt.search(_quadratic, start, "adam", steps=12, progress=False)
    path = tmp_path / "shared.eqx"
    together, met = threading.Barrier(2, timeout=60), set()
    serialise = eqx.tree_serialise_leaves

    def meet_then_serialise(file, tree):  # the first writes of both searches overlap
        if threading.get_ident() not in met:
            met.add(threading.get_ident())
            together.wait()
        return serialise(file, tree)

    monkeypatch.setattr(eqx, "tree_serialise_leaves", meet_then_serialise)
    results, errors = [], []

    def one_search():
        try:
            results.append(
                opt.search(
                    _quadratic,
                    start,
                    "adam",
                    steps=12,
                    checkpoint=path,
                    checkpoint_every=1,
                    progress=False,
                )
            )
        except Exception as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=one_search) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    monkeypatch.setattr(eqx, "tree_serialise_leaves", serialise)
    assert not errors, errors
    assert len(results) == 2 and len(met) == 2
    for result in results:
        np.testing.assert_array_equal(result.history, alone.history)
        np.testing.assert_array_equal(result.params["a"], alone.params["a"])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    taken = _counting_bar(monkeypatch)
    resumed = opt.search(_quadratic, start, "adam", steps=12, checkpoint=path, progress=False)
    assert not taken  # a finished search's checkpoint: returned without stepping
    np.testing.assert_array_equal(resumed.history, alone.history)


def test_checkpoint_folder_is_checked_before_the_first_step(tmp_path, monkeypatch):
    """Issue 22: a checkpoint in a missing folder failed only when it was first written,
    after the steps; it is refused at once, and so are a folder given as the checkpoint and
    a folder that cannot be written."""
    start = {"a": jnp.zeros(3), "b": jnp.asarray(0.0)}
    calls = []

    def loss(p):
        calls.append(1)
        return _quadratic(p)

    def run(checkpoint):
        return opt.search(loss, start, "adam", steps=3, checkpoint=checkpoint, progress=False)

    missing = tmp_path / "nowhere" / "search.eqx"
    with pytest.raises(ValueError, match=f"checkpoint {missing}: its folder .* does not exist"):
        run(missing)
    with pytest.raises(ValueError, match=f"checkpoint must be a file path; {tmp_path} is not"):
        run(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint must be a file path or None; got 3"):
        run(3)
    monkeypatch.setattr("os.access", lambda *args, **kwargs: False)  # as for a non-root user
    with pytest.raises(ValueError, match=f"its folder {tmp_path} is not writable"):
        run(tmp_path / "search.eqx")
    assert not calls and not list(tmp_path.iterdir())  # nothing computed, nothing written


def test_search_holds_non_array_leaves_fixed():
    """Ints, strings and functions in params are held fixed, never converted."""

    def loss(p):
        return jnp.sum(p["act"](p["w"][: p["k"]] - 1.0) ** 2) if p["name"] == "x" else 0.0

    start = {"w": jnp.zeros(3), "k": 2, "name": "x", "act": jnp.tanh}
    result = opt.search(loss, start, "adam", steps=5, progress=False)
    assert result.params["k"] == 2 and result.params["name"] == "x"
    assert result.params["act"] is jnp.tanh
    assert float(result.params["w"][2]) == 0.0  # unused entry: zero gradient


def test_search_stops_on_a_non_finite_loss():
    def loss(x):  # finite at the start, NaN once x passes 1
        return jnp.where(x < 1.0, (x - 2.0) ** 2, jnp.nan)

    with pytest.warns(opt.SearchWarning, match="not finite .* at step 1"):
        result = opt.search(loss, 0.0, optax.sgd(0.3), steps=50, progress=False)
    assert float(result.params) < 1.0
    assert np.isfinite(float(result.loss))


def test_search_stops_when_a_check_inside_the_loss_fails(getkey):
    """sgd with a large rate steps beta below 0, which SA refuses at run time."""
    x0 = af.sphere.uniform(getkey(), 4, 3)

    def loss(beta):
        xs = af.simulate(af.SA(beta), x0, TS, solver=af.Layers(0.5)).xs
        return beta + jnp.sum(xs[-1, 0])  # d/dbeta about 1: the step goes far below 0

    with pytest.warns(opt.SearchWarning, match="the loss raised .beta must be .* at step 1"):
        result = opt.search(loss, 0.1, optax.sgd(1e3), steps=5, progress=False)
    assert float(result.params) == pytest.approx(0.1)


def test_search_in_float32():
    start = jnp.zeros(3, jnp.float32)
    result = opt.search(lambda p: jnp.sum((p - 1.0) ** 2), start, "adam", steps=300, progress=False)
    assert result.params.dtype == jnp.float32 and result.loss.dtype == jnp.float32
    assert float(result.loss) < 1e-4


def test_search_bad_input():
    good = jnp.zeros(2)
    with pytest.raises(ValueError, match="loss must return a scalar; got \\(2,\\)"):
        opt.search(lambda p: p, good, "adam", steps=3)
    with pytest.raises(ValueError, match=r"params must be finite; params\['a'\] holds 1"):
        opt.search(_quadratic, {"a": jnp.asarray([0.0, jnp.nan]), "b": 0.0}, "adam", steps=3)
    with pytest.raises(ValueError, match="steps must be an integer >= 1; got 0"):
        opt.search(_quadratic, {"a": good, "b": 0.0}, "adam", steps=0)
    for bad in ("newton", ["adam"], None):
        with pytest.raises(ValueError, match="optimizer must be an optax GradientTransformation"):
            opt.search(_quadratic, {"a": good, "b": 0.0}, bad, steps=3)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        opt.optimizer("adam", jnp.asarray([0.1, 0.2]))
    assert opt.optimizer("adam", np.float32(0.5)) is opt.optimizer("adam", 0.5)  # cached
    with pytest.raises(ValueError, match="at least one floating-point array"):
        opt.search(lambda p: jnp.asarray(0.0), {"k": 3}, "adam", steps=3)
    with pytest.raises(ValueError, match="finite at the initial params"):
        opt.search(lambda p: jnp.log(p), jnp.asarray(-1.0), "adam", steps=3)


# ---------------------------------------------------------------- fit_trajectory


def test_fit_trajectory_recovers_the_identifiable_parameters(getkey, dtype):
    """A synthetic SA trajectory with random non-square Q, K and random V (n = 8, d = 3):
    `beta Q^T K` and `V` recovered to 1e-3 relative; the fit predicts held-out later times.
    (float32: a float32 recording, the fit returned in float32.)"""
    x0, Q, K, V = _problem(getkey, n=8, d=3, m=5)
    true = af.SA(1.3, Q, K, V)
    ts = jnp.linspace(0.0, 3.0, 16)
    xs = af.simulate(true, x0, ts, rtol=1e-12, atol=1e-12).xs
    result = opt.fit_trajectory(
        ts[:11].astype(dtype), xs[:11].astype(dtype), progress=False, key=jax.random.key(0)
    )
    fitted, expected = opt.identifiable(result.params), opt.identifiable(true)
    for a, b in zip(fitted, expected, strict=True):
        assert a.dtype == dtype
        assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) < 1e-3
    if dtype == jnp.float32:
        return
    held_out = af.simulate(result.params, x0, ts, rtol=1e-10, atol=1e-10).xs[11:]
    np.testing.assert_allclose(held_out, xs[11:], atol=1e-6)


def test_identifiable_combinations():
    Q = jnp.asarray([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
    K = jnp.asarray([[0.5, 0.0, 1.0], [1.0, 1.0, 0.0]])
    A, V = opt.identifiable(af.SA(2.0, Q, K, jnp.eye(3)))
    np.testing.assert_allclose(A, 2.0 * Q.T @ K)
    # the same flow from other (beta, Q, K) with the same beta Q^T K
    A2, _ = opt.identifiable(af.SA(4.0, Q / 2, K, jnp.eye(3)))
    np.testing.assert_allclose(A, A2)
    with pytest.raises(ValueError, match="dot-product attention field"):
        opt.identifiable(af.PostLN(af.MultiHead([af.Softmax(1.0), af.Softmax(2.0)])))
    with pytest.raises(ValueError, match="pass V = jnp.eye"):
        opt.identifiable(af.SA(1.0))


def test_fit_trajectory_bad_input(getkey):
    xs = jnp.stack([af.sphere.uniform(getkey(), 4, 3)] * 3)
    with pytest.raises(ValueError, match="xs must have shape \\(T, n, d\\)"):
        opt.fit_trajectory(jnp.arange(3.0), xs[0], key=jax.random.key(0))
    with pytest.raises(ValueError, match="ts must have shape \\(3,\\)"):
        opt.fit_trajectory(jnp.arange(4.0), xs, key=jax.random.key(0))
    with pytest.raises(ValueError, match="kind must be one of 'SA', 'USA'"):
        opt.fit_trajectory(jnp.arange(3.0), xs, kind="sa", key=jax.random.key(0))
    with pytest.raises(ValueError, match="xs must hold only finite numbers"):
        opt.fit_trajectory(jnp.arange(3.0), xs.at[0, 0, 0].set(jnp.nan), key=jax.random.key(0))
    with pytest.raises(ValueError, match="ts must hold at least two strictly increasing"):
        opt.fit_trajectory(jnp.asarray([0.0, 2.0, 1.0]), xs, key=jax.random.key(0))
    with pytest.raises(ValueError, match="xs must lie on the unit sphere"):
        opt.fit_trajectory(jnp.arange(3.0), 2 * xs, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"xs must have shape \(T, n, d\), no size 0"):
        # numpy's "zero-size array" error
        opt.velocity_guess(jnp.arange(3.0), xs[:, :0], key=jax.random.key(0))
