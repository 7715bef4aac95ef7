"""A trained model's weights driving the flow: each BERT layer's attention as an attnflow
`MultiHead` kernel, and the clustering of the real hidden states against the flows started
from the model's embeddings (GLPR Fig. 1 and the idealized model of GLPR section 2).

Exact form. A layer's self-attention sublayer (`Bert.attention`) is, with `H` heads of width
`dh` and `beta = 1 / sqrt(dh)`,

    y_i = sum_h W_O^h sum_j softmax_j(beta <W_q^h x_i + b_q^h, W_k^h x_j + b_k^h>)
              (W_v^h x_j + b_v^h) + b_O.

On augmented tokens `x~ = (x, 1)` of `R^{d+1}` this is exactly an attnflow `MultiHead` of
`Softmax(beta, Q~_h, K~_h, V~_h)` heads with `Q~_h = [W_q^h | b_q^h]`, `K~_h = [W_k^h | b_k^h]`
and `V~_h = [[W_O^h W_v^h, W_O^h b_v^h + b_O / H], [0, 0]]`: the biases are columns acting on
the constant coordinate, the value and output biases pass through because each softmax row sums
to 1, and the zero last row keeps the constant coordinate at rest. Its first `d` coordinates
are `y`.

Idealized form (GLPR's model). Drop the biases, replace the LayerNorm before the layer by the
projection of each token on the sphere of radius `sqrt(d)` with its gains `g` folded into the
weights: `x_i = sqrt(d) g * theta_i` with `|theta_i| = 1`. Then the logits are
`beta_eff <Q_h theta_i, K_h theta_j>` with `Q_h = W_q^h diag(g)`, `K_h = W_k^h diag(g)` and
`beta_eff = d / sqrt(dh)`, and the values `V_h = W_O^h W_v^h diag(g)` (up to the factor
`sqrt(d)`, which the normalization of a post-LN step removes): the flow
`dtheta_i/dt = P_theta_i(sum_h sum_j A^h_ij V_h theta_j)` on the unit sphere, SA with the
layer's heads.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import check_bool
from ..analysis import pair_fraction
from ..fields import MultiHead, PerLayer, PostLN, Softmax
from ..integrate import Layers, simulate
from ..sphere import normalize
from ._bert import Bert, Pretrained, check_text, encode


def _model(pretrained) -> Bert:
    if isinstance(pretrained, Pretrained):
        return pretrained.model
    if isinstance(pretrained, Bert):
        return pretrained
    raise ValueError(
        "pretrained must be an attnflow.pretrained.Pretrained (from load) or a Bert; "
        f"got {type(pretrained).__name__}"
    )


def _layer(model: Bert, layer) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
        raise ValueError(f"layer must be an integer in [0, {model.num_layers}); got {layer!r}")
    if not 0 <= layer < model.num_layers:
        raise ValueError(f"layer must be an integer in [0, {model.num_layers}); got {layer}")
    return int(layer)


def augment(x: Float[Array, "n d"]) -> Float[Array, "n d+1"]:
    """`(x, 1)`: the tokens with a constant last coordinate, on which `attention_heads` with
    `exact=True` acts."""
    x = jnp.asarray(x)
    return jnp.concatenate([x, jnp.ones((*x.shape[:-1], 1), x.dtype)], axis=-1)


def input_gain(model: Bert, layer: int) -> Float[Array, " d"]:
    """The gains of the LayerNorm whose output layer `layer` reads: the embeddings' for layer
    0, the previous layer's output LayerNorm otherwise."""
    layer = _layer(model, layer)
    norm = model.embeddings.norm if layer == 0 else model.layers[layer - 1].output_norm
    return norm.weight


def attention_heads(pretrained, layer: int, *, exact: bool = True) -> MultiHead:
    """Layer `layer`'s self-attention as an attnflow `MultiHead` kernel (one `Softmax` head per
    attention head), see the module docstring for the derivations.

    `exact=True`: acts on `augment(x)` for hidden states `x` `(n, d)`, and its first `d` output
    coordinates are the attention sublayer `Bert.attention(layer, x, mask)` (all tokens real)
    exactly, biases included; the last is 0. `exact=False`: the idealized heads for unit
    tokens `theta` `(n, d)`: no biases, the input LayerNorm's gains folded into `Q, K, V`,
    `beta = d / sqrt(dh)`; wrap it in `PostLN` for SA on the sphere with the layer's heads.
    """
    model = _model(pretrained)
    attention = model.layers[_layer(model, layer)].attention
    H, dh, d = attention.query_weight.shape
    check_bool(exact, "exact")
    heads = []
    for h in range(H):
        Wq, Wk, Wv = attention.query_weight[h], attention.key_weight[h], attention.value_weight[h]
        Wo = attention.output_weight[h]
        if exact:
            Q = jnp.concatenate([Wq, attention.query_bias[h][:, None]], axis=1)
            K = jnp.concatenate([Wk, attention.key_bias[h][:, None]], axis=1)
            shift = Wo @ attention.value_bias[h] + attention.output_bias / H
            top = jnp.concatenate([Wo @ Wv, shift[:, None]], axis=1)
            V = jnp.concatenate([top, jnp.zeros((1, d + 1), top.dtype)], axis=0)
            heads.append(Softmax(1 / math.sqrt(dh), Q, K, V))
        else:
            g = input_gain(model, layer)
            heads.append(Softmax(d / math.sqrt(dh), Wq * g, Wk * g, (Wo @ Wv) * g))
    return MultiHead(heads)


