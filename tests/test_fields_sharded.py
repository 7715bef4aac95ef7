"""Tokens sharded across 4 (virtual CPU) devices against one device.

The device count is fixed when JAX starts, so the checks run in a fresh process with
`XLA_FLAGS=--xla_force_host_platform_device_count=4`.
"""

import os
import subprocess
import sys

import jax
import pytest

from attnflow.fields import Hardmax, Sharded, Softmax

SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import attnflow as af
from attnflow import sphere
from attnflow.fields import PostLN, Sharded, Softmax, Unnormalized, MultiHead

assert jax.device_count() == 4, jax.devices()
for dtype, tol in ((jnp.float64, 1e-12), (jnp.float32, 1e-5)):
    x = sphere.uniform(jax.random.key(0), 400, 3, dtype=dtype)
    Q, K, V = (jax.random.normal(k, (3, 3), dtype) for k in jax.random.split(jax.random.key(1), 3))
    beta = jnp.asarray(2.0, dtype)
    for make in (
        lambda block: Softmax(beta, block=block),
        lambda block: Unnormalized(beta, causal=True, block=block),
        lambda block: Softmax(beta, Q, K, V, causal=True, block=block),
    ):
        one = PostLN(make(None))  # one device, the dense matrix
        sharded = Sharded(make("auto"), block=32)
        many = PostLN(sharded)
        xs = sharded.put(x)
        v = many(0.0, xs)
        assert len(v.sharding.device_set) == 4, v.sharding  # the output stays split
        np.testing.assert_allclose(v, one(0.0, x), atol=tol)
        loss = lambda f: (lambda x: jnp.sum(f(0.0, x) ** 2))
        np.testing.assert_allclose(jax.grad(loss(many))(xs), jax.grad(loss(one))(x), atol=50 * tol)
        t = jax.random.normal(jax.random.key(2), x.shape, dtype)
        np.testing.assert_allclose(
            jax.jvp(lambda x: many(0.0, x), (xs,), (t,))[1],
            jax.jvp(lambda x: one(0.0, x), (x,), (t,))[1],
            atol=50 * tol,
        )
    # derivatives with respect to the weights, through the gather and the blocks
    def weight_loss(wrap):
        return lambda beta, Q: jnp.sum(PostLN(wrap(Softmax(beta, Q, causal=True)))(0.0, x) ** 2)

    sharded_grads = jax.grad(weight_loss(lambda a: Sharded(a, block=32)), (0, 1))(beta, Q)
    for a, b in zip(sharded_grads, jax.grad(weight_loss(lambda a: a), (0, 1))(beta, Q)):
        np.testing.assert_allclose(a, b, rtol=50 * tol, atol=50 * tol)
    heads = MultiHead([Sharded(Softmax(beta, Q, K, V)), Sharded(Unnormalized(beta))])
    both = MultiHead([Softmax(beta, Q, K, V), Unnormalized(beta)])
    np.testing.assert_allclose(PostLN(heads)(0.0, x), PostLN(both)(0.0, x), atol=tol)
    ts = jnp.linspace(0.0, 1.0, 3, dtype=dtype)
    for solver in ("tsit5", af.Layers(0.1)):
        a = af.simulate(PostLN(Sharded(Softmax(beta))), x, ts, solver=solver).xs
        b = af.simulate(af.SA(beta), x, ts, solver=solver).xs
        np.testing.assert_allclose(a, b, atol=10 * tol)
try:
    Sharded(Softmax(1.0))(0.0, jnp.ones((6, 3)) / 3**0.5)
except ValueError as e:
    assert "multiple of the 4 devices" in str(e), e
else:
    raise AssertionError("6 tokens on 4 devices were accepted")
print("ok")
"""


def test_sharded_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_sharded_on_one_device_equals_unsharded():
    x = jax.random.normal(jax.random.key(0), (64, 3))
    x = x / jax.numpy.linalg.norm(x, axis=1, keepdims=True)
    sharded = Sharded(Softmax(1.5), devices=jax.devices()[:1], block=16)
    assert abs(sharded(0.0, x) - Softmax(1.5, block=None)(0.0, x)).max() < 1e-12


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Sharded(Hardmax()), "Softmax or Unnormalized"),
        (lambda: Sharded(Softmax(1.0), devices=[]), "at least one device"),
        (
            lambda: Sharded(Softmax(1.0), devices="cpu"),
            r"devices must be None or a sequence of jax.Device objects; got the string 'cpu' "
            r"\(for the devices of a platform, pass jax.devices\('cpu'\)\)",
        ),
        (
            lambda: Sharded(Softmax(1.0), devices=jax.devices()[0]),
            r"devices must be None or a sequence of jax.Device objects; got .*one device",
        ),
        (
            lambda: Sharded(Softmax(1.0), devices=[jax.devices()[0], 0]),
            "devices must be None or a sequence of jax.Device objects; got 0 among them",
        ),
        (lambda: Sharded(Softmax(1.0), block=0), "block must be a positive int"),
    ],
)
def test_sharded_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
