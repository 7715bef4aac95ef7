"""The worked searches of `attnflow.optimize` (and `attnflow search`), each answer checked by a
sharp statistic computed here, independently of the search: cluster counts of fresh
simulations, a brute-force scan over beta, pairwise cosines, the true generating weights."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow.cli import main

# A small circle problem whose sharp cluster count at T is monotone in beta over [0.5, 5]
# (checked below by the scan): 12 tokens, T = 20, h = 0.25, two initial states.
H = 0.25  # the layer step
SMALL = dict(k=2, n=12, d=2, t1=20.0, solver=af.Layers(H), samples=2, init=5.0, margin=0.5)
SMALL["steps"] = 60


def _counts(field, x0s, t1, h, delta=1e-3):
    """Sharp cluster counts at t1, one fresh public `simulate` per initial state."""
    ts = np.array([0.0, t1])
    return np.array(
        [
            int(
                af.analysis.count_clusters(
                    af.simulate(field, x0, ts, solver=af.Layers(h)).xs[-1], delta
                )
            )
            for x0 in x0s
        ]
    )


@pytest.fixture(scope="module")
def constant():
    return af.optimize.smallest_beta(key=jax.random.key(0), progress=False, **SMALL)


def test_smallest_beta_is_the_brute_force_smallest(constant):
    result, k = constant, SMALL["k"]
    beta = float(result.beta)
    assert result.beta.shape == () and result.x0.shape == (2, 12, 2)
    # The answer keeps k clusters on every initial state (fresh simulations, sharp count) ...
    counts = _counts(af.SA(beta), result.x0, SMALL["t1"], H)
    assert np.all(counts >= k)
    np.testing.assert_array_equal(result.clusters, counts)
    assert result.holds
    # ... and 0.9 beta does not: the answer is tight.
    below = _counts(af.SA(0.9 * beta), result.x0, SMALL["t1"], H)
    assert np.any(below < k) and result.tight
    np.testing.assert_array_equal(result.clusters_below, below)
    # A scan over beta in steps of 0.05: the smallest beta from which on the constraint holds.
    grid = np.arange(0.5, 5.0, 0.05)
    holds = np.array([np.all(_counts(af.SA(b), result.x0, SMALL["t1"], H) >= k) for b in grid])
    first = int(np.argmax(holds))
    assert holds[first:].all() and not holds[:first].any()  # monotone on this problem
    assert grid[first] - 0.05 <= beta <= grid[first] + 0.1
    # The loss history starts at the initial beta and the best loss is the reported one.
    assert float(result.search.history[0]) >= SMALL["init"]
    assert float(result.search.loss) == pytest.approx(
        float(result.search.history[result.search.best])
    )


def test_beta_schedule_holds_and_does_no_worse(constant):
    result = af.optimize.smallest_beta(
        key=jax.random.key(0), schedule=True, progress=False, **SMALL
    )
    layers = round(SMALL["t1"] / H)
    assert result.beta.shape == (layers,) and bool(jnp.all(result.beta > 0))
    # Verified on a field built here from the public constructors, one Softmax per layer.
    field = af.PostLN(af.PerLayer([af.Softmax(b) for b in result.beta], H))
    counts = _counts(field, result.x0, SMALL["t1"], H)
    assert np.all(counts >= SMALL["k"]) and result.holds
    np.testing.assert_array_equal(result.clusters, counts)
    # One beta per layer can do what one beta for all does, at no higher mean.
    assert float(jnp.mean(result.beta)) <= 1.01 * float(constant.beta)


def test_smallest_beta_float32():
    result = af.optimize.smallest_beta(
        key=jax.random.key(0), progress=False, dtype=jnp.float32, **SMALL
    )
    assert result.beta.dtype == jnp.float32 and result.x0.dtype == jnp.float32
    counts = _counts(af.SA(result.beta), result.x0, SMALL["t1"], H)
    np.testing.assert_array_equal(result.clusters, counts)
    assert result.holds


def _caps(key, n=8, d=3, spread=0.3):
    """Two groups of tokens around the ends of a random axis (+-u)."""
    k1, k2 = jax.random.split(key)
    u = af.sphere.uniform(k1, 1, d)[0]
    labels = np.arange(n) % 2
    x0 = af.sphere.normalize(
        jnp.where(labels[:, None] == 0, u, -u) + spread * jax.random.normal(k2, (n, d))
    )
    return x0, labels


def _same_partition(x, labels, delta=1e-3):
    """Whether the pairs within delta (cosine >= 1 - delta) are exactly the pairs in a group."""
    close = np.asarray(x @ x.T) >= 1 - delta
    return bool(np.all(close == (labels[:, None] == labels[None, :])))


def test_value_for_groups_reaches_reachable_groups():
    x0, labels = _caps(jax.random.key(3))
    result = af.optimize.value_for_groups(x0, labels + 5, steps=150, progress=False)
    V = np.asarray(result.V)
    np.testing.assert_allclose(V, V.T)  # symmetric by default
    xs = af.simulate(af.SA(1.0, None, None, result.V), x0, np.array([0.0, 10.0])).xs[-1]
    assert _same_partition(xs, labels)
    assert int(af.analysis.count_clusters(xs)) == 2
    assert result.matches and int(result.count) == 2
    np.testing.assert_array_equal(result.clusters, labels)  # numbered by first token
    np.testing.assert_array_equal(result.labels, labels)  # relabeled from 0
    assert float(result.same_min) >= 1 - 1e-3 and float(result.apart_max) < 0


def test_value_for_groups_reports_unreached_groups():
    """Alternating labels around the circle: no V found in a few steps reaches them, and the
    result says so, in agreement with the pairwise check here."""
    x0 = af.sphere.from_angles(jnp.linspace(0, 2 * jnp.pi, 8, endpoint=False))
    labels = np.arange(8) % 2
    result = af.optimize.value_for_groups(x0, labels, steps=10, progress=False)
    xs = af.simulate(af.SA(1.0, None, None, result.V), x0, np.array([0.0, 10.0])).xs[-1]
    assert result.matches == _same_partition(xs, labels)
    assert not result.matches


def test_recover_parameters_recovers_the_identifiable_weights():
    result = af.optimize.recover_parameters(
        key=jax.random.key(0), n=5, d=2, m=1, t1=3.0, saves=7, progress=False
    )
    attention = result.true.attention
    assert attention.Q.shape == (1, 2) and attention.K.shape == (1, 2)  # non-square
    # The identifiable combinations, computed here from the true weights.
    A = attention.beta * attention.Q.T @ attention.K
    A_fit, V_fit = af.optimize.identifiable(result.fitted)
    assert float(jnp.linalg.norm(A_fit - A) / jnp.linalg.norm(A)) < 1e-6
    assert float(jnp.linalg.norm(V_fit - attention.V) / jnp.linalg.norm(attention.V)) < 1e-6
    assert float(result.logits_error) < 1e-6 and float(result.value_error) < 1e-6
    # The recording is the true flow's, and the fit predicts held-out tokens.
    ts = np.linspace(0.0, 3.0, 7)
    np.testing.assert_allclose(
        result.xs, af.simulate(result.true, result.xs[0], ts, rtol=1e-10, atol=1e-10).xs, atol=1e-9
    )
    held = af.simulate(result.fitted, result.held_out, ts, rtol=1e-10, atol=1e-10).xs
    truth = af.simulate(result.true, result.held_out, ts, rtol=1e-10, atol=1e-10).xs
    assert float(jnp.max(jnp.abs(held - truth))) < 1e-6
    assert float(result.prediction_error) < 1e-6
    assert not np.allclose(result.held_out, result.xs[0])  # held out: other tokens


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=1), "k must be an integer >= 2"),
        (dict(k=13, n=12), "k must be at most n = 12"),
        (dict(t1=20.1, solver=af.Layers(0.25)), "t1 must be a whole number of layers of h = 0.25"),
        (dict(margin=0.3, solver=af.Layers(0.25)), "margin must be a whole number of layers"),
        (dict(below=1.0), r"below must be in \(0, 1\)"),
        (dict(d=1), "d must be an integer >= 2"),
        (dict(init=-1.0), "init must be a positive number"),
        (dict(schedule="yes"), "schedule must be True or False"),
    ],
)
def test_smallest_beta_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        af.optimize.smallest_beta(key=jax.random.key(0), progress=False, **kwargs)


def test_value_for_groups_bad_input():
    x0, labels = _caps(jax.random.key(0))
    with pytest.raises(ValueError, match="labels must be 8 integers"):
        af.optimize.value_for_groups(x0, labels[:5])
    with pytest.raises(ValueError, match="labels must be 8 integers.*got dtype float"):
        af.optimize.value_for_groups(x0, labels.astype(float))
    with pytest.raises(ValueError, match="x0 must lie on the unit sphere"):
        af.optimize.value_for_groups(2 * x0, labels)
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, d\)"):
        af.optimize.value_for_groups(x0[0], labels)
    with pytest.raises(ValueError, match=r"init must have shape \(3, 3\)"):
        af.optimize.value_for_groups(x0, labels, init=jnp.eye(2))
    with pytest.raises(ValueError, match="apart must be below 1"):
        af.optimize.value_for_groups(x0, labels, apart=1.0)
    with pytest.raises(ValueError, match="beta must be a number in"):
        af.optimize.value_for_groups(x0, labels, beta=-1.0)


def test_recover_parameters_bad_input():
    with pytest.raises(ValueError, match="n must be an integer >= 4"):
        af.optimize.recover_parameters(key=jax.random.key(0), n=3, d=3)
    with pytest.raises(ValueError, match="saves must be an integer >= 2"):
        af.optimize.recover_parameters(key=jax.random.key(0), saves=1)


def test_cli_smallest_beta_writes_data_and_figure(tmp_path, capsys):
    out, plot = tmp_path / "sb.npz", tmp_path / "sb.png"
    argv = ["search", "smallest-beta", "--n", "12", "--t1", "20", "--h", "0.25"]
    argv += ["--samples", "2", "--init", "5", "--margin", "0.5", "--steps", "60"]
    assert main([*argv, "--out", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    data = np.load(out)
    config = json.loads(str(data["config"]))
    assert config["name"] == "smallest-beta" and config["version"] == af.__version__
    # The CLI's run is the library's: same key, same answer; the printed check is the data's.
    beta = float(data["beta"])
    counts = _counts(af.SA(beta), data["x0"], 20.0, 0.25)
    np.testing.assert_array_equal(data["clusters"], counts)
    assert f"beta = {beta:.4g}" in printed and "holds" in printed
    assert data["loss"].ndim == 1 and data["loss"].size >= 2
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_recover_no_plot(tmp_path, capsys):
    out = tmp_path / "recover.npz"
    argv = ["search", "recover", "--n", "5", "--d", "2", "--m", "1", "--t1", "3", "--saves", "7"]
    assert main([*argv, "--out", str(out), "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert "relative errors" in printed and f"wrote {out}" in printed
    data = np.load(out)
    assert not (tmp_path / "recover.png").exists()
    assert data["A"].shape == (2, 2) and data["V_fit"].shape == (2, 2)
    np.testing.assert_allclose(data["A_fit"], data["A"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(data["held_fitted"], data["held_true"], atol=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["value-groups", "--groups", "7"], "--groups must be at most 2 d = 6"),
        (["smallest-beta", "--k", "1"], "k must be an integer >= 2"),
        (["smallest-beta", "--t1", "1.05"], "t1 must be a whole number of layers"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "x.npz"
    assert main(["search", *argv, "--out", str(out), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("attnflow search: error:")
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_cli_search_needs_a_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["search"])
    assert exit_.value.code == 2
    assert "NAME" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smallest-beta", "beta-schedule", "value-groups", "recover"])
def test_cli_defaults(tmp_path, capsys, name):
    """The default runs (GLPR's circle, n = 32, T = 30), about 10-25 s each on 2 cores."""
    out, plot = tmp_path / "a.npz", tmp_path / "a.png"
    assert main(["search", name, "--out", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "FAILS" not in printed and "NOT the groups" not in printed
    assert plot.exists() and out.exists()
