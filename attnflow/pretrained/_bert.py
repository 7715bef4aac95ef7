"""The BERT encoder (Devlin et al. 2019) in JAX/Equinox: embeddings, post-LN blocks of
multi-head self-attention and a GELU feed-forward, the attention mask for padding.

Conventions. Tokens are rows: a sequence is `x` of shape `(n, d)`. A dense layer stores
`weight` of shape `(out, in)` and `bias` `(out,)` and computes `y = x @ weight.T + bias`, as
PyTorch's `Linear` (so checkpoint tensors are stored as they are). The attention weights are
stored split per head (`BertSelfAttention`), the form an attnflow `MultiHead` field reads: the
output projection `W_O` of shape `(d, d)` acting on the concatenated heads of width `dh` is
stored as `output_weight[h] = W_O[:, h dh:(h + 1) dh]`.
"""

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._checks import check_value

if TYPE_CHECKING:
    from ._checkpoint import BertConfig


class Linear(eqx.Module):
    """A dense layer `y = x @ weight.T + bias` (PyTorch's `Linear` convention)."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        return x @ self.weight.T + self.bias


class LayerNorm(eqx.Module):
    """`y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias` over the last axis (biased
    variance, as PyTorch's `LayerNorm`)."""

    weight: Float[Array, " d"]
    bias: Float[Array, " d"]
    eps: float = eqx.field(static=True)

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.weight + self.bias


class BertEmbeddings(eqx.Module):
    """`x_i = LayerNorm(word[id_i] + position[i] + token_type[type_i])`."""

    word: Float[Array, "vocab d"]
    position: Float[Array, "positions d"]
    token_type: Float[Array, "types d"]
    norm: LayerNorm

    def __call__(self, input_ids: Int[Array, " n"], token_type_ids: Int[Array, " n"]):
        n = input_ids.shape[0]
        return self.norm(self.word[input_ids] + self.position[:n] + self.token_type[token_type_ids])


class BertSelfAttention(eqx.Module):
    """Multi-head scaled dot-product self-attention, weights split per head.

    With `H` heads of width `dh`, for head `h` and tokens `i, j`:
    `q_i = query_weight[h] @ x_i + query_bias[h]` (the same for `k`, `v`),
    `p_ij = softmax_j(q_i . k_j / sqrt(dh))` over the unmasked `j`, `o_i^h = sum_j p_ij v_j`,
    and the output `y_i = sum_h output_weight[h] @ o_i^h + output_bias` (shapes as annotated).
    """

    query_weight: Float[Array, "H dh d"]
    query_bias: Float[Array, "H dh"]
    key_weight: Float[Array, "H dh d"]
    key_bias: Float[Array, "H dh"]
    value_weight: Float[Array, "H dh d"]
    value_bias: Float[Array, "H dh"]
    output_weight: Float[Array, "H d dh"]
    output_bias: Float[Array, " d"]

    @property
    def num_heads(self) -> int:
        return self.query_weight.shape[0]

    @property
    def head_dim(self) -> int:
        return self.query_weight.shape[1]

    def __call__(self, x: Float[Array, "n d"], mask: Bool[Array, " n"]) -> Float[Array, "n d"]:
        q = jnp.einsum("hed,nd->hne", self.query_weight, x) + self.query_bias[:, None]
        k = jnp.einsum("hed,nd->hne", self.key_weight, x) + self.key_bias[:, None]
        v = jnp.einsum("hed,nd->hne", self.value_weight, x) + self.value_bias[:, None]
        logits = jnp.einsum("hie,hje->hij", q, k) / math.sqrt(self.head_dim)
        # Masked keys get the most negative finite logit: they vanish from the softmax (which
        # subtracts the row maximum) without an `inf - inf`; a fully masked row is uniform.
        logits = jnp.where(mask[None, None, :], logits, jnp.finfo(logits.dtype).min)
        p = jax.nn.softmax(logits, axis=-1)
        o = jnp.einsum("hij,hje->hie", p, v)
        return jnp.einsum("hde,hne->nd", self.output_weight, o) + self.output_bias


class BertLayer(eqx.Module):
    """One post-LN block: `y = LN_1(x + attention(x))`,
    `x' = LN_2(y + output(gelu(intermediate(y))))`, GELU in its exact form
    `gelu(u) = u Phi(u)` (HF's `"gelu"`)."""

    attention: BertSelfAttention
    attention_norm: LayerNorm
    intermediate: Linear
    output: Linear
    output_norm: LayerNorm

    def __call__(self, x: Float[Array, "n d"], mask: Bool[Array, " n"]) -> Float[Array, "n d"]:
        y = self.attention_norm(x + self.attention(x, mask))
        return self.output_norm(
            y + self.output(jax.nn.gelu(self.intermediate(y), approximate=False))
        )


class Bert(eqx.Module):
    """The BERT encoder: `embeddings`, then `layers` (a tuple of `BertLayer`).

    Weights are array leaves, sizes static: `jax.jit` compiles once per sequence length and a
    batch is a `jax.vmap` over `hidden_states`. Built by `attnflow.pretrained.load` from a
    checkpoint; the weight conventions are in this module's docstring.
    """

    embeddings: BertEmbeddings
    layers: tuple[BertLayer, ...]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.embeddings.word.shape[1]

    @property
    def num_heads(self) -> int:
        return self.layers[0].attention.num_heads

    def _check_sequence(self, input_ids, attention_mask, token_type_ids):
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 1 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(
                "input_ids must be a 1-D integer array (one sequence; vmap for a batch); "
                f"got shape {input_ids.shape} and dtype {input_ids.dtype}"
            )
        n = input_ids.shape[0]
        positions = self.embeddings.position.shape[0]
        if n > positions:
            raise ValueError(
                f"input_ids must have at most {positions} tokens (the model's "
                f"max_position_embeddings); got {n}"
            )
        attention_mask = jnp.asarray(attention_mask)
        if attention_mask.shape != (n,):
            raise ValueError(
                f"attention_mask must have the shape of input_ids ({n},); "
                f"got shape {attention_mask.shape}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        token_type_ids = jnp.asarray(token_type_ids)
        if token_type_ids.shape != (n,) or not jnp.issubdtype(token_type_ids.dtype, jnp.integer):
            raise ValueError(
                f"token_type_ids must be an integer array of the shape of input_ids ({n},); "
                f"got shape {token_type_ids.shape} and dtype {token_type_ids.dtype}"
            )
        vocab, types = self.embeddings.word.shape[0], self.embeddings.token_type.shape[0]
        input_ids = check_value(
            input_ids,
            jnp.any((input_ids < 0) | (input_ids >= vocab)),
            f"input_ids must lie in [0, {vocab}) (the vocabulary size)",
        )
        token_type_ids = check_value(
            token_type_ids,
            jnp.any((token_type_ids < 0) | (token_type_ids >= types)),
            f"token_type_ids must lie in [0, {types}) (the type vocabulary size)",
        )
        return input_ids, attention_mask.astype(bool), token_type_ids

    def attention(
        self, layer: int, x: Float[Array, "n d"], mask: Bool[Array, " n"]
    ) -> Float[Array, "n d"]:
        """The self-attention sublayer of layer `layer` (0-based) on the tokens `x` (the layer's
        input, hidden state `layer`), BEFORE the residual and the LayerNorm (`BertSelfAttention`).
        `mask` (n,) marks the real tokens; masked tokens are not attended to."""
        if not isinstance(layer, int | np.integer) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be an integer in [0, {self.num_layers}); got {layer!r}")
        x, mask = jnp.asarray(x), jnp.asarray(mask)
        if x.ndim != 2 or x.shape[1] != self.hidden_size or mask.shape != x.shape[:1]:
            raise ValueError(
                f"x must have shape (n, {self.hidden_size}) and mask (n,); got shapes "
                f"{x.shape} and {mask.shape}"
            )
        return self.layers[layer].attention(x, mask.astype(bool))

    def hidden_states(
        self,
        input_ids: Int[Array, " n"],
        attention_mask: Bool[Array, " n"],
        token_type_ids: Int[Array, " n"] | None = None,
    ) -> Float[Array, "L+1 n d"]:
        """The hidden states of one sequence: the embeddings, then the output of each layer.

        `attention_mask` (n,) is true (or 1) at the real tokens; the others (padding) are not
        attended to, so the hidden states of the real tokens do not depend on them.
        `token_type_ids` defaults to zeros. Returns shape `(L + 1, n, d)`. Jit-friendly; vmap
        over a batch.
        """
        input_ids, mask, token_type_ids = self._check_sequence(
            input_ids, attention_mask, token_type_ids
        )
        states = [self.embeddings(input_ids, token_type_ids)]
        for layer in self.layers:
            states.append(layer(states[-1], mask))
        return jnp.stack(states)


class Pretrained(eqx.Module):
    """A trained BERT checkpoint loaded by `attnflow.pretrained.load`: the encoder `model`, its
    `tokenizer` (a `tokenizers.Tokenizer`, set to truncate at `max_length` tokens, no padding),
    its `config` (a `BertConfig`), the folder `path` it was read from, and `max_length`, the
    longest sequence `encode` feeds the model (sentence-transformers' `max_seq_length`)."""

    model: Bert
    tokenizer: Any = eqx.field(static=True)
    config: "BertConfig" = eqx.field(static=True)
    path: str = eqx.field(static=True)
    max_length: int = eqx.field(static=True)


class Encoding(eqx.Module):
    """The result of `encode` for a batch of `B` texts padded to the longest, `n` tokens
    (special tokens included): token `ids` (B, n), `mask` (B, n) true at the real tokens,
    `hidden` (B, L + 1, n, d) the hidden states (embeddings, then each layer; rows of padding
    tokens are not meaningful), and `embedding` (B, d) the sentence embeddings."""

    ids: Int[Array, "B n"]
    mask: Bool[Array, "B n"]
    hidden: Float[Array, "B L+1 n d"]
    embedding: Float[Array, "B d"]


_PAD_MULTIPLE = 16  # padded lengths are rounded up to a multiple of this to limit recompiles


@eqx.filter_jit
def _encode_padded(model: Bert, ids, mask, token_type_ids):
    hidden = jax.vmap(model.hidden_states)(ids, mask, token_type_ids)
    weights = mask[:, :, None].astype(hidden.dtype)
    mean = jnp.sum(hidden[:, -1] * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    norm = jnp.linalg.norm(mean, axis=-1, keepdims=True)
    return hidden, mean / jnp.maximum(norm, 1e-12)


def check_text(text) -> str:
    """`text`, checked to be a string with a non-blank character (`ValueError` otherwise)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string; got {text!r:.80}")
    return text


def _as_texts(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    try:
        texts = list(texts)
    except TypeError:
        texts = None
    if not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError(
            f"texts must be a string or a non-empty sequence of strings; got {texts!r:.80}"
        )
    return texts


def run_tokenizer(pretrained: Pretrained, method: str, texts):
    """`pretrained.tokenizer.<method>(texts)` (`encode` or `encode_batch`), a failure reported
    as a bad tokenizer (`tokenizer_call`)."""
    return tokenizer_call(
        lambda: getattr(pretrained.tokenizer, method)(texts),
        lambda reason: (
            f"the tokenizer of {pretrained.path} failed on this text (a bad "
            f"tokenizer.json?): {reason}"
        ),
    )


def tokenizer_call(call, failure):
    """`call()`, a call into the `tokenizers` library: its errors (a bare `Exception` on a
    malformed file) and the panics of its Rust code (pyo3's `PanicException`, a
    `BaseException`: a pre-tokenizer pattern that backtracks without end, for one) become
    `ValueError(failure(reason))`, `reason` the error's first line, the panic's own message
    kept off the terminal."""
    try:
        with _rust_messages_aside():
            return call()
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(failure(reason)) from err


@contextlib.contextmanager
def _rust_messages_aside():
    """The process's stderr (file descriptor 2) sent to a temporary file meanwhile: a panic of
    the tokenizer's Rust code prints its message there (a backtrace too, with RUST_BACKTRACE)
    instead of on the terminal; `tokenizer_call` reports it as a `ValueError`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as aside:
        os.dup2(aside.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def encode(pretrained: Pretrained, texts: str | Sequence[str]) -> Encoding:
    """Tokenize `texts` (a string or a list of strings), run the encoder, pool.

    Each text is tokenized with the checkpoint's tokenizer (special tokens added, truncated to
    `pretrained.max_length` tokens); the batch is padded to the longest, with the mask keeping
    padding out of the attention. The forward pass is jit-compiled once per batch size and
    padded length, the length rounded up to a multiple of 16 (the extra padding is masked, so
    results do not depend on it, and is cut off the result).

    The sentence `embedding` is sentence-transformers' `Transformer -> Pooling(mean) ->
    Normalize`: the mean of the last hidden states over the real tokens,
    `m = sum_i mask_i x_i / max(sum_i mask_i, 1e-9)`, then `m / max(|m|, 1e-12)`.

    Returns an `Encoding`.
    """
    texts = _as_texts(texts)
    encodings = run_tokenizer(pretrained, "encode_batch", texts)
    lengths = [len(encoding.ids) for encoding in encodings]
    n = max(lengths)
    positions = pretrained.model.embeddings.position.shape[0]
    padded = min(-(-n // _PAD_MULTIPLE) * _PAD_MULTIPLE, max(n, positions))
    ids = np.full((len(texts), padded), pretrained.config.pad_token_id, np.int32)
    types = np.zeros((len(texts), padded), np.int32)
    mask = np.zeros((len(texts), padded), bool)
    for row, (encoding, length) in enumerate(zip(encodings, lengths, strict=True)):
        ids[row, :length] = encoding.ids
        types[row, :length] = encoding.type_ids
        mask[row, :length] = True
    hidden, embedding = _encode_padded(pretrained.model, ids, mask, types)
    return Encoding(jnp.asarray(ids[:, :n]), jnp.asarray(mask[:, :n]), hidden[:, :, :n], embedding)


def embed(pretrained: Pretrained, texts: str | Sequence[str]) -> Float[Array, "B d"]:
    """The normalized mean-pooled sentence embeddings of `texts`, shape `(B, d)` (`(1, d)` for
    one string): `encode(pretrained, texts).embedding`."""
    return encode(pretrained, texts).embedding
