"""GLPR Fig. 1 for a real model: the pairwise cosines of the token hidden states of a trained
BERT, layer by layer, and how many pairs sit near 1."""

import numbers
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..analysis import cosine_histogram, count_clusters, pair_fraction
from ._bert import Pretrained, check_text, encode, run_tokenizer
from ._prompt import PARAGRAPH

# cos >= 0.9 (angles within about 26 degrees): see `hidden_state_clusters` for the choice.
DEFAULT_DELTA = 0.1


class TruncationWarning(UserWarning):
    """A text longer than the model's `max_length` was cut to its first tokens."""


class HiddenStateClusters(eqx.Module):
    """Result of `hidden_state_clusters` (NumPy arrays), for `n` tokens, `L` layers, `d` the
    hidden size; layer `0` is the embeddings, layer `l` the output of block `l`.

    - `tokens` (n,), `ids` (n,), `special` (n,): the tokens kept (strings), their ids, and
      whether each is a special token (`[CLS]`, `[SEP]`);
    - `layers` (L + 1,): `0, ..., L`;
    - `hidden` (L + 1, n, d): their hidden states; `cosines` (L + 1, n, n): the cosines
      `<x_i, x_j> / (|x_i| |x_j|)` (the diagonal, 1, is in the matrix but in no statistic);
    - `edges` (bins + 1,): the bins on `[-1, 1]`; `counts` (L + 1, bins): the number of pairs
      `i < j` per bin (each row sums to `n (n - 1) / 2`); `density` (L + 1, bins): the same as
      a density on `[-1, 1]` (`attnflow.analysis.cosine_histogram`);
    - `fraction` (L + 1,): the fraction of pairs `i != j` with cosine `>= 1 - delta`
      (`attnflow.analysis.pair_fraction`); `mean_cosine` (L + 1,): the mean cosine over the
      pairs `i != j`; `clusters` (L + 1,): the number of connected components of the graph
      `cosine >= 1 - delta` (`attnflow.analysis.count_clusters`; `n` when no pair is close);
    - `delta`; `text` (the text as given, before any truncation); `truncated`: whether it was
      cut to the model's `max_length`; `model`: the checkpoint folder.
    """

    tokens: np.ndarray
    ids: np.ndarray
    special: np.ndarray
    layers: np.ndarray
    hidden: np.ndarray
    cosines: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    density: np.ndarray
    fraction: np.ndarray
    mean_cosine: np.ndarray
    clusters: np.ndarray
    delta: float
    text: str
    truncated: bool
    model: str

    @property
    def pairs(self) -> int:
        """The number of pairs `i < j`, `n (n - 1) / 2`."""
        n = self.tokens.shape[0]
        return n * (n - 1) // 2


