"""Attention kernels: the raw attention output `sum_j A_ij V x_j`, before any normalization.

A kernel maps `(t, x)` with `x` of shape `(n, d)` to an array of the same shape. Normalization
schemes (`PostLN`, ...) wrap a kernel to give a vector field; see `_field.py`.
Notation and formulas: `../shared/SCIENCE.md`, sections 1-2.
"""

import abc
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._checks import check_beta, check_matrix
from .._types import Points, Scalar


def attention_weights(
    logits: Float[Array, "n n"], normalized: bool, mask: Bool[Array, "n n"] | None = None
) -> Float[Array, "n n"]:
    """Row weights `exp(logits_ij) / Z_i` (normalized) or `exp(logits_ij) / n_i` (not), over
    the `j` allowed by `mask` (all by default; `n_i` counts them, `n` without a mask).

    Max-shifted softmax for the normalized weights; the unnormalized ones go through the
    log-sum-exp `log Z_i` and are `(Z_i / n_i)` times a softmax row: finite whenever their
    true value is representable. Masked weights are exactly 0.
    """
    if normalized:  # max-shifted: one pass of exp, the same stability as a log-sum-exp
        return jax.nn.softmax(logits, axis=-1, where=mask)
    log_z = jax.nn.logsumexp(logits, axis=-1, keepdims=True, where=mask)
    count = logits.shape[-1] if mask is None else jnp.sum(mask, axis=-1, keepdims=True)
    weights = jnp.exp(logits - log_z + (log_z - jnp.log(count)))
    return weights if mask is None else jnp.where(mask, weights, 0.0)


def check_width(x: Points, d: int | None, owner: str) -> None:
    """Raise if the tokens `x` do not have the width `d` that `owner`'s weights act on."""
    if d is not None and x.shape[-1] != d:
        raise ValueError(
            f"x0 must have shape (n, {d}) to match the {owner} weights; got shape {x.shape}"
        )


class AbstractAttention(eqx.Module):
    """An attention kernel: `(t, x) -> sum_j A_ij(t) V(t) x_j`, shape `(n, d)`."""

    @abc.abstractmethod
    def __call__(self, t: Scalar, x: Points) -> Points:
        """The attention output at time `t` for tokens `x`."""

    @abc.abstractmethod
    def check(self, x: Points) -> None:
        """Raise `ValueError` if tokens of the shape of `x` do not fit this kernel's weights."""


class AbstractDotProductAttention(AbstractAttention):
    """Dot-product attention with logits `beta <Q x_i, K x_j>` and values `V x_j`.

    `Q, K` have shape `(m, d)` (they need not be square), `V` shape `(d, d)`; `None` stands for
    the identity (and skips the product). `beta` and the matrices are array leaves, so
    `jax.vmap` over them needs no recompilation. `causal=True` masks `j > i`: token `i` attends
    to the tokens `j <= i` only (SCIENCE.md section 2).
    """

    beta: Float[Array, ""]
    Q: Float[Array, "m d"] | None
    K: Float[Array, "m d"] | None
    V: Float[Array, "d d"] | None
    d: int | None = eqx.field(static=True)
    causal: bool = eqx.field(static=True)

    def __init__(self, beta: Scalar, Q=None, K=None, V=None, causal: bool = False):
        self.beta = check_beta(beta)
        Q, K, V = (
            check_matrix(a, name, (None, None)) for a, name in ((Q, "Q"), (K, "K"), (V, "V"))
        )
        widths = [a.shape[1] for a in (Q, K, V) if a is not None]
        d = widths[0] if widths else None
        if (Q is None) != (K is None):
            given, name = (Q, "Q") if K is None else (K, "K")
            if given.shape[0] != given.shape[1]:
                raise ValueError(
                    f"{name} must be square, shape ({d}, {d}), when {'K' if K is None else 'Q'} "
                    f"is the identity (None); got shape {given.shape}"
                )
        m = Q.shape[0] if Q is not None else d
        self.Q = check_matrix(Q, "Q", (m, d))
        self.K = check_matrix(K, "K", (m, d))
        self.V = check_matrix(V, "V", (d, d))
        self.d = d
        if not isinstance(causal, bool):
            raise ValueError(f"causal must be True or False; got {causal!r}")
        self.causal = causal

    @abc.abstractmethod
    def _weights(
        self, logits: Float[Array, "n n"], mask: Bool[Array, "n n"] | None
    ) -> Float[Array, "n n"]:
        """Attention weights `A_ij` from the logits `beta <Q x_i, K x_j>`, zero where the
        `mask` (if any) is False."""

    def weights(self, x: Points) -> Float[Array, "n n"]:
        """The attention matrix `A` (shape `(n, n)`) for tokens `x`."""
        queries = x if self.Q is None else x @ self.Q.T
        keys = x if self.K is None else x @ self.K.T
        n = x.shape[0]
        mask = jnp.tril(jnp.ones((n, n), bool)) if self.causal else None
        return self._weights(self.beta * (queries @ keys.T), mask)

    def __call__(self, t: Scalar, x: Points) -> Points:
        values = x if self.V is None else x @ self.V.T
        return self.weights(x) @ values

    def check(self, x: Points) -> None:
        check_width(x, self.d, "attention")


