"""The integration core: `Layers` as a solver object, `integrate` with traced tolerances, and
the old spellings (`solver="layers", dt0=h`, the studies' `h=`) kept for a release with a
`DeprecationWarning`, giving bit for bit what the new spelling gives."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow import integrate as ig
from attnflow.stability import lyapunov_spectrum

X0 = af.sphere.uniform(jax.random.key(0), 5, 3, dtype=jnp.float64)
TS = jnp.arange(0, 11, 5, dtype=jnp.float64) * 0.1


def test_layers_is_the_discrete_transformer():
    """`Layers(h)` steps `PostLN.layer`: ten layers by hand give the saved state at t = 1."""
    field = af.SA(1.5)
    x = X0
    for k in range(10):
        x = field.layer(k * 0.1, x, 0.1)
    trajectory = af.simulate(field, X0, TS, solver=af.Layers(0.1))
    np.testing.assert_allclose(trajectory.xs[-1], x, rtol=0, atol=1e-15)
    assert repr(af.Layers(0.1)) == "Layers(0.1)"
    assert ig.solver_config(af.Layers(0.1)) == {"solver": "layers", "h": 0.1}
    assert ig.solver_config(diffrax.Tsit5()) == {"solver": "tsit5", "h": None}


@pytest.mark.parametrize("h", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_layers_refuses_a_bad_step(h):
    with pytest.raises(ValueError, match=r"h must be a positive number \(the layer step\)"):
        af.Layers(h)


def test_old_simulate_spelling_warns_and_gives_the_same_bits():
    new = af.simulate(af.SA(1.5), X0, TS, solver=af.Layers(0.1)).xs
    with pytest.warns(DeprecationWarning, match=r"solver='layers'.*attnflow\.Layers\(h\)"):
        old = af.simulate(af.SA(1.5), X0, TS, solver="layers", dt0=0.1).xs
    np.testing.assert_array_equal(old, new)
    with pytest.raises(ValueError, match="dt0 does not apply to Layers"):
        af.simulate(af.SA(1.5), X0, TS, solver=af.Layers(0.1), dt0=0.1)


def test_old_lyapunov_spelling_warns_and_gives_the_same_bits():
    new = lyapunov_spectrum(
        af.SA(1.0), X0, 1.0, solver=af.Layers(0.1), key=jax.random.PRNGKey(1980)
    ).exponents
    with pytest.warns(DeprecationWarning, match=r"attnflow\.Layers\(h\)"):
        old = lyapunov_spectrum(
            af.SA(1.0), X0, 1.0, solver="layers", dt0=0.1, key=jax.random.PRNGKey(1980)
        ).exponents
    np.testing.assert_array_equal(old, new)


def test_old_study_spelling_warns_and_gives_the_same_bits():
    common = dict(n=4, d=3, betas=[1.0], ts=np.arange(0, 6) * 0.2, samples=2, progress=False)
    key = jax.random.key(3)
    new = af.phase_diagram(key=key, **common, solver=af.Layers(0.2))
    with pytest.warns(DeprecationWarning, match=r"h=.*attnflow\.Layers\(h\)") as caught:
        old = af.phase_diagram(key=key, **common, h=0.2)
    # at the caller's line, not inside attnflow: Python's default filters then show it
    assert {w.filename for w in caught} == {__file__}
    np.testing.assert_array_equal(old.prob, new.prob)
    assert old.config == new.config
    assert (new.config["solver"], new.config["h"]) == ("layers", 0.2)  # as stores recorded it
    with pytest.warns(DeprecationWarning) as caught:
        named = af.phase_diagram(key=key, **common, solver="layers", h=0.2)
    said = " ".join(str(w.message) for w in caught)
    assert {w.filename for w in caught} == {__file__}
    assert "solver='layers'" in said and "h=" in said
    np.testing.assert_array_equal(named.prob, new.prob)
    with pytest.raises(ValueError, match="metastability runs the discrete layers"):
        af.studies.metastability(key=key, n=4, samples=1, solver="tsit5", progress=False)


def test_old_smallest_beta_spelling_warns_and_gives_the_same_bits():
    small = dict(key=jax.random.key(0), k=2, n=6, t1=1.0, samples=1, margin=0.0, steps=2)
    new = af.optimize.smallest_beta(solver=af.Layers(0.25), progress=False, **small)
    with pytest.warns(DeprecationWarning, match=r"smallest_beta\(h=.*attnflow\.Layers\(h\)"):
        old = af.optimize.smallest_beta(h=0.25, progress=False, **small)
    np.testing.assert_array_equal(old.beta, new.beta)
    np.testing.assert_array_equal(old.xs, new.xs)
    assert old.h == new.h == 0.25
    with pytest.raises(ValueError, match="solver must be attnflow.Layers"):
        af.optimize.smallest_beta(solver=diffrax.Tsit5(), progress=False, **small)


def test_integrate_takes_traced_tolerances_without_recompiling():
    traces = []

    @jax.jit
    def run(rtol):
        traces.append(rtol)
        return ig.integrate(af.SA(1.0), X0, TS, diffrax.Tsit5(), rtol=rtol, atol=1e-10).xs

    loose, tight = run(1e-3), run(1e-10)
    assert len(traces) == 1
    reference = af.simulate(af.SA(1.0), X0, TS, rtol=1e-10, atol=1e-10).xs
    np.testing.assert_allclose(tight, reference, rtol=0, atol=1e-12)
    assert 0 < np.abs(loose - reference).max() < 1e-2


def test_integrate_refuses_what_does_not_apply():
    with pytest.raises(ValueError, match="until applies to Layers only"):
        ig.integrate(af.SA(1.0), X0, TS, diffrax.Tsit5(), until=lambda s: True)
    with pytest.raises(ValueError, match="solver must be Layers"):
        ig.integrate(af.SA(1.0), X0, TS, "tsit5")
    with pytest.raises(ValueError, match=r"ts must be multiples of the layer step h = 0.3"):
        ig.integrate(af.SA(1.0), X0, TS, af.Layers(0.3))


def test_stepper_steps_one_interval_as_integrate_does():
    """`Stepper` from t = 0 to 1: ten layers of `Layers(0.1)` give `integrate`'s state, a Tsit5
    interval the ODE's state to the tolerances; a field without a layer map is refused."""
    field = af.SA(1.5)
    layers = ig.Stepper(af.Layers(0.1), layers=10)
    x, _ = layers(field, None, 0.0, 1.0, X0, 0.1)
    reference = ig.integrate(field, X0, TS, af.Layers(0.1)).xs[-1]
    np.testing.assert_allclose(x, reference, rtol=0, atol=1e-15)
    tol = jnp.asarray(1e-10)
    ode = ig.Stepper(diffrax.Tsit5(), rtol=tol, atol=tol)
    x, dt = ode(field, None, TS[0], TS[-1], X0, jnp.asarray(ode.first_dt(1.0)))
    reference = af.simulate(field, X0, TS, rtol=1e-10, atol=1e-10).xs[-1]
    np.testing.assert_allclose(x, reference, rtol=0, atol=1e-8)
    assert 0 < dt < 1  # the mean accepted step, the next interval's first
    with pytest.raises(ValueError, match="Layers needs a field with a discrete layer map"):
        layers(lambda t, y, args: y, None, 0.0, 1.0, X0, 0.1)


def test_until_stops_and_holds_the_statistic():
    """Once `until` holds at a save time the statistic is held; before that it is exact."""
    ts = jnp.arange(0, 31, 10, dtype=jnp.float64) * 0.1

    def save(t, x):
        return {"x": x}

    full = ig.integrate(af.SA(1.0), X0, ts, af.Layers(0.1), save=save)

    def moved(s):  # false at ts[0], true from the first save time on
        return jnp.any(s["x"] != X0)

    held = ig.integrate(af.SA(1.0), X0, ts, af.Layers(0.1), save=save, until=moved)
    np.testing.assert_array_equal(held.xs["x"][:2], full.xs["x"][:2])
    for k in (2, 3):
        np.testing.assert_array_equal(held.xs["x"][k], full.xs["x"][1])
    assert np.abs(full.xs["x"][3] - full.xs["x"][1]).max() > 1e-3  # holding is visible