def layer_fields(pretrained, *, h: float = 1.0) -> PerLayer:
    """The idealized heads of every layer in depth order (`attention_heads(..., exact=False)`),
    layer `l` acting for `t` in `[l h, (l + 1) h)`: `PostLN(layer_fields(model))` is the
    attention-only network as SA on the sphere, one weight set per layer."""
    model = _model(pretrained)
    return PerLayer(
        [attention_heads(model, layer, exact=False) for layer in range(model.num_layers)], h
    )


class FlowComparison(eqx.Module):
    """Clustering of one prompt's tokens through depth, for the trained model and for flows
    started from its embeddings (`compare_flows`).

    `names`: the curves; for each, `mean_cosine[name]` and `fraction[name]` (shape `(D + 1,)`,
    depth 0 = the embeddings): the mean pairwise cosine of the token states (diagonal
    excluded) and the fraction of pairs with cosine `>= 1 - delta`. `layer`: the layer whose
    weights the repeated and idealized runs use; `tokens`: the number of tokens.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    mean_cosine: dict
    fraction: dict
    delta: float = eqx.field(static=True)
    layer: int = eqx.field(static=True)
    tokens: int = eqx.field(static=True)


def _statistics(xs, delta):
    """Mean cosine and fraction of pairs above `1 - delta` of each state `(D + 1, n, d)`."""
    theta = normalize(xs)
    n = xs.shape[1]
    cosines = jnp.einsum("kid,kjd->kij", theta, theta)
    mean = (jnp.sum(cosines, axis=(1, 2)) - jnp.trace(cosines, axis1=1, axis2=2)) / (n * (n - 1))
    fraction = jax.vmap(lambda x: pair_fraction(x, delta))(theta)
    return np.asarray(mean), np.asarray(fraction)


def _full_step(block, x):
    """One application of the whole block (attention and feed-forward), every token real."""
    return block(x, jnp.ones(x.shape[0], bool))


def _attention_step(block, x):
    """The block without its feed-forward part: `x <- LN_1(x + attention(x))`."""
    return block.attention_norm(x + block.attention(x, jnp.ones(x.shape[0], bool)))


@eqx.filter_jit
def _repeat(step, block, x0, depth: int):
    """`x0` and `depth` applications of `step(block, .)`. `step` is a module-level function
    and `depth` static, so a second identical call compiles nothing."""

    def one(x, _):
        x = step(block, x)
        return x, x

    return jnp.concatenate([x0[None], jax.lax.scan(one, x0, None, length=depth)[1]])


@eqx.filter_jit
def _attention_network(model: Bert, x0):
    """`x0` and its images through each layer of `model` without the feed-forward parts."""
    states = [x0]
    for block in model.layers:
        states.append(_attention_step(block, states[-1]))
    return jnp.stack(states)


def compare_flows(
    pretrained: Pretrained, text: str, *, layer: int = 0, depth: int = 48, delta: float = 1e-2
) -> FlowComparison:
    """The clustering of the prompt's tokens (the real tokens, `[CLS]` and `[SEP]` included)
    through depth, for five dynamics started from the model's embeddings (hidden state 0):

    - `"model"`: the trained network's hidden states (its `L` layers);
    - `"attention only"`: the same layers without their feed-forward blocks,
      `x <- LN_1(x + attention_l(x))`;
    - `"layer k repeated"`: layer `k`'s full block applied `depth` times (ALBERT-style sharing,
      as GLPR Fig. 1 extends depth);
    - `"layer k repeated, attention only"`: `x <- LN_1(x + attention_k(x))`, `depth` times;
    - `"SA, heads of layer k"`: attnflow's `simulate` of `PostLN(attention_heads(k,
      exact=False))` from the normalized embeddings, discrete layers of step `h = 1` (GLPR's
      idealized model: no biases, LayerNorm as the projection on the sphere).

    `text`: a string with at least one word (an empty one leaves only `[CLS]` and `[SEP]`).
    Returns a `FlowComparison`.
    """
    model = _model(pretrained)
    k = _layer(model, layer)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer; got {depth!r}")
    if not (isinstance(delta, int | float) and 0 < delta <= 2):
        raise ValueError(f"delta must lie in (0, 2]; got {delta!r}")
    encoding = encode(pretrained, check_text(text))
    mask = encoding.mask[0]
    hidden = encoding.hidden[0][:, mask]  # the real tokens (one text: no padding)
    x0 = hidden[0]
    block = model.layers[k]
    field = PostLN(attention_heads(model, k, exact=False))
    theta0 = normalize(x0)
    flow = simulate(field, theta0, jnp.arange(depth + 1.0, dtype=x0.dtype), solver=Layers(1.0))
    runs = {
        "model": hidden,
        "attention only": _attention_network(model, x0),
        f"layer {k} repeated": _repeat(_full_step, block, x0, depth),
        f"layer {k} repeated, attention only": _repeat(_attention_step, block, x0, depth),
        f"SA, heads of layer {k}": flow.xs,
    }
    mean_cosine, fraction = {}, {}
    for name, states in runs.items():
        mean_cosine[name], fraction[name] = _statistics(states, delta)
    return FlowComparison(
        names=tuple(runs),
        mean_cosine=mean_cosine,
        fraction=fraction,
        delta=float(delta),
        layer=k,
        tokens=int(x0.shape[0]),
    )