class Softmax(AbstractDotProductAttention):
    """Softmax attention: `A_ij = exp(beta <Q x_i, K x_j>) / Z_i`, `Z_i = sum_k exp(...)`.

    Log-sum-exp stable: `beta = 1e3` gives finite, correct weights. SCIENCE.md section 1.
    """

    def _weights(self, logits, mask):
        return attention_weights(logits, normalized=True, mask=mask)


class Unnormalized(AbstractDotProductAttention):
    """Unnormalized attention: `A_ij = exp(beta <Q x_i, K x_j>) / n` (USA, SCIENCE.md section 2);
    with `causal=True`, `/ (i + 1)`, the number of tokens token `i` attends to.

    The weights grow like `e^beta`; they are computed as `(Z_i / n)` times softmax weights and
    are finite whenever their true value is representable (`beta` up to about 700 in float64,
    88 in float32, for unit tokens and `Q = K = I`).
    """

    def _weights(self, logits, mask):
        return attention_weights(logits, normalized=False, mask=mask)


class Hardmax(AbstractDotProductAttention):
    """Hardmax attention, the `beta -> infinity` limit: token `i` averages `V x_j` over
    `C_i = argmax_j <Q x_i, K x_j>` (GLPR sections 9.4-9.6; SCIENCE.md section 2).

    Ties are split evenly: every `j` whose logit equals the row maximum exactly, in floating
    point, gets weight `1 / |C_i|`. With `Q = K = I` on the sphere `C_i = {i}` and the flow is
    at rest; the dynamics come from general `Q, K`. The weights are piecewise constant in the
    tokens (zero gradient almost everywhere).
    """

    def __init__(self, Q=None, K=None, V=None, causal: bool = False):
        super().__init__(1.0, Q, K, V, causal)

    def _weights(self, logits, mask):
        if mask is not None:
            logits = jnp.where(mask, logits, -jnp.inf)
        best = logits == jnp.max(logits, axis=-1, keepdims=True)
        return best / jnp.sum(best, axis=-1, keepdims=True)


