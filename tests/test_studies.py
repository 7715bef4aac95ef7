"""Phase diagrams and metastability against plain loops, theorems and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow.studies import phase_diagram_sample, random_weights, span_coordinates
from attnflow.studies._phase_diagram import span_realizations
from attnflow.sweep import Store


def plain_loop(key, *, n, d, betas, ts, samples, delta=1e-3, weights="identity", h=0.1):
    """Close-pair counts by a plain Python loop of `simulate` over betas and samples."""
    counts = np.zeros((len(betas), samples, len(ts)), np.int64)
    for b, beta in enumerate(betas):
        for s in range(samples):
            x0, q, k, v = phase_diagram_sample(key, s, n=n, d=d, weights=weights)
            xs = np.asarray(af.simulate(af.SA(beta, q, k, v), x0, ts, solver=af.Layers(h)).xs)
            gram = np.einsum("tid,tjd->tij", xs, xs)
            counts[b, s] = np.sum((gram >= 1 - delta) & ~np.eye(n, dtype=bool), axis=(1, 2))
    return counts


def stored_counts(store, config, shape):
    store = Store(store, config, shape[0] * shape[1])
    counts = np.concatenate([store.read(a, b)["close"] for a, b in store.chunks()])
    return counts.reshape(shape)


@pytest.mark.parametrize(
    "n, d, weights",
    [(6, 3, "identity"), (4, 9, "identity"), (5, 4, "ginibre_psd"), (5, 3, "goe_qk")],
    ids=["identity", "span-reduced", "ginibre_psd", "goe_qk"],
)
def test_layers_sweep_equals_a_plain_loop(tmp_path, n, d, weights):
    """Same seed: the same close-pair count for every beta, sample and save time, although the
    sweep stops clustered chunks early and, for d > n, works in the span of the tokens."""
    key, betas, samples = jax.random.key(7), [0.3, 2.0, 6.0], 4
    ts = np.array([0, 5, 10, 20, 40, 80, 120]) * 0.1
    diagram = af.phase_diagram(
        key=key,
        n=n,
        d=d,
        betas=betas,
        ts=ts,
        samples=samples,
        weights=weights,
        memory=30_000,
        store=tmp_path,
        progress=False,
    )
    expected = plain_loop(key, n=n, d=d, betas=betas, ts=ts, samples=samples, weights=weights)
    np.testing.assert_array_equal(stored_counts(tmp_path, diagram.config, expected.shape), expected)
    np.testing.assert_allclose(diagram.prob, expected.mean(axis=1) / (n * (n - 1)), rtol=1e-15)
    if weights == "identity":
        assert diagram.prob[0, -1] == 1.0  # beta = 0.3 clusters well before t = 12


def test_clustered_configurations_stay_clustered_under_layers_with_V_identity(getkey):
    """The lemma behind early stopping: with V = I (any Q, K) the smallest inner product of a
    configuration whose inner products are all >= 0 never decreases along the layers."""
    center = af.sphere.uniform(getkey(), 1, 5)
    x = af.sphere.normalize(center + 0.02 * jax.random.normal(getkey(), (7, 5)))
    q, k = jax.random.normal(getkey(), (2, 5, 5)) * 3
    for field in (af.SA(8.0, q, k), af.USA(3.0, q, k), af.SA(0.0)):
        y, smallest = x, jnp.min(x @ x.T)
        for layer in range(200):
            y = field.layer(layer * 0.1, y, 0.1)
            now = jnp.min(y @ y.T)
            assert now >= smallest - 1e-15
            smallest = now
    # Not so with a repulsive V: the lemma needs nonnegative weights on the tokens.
    y = x
    for layer in range(20):
        y = af.SA(1.0, V=-jnp.eye(5)).layer(layer * 0.1, y, 0.1)
    assert jnp.min(y @ y.T) < jnp.min(x @ x.T)


def test_span_coordinates_keep_every_inner_product(getkey):
    x = af.sphere.uniform(getkey(), 6, 40)
    y = span_coordinates(x)
    assert y.shape == (6, 6)
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=1e-14)


def test_realizations_drawn_once_give_the_same_diagram(getkey):
    """For d > n the study draws every realization's reduced tokens once, for all betas
    (`span_realizations`), unless they would take more than a quarter of `memory`; then each
    item draws its own. Both give the same diagram, to the last bit."""
    key = getkey()
    tokens = span_realizations(key, samples=40, n=4, d=9, dtype="float64")
    x0 = phase_diagram_sample(key, 37, n=4, d=9)[0]
    np.testing.assert_allclose(tokens[37] @ tokens[37].T, x0 @ x0.T, atol=1e-14)
    options = dict(key=key, n=4, d=9, betas=[0.5, 4.0], ts=np.arange(11) * 1.0, samples=40)
    drawn = af.phase_diagram(**options, progress=False)
    per_item = af.phase_diagram(**options, memory=16_000, progress=False)  # 40 * 16 * 8 > 4000
    np.testing.assert_array_equal(drawn.prob, per_item.prob)
    assert 0 < drawn.prob[0, -1] and drawn.prob[0, 0] < drawn.prob[0, -1]


def test_random_weight_ensembles(getkey):
    key, d = getkey(), 64
    q, k, v = random_weights(key, d, "ginibre_psd")
    assert k is None and q.shape == v.shape == (d, d)
    assert np.all(np.linalg.eigvalsh(np.asarray(v)) > -1e-10)  # PSD
    np.testing.assert_allclose(np.mean(np.asarray(q) ** 2), 1.0, rtol=0.1)  # G1 G2 / sqrt(d)
    q, _, v = random_weights(key, d, "goe_qk")
    np.testing.assert_array_equal(q, q.T)  # GOE is symmetric
    np.testing.assert_allclose(v, q.T / np.sqrt(d + 1), rtol=1e-15)  # V = Q^T K / sqrt(d + 1)
    off = np.asarray(q)[~np.eye(d, dtype=bool)]
    np.testing.assert_allclose(np.var(off), 1.0, rtol=0.1)
    assert random_weights(key, d, "identity") == (None, None, None)
    with pytest.raises(ValueError, match="weights must be one of"):
        random_weights(key, d, "gue_psd")


def test_beta_zero_on_the_circle_every_sample_clusters():
    """GLPR Theorem 4.1 at beta = 0, d = 2: almost every initial condition clusters."""
    diagram = af.phase_diagram(
        key=jax.random.key(8),
        n=8,
        d=2,
        betas=[0.0],
        ts=np.arange(0, 501, 50) * 0.1,
        samples=64,
        progress=False,
    )
    assert diagram.prob[0, 0] < 0.05
    assert diagram.prob[0, -1] == 1.0


def test_high_dimension_follows_gamma():
    """GLPR Theorem 6.9: in high dimension the boundary P = 1/2 sits on the curve Gamma."""
    betas, ts = [0.5, 2.0, 4.0], np.arange(0, 151) * 0.1
    diagram = af.phase_diagram(
        key=jax.random.key(9), n=16, d=1024, betas=betas, ts=ts, samples=16, progress=False
    )
    crossing = ts[np.argmax(diagram.prob >= 0.5, axis=1)]
    np.testing.assert_allclose(crossing, diagram.gamma(), rtol=0.1)


def test_ode_solver_phase_diagram_is_close_to_layers():
    common = dict(n=6, d=3, betas=[1.0], ts=np.arange(0, 121, 20) * 0.1, samples=8, delta=0.05)
    layers = af.phase_diagram(
        key=jax.random.key(10), **common, solver=af.Layers(0.01), progress=False
    )
    ode = af.phase_diagram(key=jax.random.key(10), **common, solver="tsit5", progress=False)
    np.testing.assert_allclose(ode.prob, layers.prob, atol=0.05)


def test_metastability_on_the_circle():
    """GLPR Fig. 4: two clusters at beta = 4, three at beta = 9, mostly; energy never drops."""
    study = af.studies.metastability(key=jax.random.key(0), samples=32, progress=False)
    assert study.clusters.shape == study.energy.shape == (2, 32, 301)
    modes = [np.bincount(study.clusters[b, :, -1]).argmax() for b in range(2)]
    assert modes == [2, 3]
    assert np.all(np.diff(study.energy, axis=-1) >= -1e-12)
    assert np.all(study.clusters[:, :, 0] >= 20) and np.all(study.clusters[:, :, -1] <= 5)
    assert study.xs.shape == (2, 301, 32, 2)


def test_key_is_keyword_only_and_the_positional_key_is_deprecated():
    common = dict(n=4, d=3, betas=[1.0], ts=np.arange(0, 4) * 0.1, samples=2, progress=False)
    new = af.phase_diagram(key=jax.random.key(5), **common)
    with pytest.warns(DeprecationWarning, match=r"phase_diagram\(key=key, \.\.\.\)"):
        old = af.phase_diagram(jax.random.key(5), **common)
    np.testing.assert_array_equal(old.prob, new.prob)
    with pytest.raises(TypeError, match="takes only keyword arguments"):
        af.phase_diagram(jax.random.key(5), 4, **common)


def test_results_are_pytrees_with_static_configuration():
    common = dict(n=4, d=3, betas=[1.0, 2.0], ts=np.arange(0, 4) * 0.1, samples=2)
    diagram = af.phase_diagram(key=jax.random.key(5), **common, progress=False)
    shapes = jax.tree.map(np.shape, diagram)
    assert (shapes.prob, shapes.status, shapes.betas) == ((2, 4), (2, 2), (2,))
    assert shapes.config == diagram.config  # static: not a leaf
    assert diagram.failed.shape == (0, 2)


def test_summaries_read_the_results():
    """`summary()` states what the arrays say: the first time `prob >= 1/2` (beside Gamma for
    SA with identity weights), and the shares of cluster counts at the last save time."""
    common = dict(n=4, d=3, betas=[0.5, 1.0, 2.0, 4.0], ts=np.arange(0, 31) * 0.1, samples=4)
    diagram = af.phase_diagram(key=jax.random.key(5), **common, progress=False)
    lines = diagram.summary()
    assert diagram.has_gamma and len(lines) == 4
    for line, b in zip(lines, range(4), strict=True):
        above = np.nonzero(diagram.prob[b] >= 0.5)[0]
        expected = f"at t = {diagram.ts[above[0]]:g}" if above.size else "not by t = 3"
        assert f"beta = {diagram.betas[b]:.3g}: P >= 1/2 {expected} (Gamma: t = " in line
    study = af.studies.metastability(
        key=jax.random.key(5),
        n=6,
        betas=[4.0],
        ts=np.arange(0, 11) * 0.1,
        samples=5,
        progress=False,
    )
    (line,) = study.summary()
    shares = [int(s.split(": ")[1].rstrip("%")) for s in line.split("t = 1: ")[1].split(", ")]
    counts = np.unique(study.clusters[0, :, -1], return_counts=True)[1]
    assert shares == [round(100 * c / 5) for c in counts]


def test_labelled_results_round_trip_through_netcdf(tmp_path, capsys):
    """`.to_xarray()` names every dimension, keeps the configuration, and a netCDF file of it
    reads back equal; `--out NAME.nc` writes one with the command's configuration."""
    xarray = pytest.importorskip("xarray")
    import json

    from clitools import run_cli

    common = dict(n=4, d=3, betas=[1.0, 3.0], ts=np.arange(0, 4) * 0.1, samples=3)
    key = jax.random.key(5)
    results = [
        af.phase_diagram(key=key, **common, progress=False),
        af.studies.metastability(key=key, **common | {"d": 2}, progress=False),
        af.studies.ftle_diagram(
            key=key, n=4, d=3, betas=[1.0, 3.0], t1=2.0, samples=3, progress=False
        ),
    ]
    for result in results:
        dataset = result.to_xarray()
        assert json.loads(dataset.attrs["config"]) == json.loads(json.dumps(result.config))
        assert dataset.attrs["attnflow_version"] == af.__version__
        np.testing.assert_array_equal(dataset["beta"], result.betas)
        np.testing.assert_array_equal(dataset["status"].transpose("beta", "sample"), result.status)
        path = tmp_path / f"{dataset.attrs['study']}.nc"
        dataset.to_netcdf(path)
        with xarray.open_dataset(path) as back:
            xarray.testing.assert_identical(back.load(), dataset)
    out = tmp_path / "pd.nc"
    argv = ["phase-diagram", "--n", "4", "--d", "3", "--num-betas", "2", "--samples", "2"]
    status, io = run_cli(
        [*argv, "--t1", "1", "--saves", "3", "--no-plot", "--out", str(out)], capsys
    )
    assert status == 0, io.err
    with xarray.open_dataset(out) as back:
        assert back["prob"].dims == ("beta", "t") and back["prob"].shape == (2, 3)
        assert json.loads(back.attrs["config"])["n"] == 4
