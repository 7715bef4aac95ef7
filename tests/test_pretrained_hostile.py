"""Hostile checkpoint folders: `attnflow.pretrained.load` (and `pretrained-clusters --model`)
refuse each with a `ValueError` naming the file, before reading what they should not: a folder
per case, made from a tiny random checkpoint."""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

import attnflow.pretrained as ap  # noqa: E402
from attnflow.cli import main  # noqa: E402
from attnflow.pretrained._checkpoint import JSON_LIMIT, TOKENIZER_LIMIT  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ap.write_random_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture
def copy(tiny, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny, folder)
    return folder


def _config(folder, **changes):
    path = folder / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_an_oversized_config_is_refused_before_it_is_read(copy):
    with open(copy / "config.json", "r+b") as file:  # sparse: no memory, no disk
        file.truncate(JSON_LIMIT + 1)
    with pytest.raises(ValueError, match=r"config\.json: 1,048,577 bytes, more than the"):
        ap.load(copy)


def test_an_oversized_tokenizer_is_refused_before_it_is_read(copy):
    with open(copy / "tokenizer.json", "r+b") as file:
        file.truncate(TOKENIZER_LIMIT + 1)
    with pytest.raises(ValueError, match=r"tokenizer\.json: 67,108,865 bytes, more than the"):
        ap.load(copy)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"hidden_size": "32"}, "hidden_size must be a positive integer; got '32'"),
        ({"num_hidden_layers": 2**40}, "num_hidden_layers must be at most 2147483647"),
        ({"vocab_size": -1}, "vocab_size must be a positive integer; got -1"),
        ({"layer_norm_eps": "tiny"}, "layer_norm_eps must be a number in (0, 1)"),
        ({"max_position_embeddings": 1.5}, "max_position_embeddings must be a positive integer"),
    ],
)
def test_config_values_of_the_wrong_type_or_range(copy, changes, message):
    _config(copy, **changes)
    with pytest.raises(ValueError, match=r"config\.json: ") as error:
        ap.load(copy)
    assert message in str(error.value)


def test_sizes_that_disagree_with_the_tensors_are_refused_from_the_header(copy, monkeypatch):
    """The config promises a hidden size of 2**20: the shapes are compared from the file's
    header, and no tensor is read."""
    import safetensors

    read = []
    _config(copy, hidden_size=2**20, intermediate_size=2**20)

    opened = safetensors.safe_open

    class Watched:
        def __init__(self, *args, **kwargs):
            self.file = opened(*args, **kwargs)

        def __enter__(self):
            self.inner = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_slice(self, name):
            return self.inner.get_slice(name)

        def get_tensor(self, name):
            read.append(name)
            return self.inner.get_tensor(name)

    monkeypatch.setattr(safetensors, "safe_open", Watched)
    with pytest.raises(ValueError, match=r"model\.safetensors: does not match the config: "):
        ap.load(copy)
    assert read == []


def test_integer_tensors_are_refused(copy):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(copy / "model.safetensors")
    name = "embeddings.word_embeddings.weight"
    tensors[name] = tensors[name].astype(np.int32)
    save_file(tensors, copy / "model.safetensors")
    with pytest.raises(ValueError, match=r"tensors must hold floating-point numbers .*word_embed"):
        ap.load(copy)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_a_link_out_of_the_folder_is_refused(copy, tmp_path, name):
    outside = tmp_path / f"outside-{name}"
    shutil.copy(copy / name, outside)
    (copy / name).unlink()
    os.symlink(outside, copy / name)
    with pytest.raises(ValueError, match=rf"{name}: leads outside the checkpoint folder"):
        ap.load(copy)


def test_a_tokenizer_that_panics_is_a_bad_tokenizer(copy, tmp_path, capfd):
    """A pre-tokenizer pattern that backtracks without end: the regex engine gives up and the
    tokenizer's Rust code panics; `encode` and the command line report a bad tokenizer in one
    line, and the panic's own message does not reach the terminal."""
    path = copy / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    tokenizer["pre_tokenizer"] = {
        "type": "Split",
        "pattern": {"Regex": "(a+)+$"},
        "behavior": "Isolated",
        "invert": False,
    }
    path.write_text(json.dumps(tokenizer))
    model = ap.load(copy)
    text = "a" * 40 + "b"
    with pytest.raises(ValueError, match="failed on this text .a bad tokenizer.json"):
        ap.encode(model, text)
    capfd.readouterr()
    out = tmp_path / "c.npz"
    status = main(["pretrained-clusters", "--model", str(copy), "--text", text, "--out", str(out)])
    err = capfd.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "panicked" not in err and "a bad tokenizer.json" in err
    assert not out.exists()