class Sinkhorn(AbstractDotProductAttention):
    """Doubly stochastic attention (Sinkformers, SCIENCE.md section 2): `A` is the Sinkhorn
    scaling `A_ij = exp(beta <Q x_i, K x_j> + f_i + g_j)` with all row and column sums 1.

    Solved as entropic optimal transport between uniform marginals by ott-jax's log-domain
    Sinkhorn (stable for large `beta`, differentiable by implicit differentiation, jit- and
    vmap-able): row and column sums are 1 to `tol` (max absolute error) within `max_iter`
    iterations. If it has not converged, calling the kernel raises (an `EquinoxRuntimeError`
    under `jit`) instead of returning inexact weights.
    """

    tol: float = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)

    def __init__(self, beta: Scalar, Q=None, K=None, V=None, *, tol=1e-9, max_iter=1000):
        super().__init__(beta, Q, K, V)
        if not (isinstance(tol, float | int) and tol > 0):
            raise ValueError(f"tol must be a positive number; got {tol!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
        self.tol, self.max_iter = float(tol), max_iter

    def _weights(self, logits, mask):
        from ott.geometry import geometry
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import sinkhorn

        n = logits.shape[-1]
        problem = linear_problem.LinearProblem(geometry.Geometry(cost_matrix=-logits, epsilon=1.0))
        # ott's threshold is on the L1 error of the marginals of the plan (which sum to 1).
        solver = sinkhorn.Sinkhorn(threshold=self.tol / n, max_iterations=self.max_iter)
        out = solver(problem)
        return eqx.error_if(
            n * out.matrix,
            ~out.converged,
            f"Sinkhorn attention did not converge to tol = {self.tol:g} within "
            f"max_iter = {self.max_iter} iterations; raise max_iter or tol",
        )


class MultiHead(AbstractAttention):
    """The sum of several attention heads, each with its own weights and partition function.

    `MultiHead((Softmax(beta, Q1, K1, V1), Softmax(beta, Q2, K2, V2)))`. `H` identical heads
    with `V / H` equal one head (SCIENCE.md section 2).
    """

    heads: tuple[AbstractAttention, ...]

    def __init__(self, heads: Sequence[AbstractAttention]):
        heads = tuple(heads)
        if not heads or not all(isinstance(h, AbstractAttention) for h in heads):
            raise ValueError(
                f"heads must be a non-empty sequence of attention kernels; got {heads!r:.80}"
            )
        self.heads = heads

    def __call__(self, t: Scalar, x: Points) -> Points:
        return sum(head(t, x) for head in self.heads)

    def check(self, x: Points) -> None:
        for head in self.heads:
            head.check(x)


class PerLayer(AbstractAttention):
    """Time-dependent weights, piecewise constant in `t`: one kernel per layer.

    Layer `k` (0-based) acts for `t` in `[k h, (k + 1) h)`; times before 0 use the first
    layer and times after `L h` the last. This is a trained model's "one weight set per layer"
    (SCIENCE.md section 2). All layers must be kernels of the same kind and shapes; they are
    stored stacked, so a deep model compiles once.
    """

    layers: AbstractAttention
    h: float = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)

    def __init__(self, layers: Sequence[AbstractAttention], h: float):
        layers = tuple(layers)
        if not layers or not all(isinstance(layer, AbstractAttention) for layer in layers):
            raise ValueError("layers must be a non-empty sequence of attention kernels")
        if not (isinstance(h, int | float) and h > 0):
            raise ValueError(f"h must be a positive number (the layer duration); got {h!r}")
        structures = {jax.tree.structure(layer) for layer in layers}
        if len(structures) != 1:
            raise ValueError(
                "layers must all be kernels of the same kind with the same weight shapes; "
                f"got {len(structures)} different structures"
            )
        self.layers = jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)
        self.h = float(h)
        self.num_layers = len(layers)

    def layer(self, t: Scalar) -> AbstractAttention:
        """The kernel in force at time `t`."""
        k = jnp.floor(t / self.h)
        # `t / h` may round to just below `k` at the layer time `t = k * h` itself.
        k = jnp.where(t >= (k + 1) * self.h, k + 1, k)
        k = jnp.clip(k, 0, self.num_layers - 1).astype(int)
        return jax.tree.map(lambda leaf: leaf[k], self.layers)

    def __call__(self, t: Scalar, x: Points) -> Points:
        return self.layer(t)(t, x)

    def check(self, x: Points) -> None:
        self.layers.check(x)