def hidden_state_clusters(
    pretrained: Pretrained,
    text: str | None = None,
    *,
    delta: float = DEFAULT_DELTA,
    bins: int = 50,
    special_tokens: bool = True,
) -> HiddenStateClusters:
    """GLPR Fig. 1 for a BERT checkpoint: the pairwise cosines of the token hidden states of
    one text at every layer, their histogram, the fraction of pairs near 1, the clusters.

    The text is tokenized and run through the encoder (`encode`); at each layer `l = 0..L`
    (`0` the embeddings) the hidden states `x_i` of the tokens are normalized,
    `y_i = x_i / |x_i|`, and the statistics of `attnflow.analysis` listed in
    `HiddenStateClusters` are read on the `y_i`, the diagonal `i = j` always excluded.

    Arguments:
        pretrained: a checkpoint from `attnflow.pretrained.load`.
        text: the prompt; `None` for `PARAGRAPH`, a neutral English paragraph of 150 tokens
            with all-MiniLM-L6-v2's tokenizer. A text longer than `pretrained.max_length`
            tokens (special tokens included) is truncated to its first tokens, with a
            `TruncationWarning` saying so.
        delta: pairs with cosine `>= 1 - delta` count as close, in `[0, 2]`. The default `0.1`
            (cos >= 0.9, angles within about 26 degrees) is a choice for a real model of a
            few layers, which does not collapse its tokens as the idealized flow does at long
            times (where attnflow's default is `1e-3`): with all-MiniLM-L6-v2 on `PARAGRAPH`
            at most 0.1% of the pairs reach cos >= 0.99 at any layer, so `delta = 1e-2`
            reads zero everywhere, while `0.1` shows where Fig. 1's mass near 1 appears (the
            top 2.5 bins of 50), still far from chance (random cosines in `d = 384` have
            standard deviation `1/sqrt(d) = 0.05`).
        bins: the number of histogram bins on `[-1, 1]`.
        special_tokens: `True` (default) keeps every real token, `[CLS]` and `[SEP]`
            included: they are tokens the model attends to and moves like the others, as in
            the particle picture where every token is a particle; `False` leaves them out.

    Returns a `HiddenStateClusters` (NumPy arrays, in the dtype of the model's weights).
    `ValueError` naming the argument on an empty text, a `delta` outside `[0, 2]`, `bins < 1`,
    or fewer than 2 tokens left.
    """
    if not isinstance(pretrained, Pretrained):
        raise ValueError(
            "pretrained must be a checkpoint from attnflow.pretrained.load; "
            f"got {type(pretrained).__name__}"
        )
    text = check_text(PARAGRAPH if text is None else text)
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 <= float(delta) <= 2:
        raise ValueError(f"delta must be a number in [0, 2]; got {delta!r}")
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    delta, bins = float(delta), int(bins)

    tokenized = run_tokenizer(pretrained, "encode", text)  # truncated at max_length, as `encode`
    truncated = bool(tokenized.overflowing)
    if truncated:
        total = sum(
            len(part.ids) - sum(part.special_tokens_mask)
            for part in [tokenized, *tokenized.overflowing]
        )
        kept = len(tokenized.ids) - sum(tokenized.special_tokens_mask)
        warnings.warn(
            f"the text has {total} tokens and the model takes at most {pretrained.max_length} "
            f"with its special tokens: truncated to the first {kept}",
            TruncationWarning,
            stacklevel=2,
        )
    encoding = encode(pretrained, text)
    ids = np.asarray(encoding.ids[0])
    assert ids.tolist() == tokenized.ids  # one tokenizer, one truncation
    special = np.asarray(tokenized.special_tokens_mask, bool)
    keep = np.ones_like(special) if special_tokens else ~special
    if keep.sum() < 2:
        besides = "" if special_tokens else " besides [CLS] and [SEP]"
        raise ValueError(
            f"text must give at least 2 tokens{besides}; got {int(keep.sum())} from {text!r:.80}"
        )
    hidden = encoding.hidden[0][:, keep]  # (L + 1, n, d)
    y = hidden / jnp.linalg.norm(hidden, axis=-1, keepdims=True)

    def statistics(x):
        density, edges = cosine_histogram(x, bins)
        return pair_fraction(x, delta), count_clusters(x, delta), density, edges

    fraction, clusters, density, edges = jax.vmap(statistics)(y)
    cosines = np.asarray(jnp.einsum("lid,ljd->lij", y, y))
    n = cosines.shape[1]
    mean_cosine = cosines[:, ~np.eye(n, dtype=bool)].mean(axis=1)
    edges = np.asarray(edges[0])
    pairs = n * (n - 1) // 2
    counts = np.rint(np.asarray(density, np.float64) * np.diff(edges) * pairs).astype(np.int64)
    return HiddenStateClusters(
        tokens=np.asarray(tokenized.tokens, dtype=str)[keep],
        ids=ids[keep],
        special=special[keep],
        layers=np.arange(hidden.shape[0]),
        hidden=np.asarray(hidden),
        cosines=cosines,
        edges=edges,
        counts=counts,
        density=np.asarray(density),
        fraction=np.asarray(fraction),
        mean_cosine=mean_cosine,
        clusters=np.asarray(clusters),
        delta=delta,
        text=text,
        truncated=truncated,
        model=pretrained.path,
    )
