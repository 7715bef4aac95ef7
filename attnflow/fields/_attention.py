"""Attention kernels: the raw attention output `sum_j A_ij V x_j`, before any normalization.

A kernel maps `(t, x)` with `x` of shape `(n, d)` to an array of the same shape, also in log
scale (`AbstractAttention.scaled`) and with its tangent part (`AbstractAttention.projected`).
Normalization schemes (`PostLN`, ...) wrap a kernel to give a vector field; see `_field.py`.
Notation and formulas: `docs/science.md`, sections 1-2.
"""

import abc
import copy
import functools
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._checks import check_beta, check_bool, check_matrix, check_shape, positive_number
from .._types import Points, Scalar
from ..sphere import project
from ._blockwise import blockwise_attention, check_block, resolve_block

LogScale = Float[Array, " n"] | None  # `None` stands for 0: the output is `u` itself


class Projected(NamedTuple):
    """A kernel's output and its tangent part (`AbstractAttention.projected`), in log scale:
    the output is `e^{s_i} u_i` and its projection `P_{x_i}(output_i)` is `e^{r_i} p_i`."""

    log_scale: LogScale  # s
    output: Points  # u
    tangent_log_scale: LogScale  # r
    tangent: Points  # p


FACTORS = 16  # `scale_by_exp` beyond the range of `exp`: `e^s` as this many factors `e^{s / 16}`


def scale_by_exp(log_scale: Float[Array, "*batch"], v: Float[Array, "*batch d"]):
    """`exp(log_scale)[..., None] * v`, finite whenever the product is representable.

    Where `exp(log_scale)` alone would overflow, `v` is multiplied by `FACTORS` factors
    `e^{s / 16}`, each representable (for `s` up to 16 times the largest exponent: about 11000
    in float64, 1400 in float32): every partial product lies between `v` and the result, so
    each entry is finite if the product is, `+-inf` if not, and `0` where `v = 0` (never
    `inf * 0 = NaN`). Its derivatives are those of the product, `e^s dv + e^s v ds`: `+-inf`
    where they overflow, never a silent 0 (the linearization of a flow beyond the range of
    float is refused, not taken as at rest). Elsewhere it is the plain product.
    """
    big = log_scale > float(np.log(jnp.finfo(log_scale.dtype).max)) - 1  # a margin of e
    direct = jnp.exp(jnp.where(big, 0, log_scale))[..., None] * v
    factor = jnp.exp(jnp.where(big, log_scale, 0) / FACTORS)[..., None]
    huge = v
    for _ in range(FACTORS):
        huge = factor * huge
    return jnp.where(big[..., None], huge, direct)


def apply_scale(log_scale: LogScale, u: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
    """`e^{s_i} u_i` for an output in log scale `(s, u)` (`AbstractAttention.scaled`): `u`
    itself where `s` is `None` (0)."""
    return u if log_scale is None else scale_by_exp(log_scale, u)


def sum_scaled(
    terms: Sequence[tuple[LogScale, Points]], bounded: bool = False
) -> tuple[LogScale, Points]:
    """`sum_k e^{s_k} u_k` for terms in log scale `(s_k, u_k)` (`s_k = None` for 0), as one
    `(s, u)`: `s = max_k s_k`, `u = sum_k e^{s_k - s} u_k` (0 in rows where every `s_k` is
    `-inf`); `(None, sum_k e^{s_k} u_k)` when every `s_k` is None, or when `bounded` (every
    `s_k <= 0`, so the plain sum is finite)."""
    if all(log_scale is None for log_scale, _ in terms):
        return None, sum(u for _, u in terms)
    logs = [jnp.zeros(u.shape[:-1], u.dtype) if s is None else s for s, u in terms]
    if bounded:
        return None, sum(jnp.exp(s)[..., None] * u for s, (_, u) in zip(logs, terms, strict=True))
    top = functools.reduce(jnp.maximum, logs)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0))  # cancels exactly
    return top, sum(jnp.exp(s - top)[..., None] * u for s, (_, u) in zip(logs, terms, strict=True))


def masked_softmax(
    logits: Float[Array, "n n"], mask: Bool[Array, "n n"] | None = None
) -> tuple[Float[Array, " n"], Float[Array, "n n"]]:
    """`(lse, w)`: `lse_i = log sum_j exp(logits_ij)` and the softmax rows `w_ij = exp(logits_ij
    - lse_i)`, over the `j` allowed by `mask` (all by default): one pass of `exp` over the
    max-shifted logits. Masked weights are exactly 0; a row with nothing allowed has
    `lse = -inf` and weights 0 (gradients finite)."""
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))  # cancels exactly
    top = jnp.where(jnp.isfinite(top), top, 0)
    e = jnp.exp(logits - top)
    z = jnp.sum(e, axis=-1, keepdims=True)
    some = z != 0  # NaN logits stay NaN
    z = jnp.where(some, z, 1)
    return jnp.where(some, top + jnp.log(z), -jnp.inf)[..., 0], e / z


def safe_log(w: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
    """`log w` for `w >= 0`: `-inf` at 0, with gradient 0 there (not NaN); NaN stays NaN (the
    weights of a Sinkhorn solve that did not converge, with `throw=False`)."""
    zero = w == 0
    return jnp.where(zero, -jnp.inf, jnp.log(jnp.where(zero, 1, w)))


class SelfSplit(NamedTuple):
    """A dot-product kernel's output with each token's own term apart:
    `output_i = e^{a_i} values_i + e^{b_i} rest_i`.

    `a_i = log A_ii` (`self_log`), `values_i = V x_i` (`None` for `V = I`: the token itself,
    whose tangent part is 0); `b_i = log sum_{j != i} A_ij` (`rest_log`, `-inf` where token `i`
    attends to no other) and `rest_i` the mean of the `V x_j`, `j != i`, under those weights
    (0 where there are none).
    """

    self_log: Float[Array, " n"]
    values: Points | None
    rest_log: Float[Array, " n"]
    rest: Points


def _replaced(module: eqx.Module, **changes) -> eqx.Module:
    """A copy of `module` with the fields `changes` replaced, static ones included, without
    running `__init__` again (for values that satisfy its checks by construction)."""
    out = copy.copy(module)
    for name, value in changes.items():
        object.__setattr__(out, name, value)  # Modules are frozen dataclasses
    return out


def check_width(x: Points, d: int | None, owner: str) -> None:
    if d is not None and x.shape[-1] != d:
        raise ValueError(
            f"x0 must have shape (n, {d}) to match the {owner} weights; got shape {x.shape}"
        )


class AbstractAttention(eqx.Module):
    """An attention kernel: `(t, x) -> sum_j A_ij(t) V(t) x_j`, shape `(n, d)`."""

    @abc.abstractmethod
    def __call__(self, t: Scalar, x: Points) -> Points:
        """The attention output at time `t` for tokens `x`."""

    def scaled(self, t: Scalar, x: Points) -> tuple[LogScale, Points]:
        """The output in log scale, `(s, u)` with `self(t, x) = exp(s)[:, None] * u`.

        `s` has shape `(n,)`, or is `None` for 0 (kernels whose output is bounded, the
        default: `(None, self(t, x))`); `u` is bounded by twice the values `max_j abs(V x_j)`
        (a token's own term and the others' mean, each at most that; summed over heads), so `u`
        and `s` are finite even where `exp(s)` overflows.
        """
        return None, self(t, x)

    def projected(self, t: Scalar, x: Points) -> Projected:
        """The output in log scale (as `scaled`) with its projection on the tangent space at each
        `x_i` (`sphere.project`), the velocity of `PostLN`: `Projected(s, u, r, p)`.

        The default projects `u`, which is exact to the rounding of `u`. The dot-product
        kernels (and `MultiHead`, `PerLayer`, `Sharded` of them) leave out token `i`'s own
        term where it has no tangent part (`V = I`), so the projection is accurate to the
        rounding of the other terms even where that term dominates the output by many orders
        of magnitude.
        """
        log_scale, u = self.scaled(t, x)
        return Projected(log_scale, u, log_scale, project(x, u))

    @abc.abstractmethod
    def check(self, x: Points) -> None:
        """Raise `ValueError` if tokens of the shape of `x` do not fit this kernel's weights."""

    def in_span(self, basis: Float[Array, "d k"]) -> "AbstractAttention | None":
        """This kernel acting on coordinates `y` in the orthonormal `basis` (tokens
        `x = y basis^T`), if its output for tokens in the span stays in the span (then
        `self(t, y basis^T) = other(t, y) basis^T`); `None` where it does not (the default)."""
        return None


class FromProjected(AbstractAttention):
    """A kernel that computes `projected`, from which `scaled` and the output follow."""

    def scaled(self, t: Scalar, x: Points) -> tuple[LogScale, Points]:
        return self.projected(t, x)[:2]

    def __call__(self, t: Scalar, x: Points) -> Points:
        return apply_scale(*self.scaled(t, x))


class AbstractDotProductAttention(FromProjected):
    """Dot-product attention with logits `beta <Q x_i, K x_j>` and values `V x_j`.

    `Q, K` have shape `(m, d)` (they need not be square), `V` shape `(d, d)`; `None` stands for
    the identity (and skips the product). `beta` and the matrices are array leaves, so
    `jax.vmap` over them needs no recompilation. `causal=True` masks `j > i`: token `i` attends
    to the tokens `j <= i` only (docs/science.md section 2).

    `block` (Softmax and Unnormalized attention): how the output is computed. `"auto"` (the
    default) forms the `n x n` attention matrix up to 2048 tokens and goes blockwise above;
    `None` always forms the matrix; an int always goes blockwise with blocks of that many
    tokens: keys in blocks with an online log-sum-exp, memory `O(n d + block^2)` instead of
    `O(n^2)`, derivatives included (`attnflow.fields.blockwise_attention`). Both give the same
    numbers to rounding. `weights(x)` always forms the matrix.
    """

    beta: Float[Array, ""]
    Q: Float[Array, "m d"] | None
    K: Float[Array, "m d"] | None
    V: Float[Array, "d d"] | None
    d: int | None = eqx.field(static=True)
    causal: bool = eqx.field(static=True)
    block: int | str | None = eqx.field(static=True)

    def __init__(self, beta: Scalar, Q=None, K=None, V=None, causal: bool = False, block="auto"):
        self.beta = check_beta(beta)
        Q, K, V = (
            check_matrix(a, name, (None, None)) for a, name in ((Q, "Q"), (K, "K"), (V, "V"))
        )
        d = next((a.shape[1] for a in (Q, K, V) if a is not None), None)
        if (Q is None) != (K is None):
            given, name = (Q, "Q") if K is None else (K, "K")
            if given.shape[0] != given.shape[1]:
                raise ValueError(
                    f"{name} must be square, shape ({d}, {d}), when {'K' if K is None else 'Q'} "
                    f"is the identity (None); got shape {given.shape}"
                )
        m = Q.shape[0] if Q is not None else d
        for a, name, shape in ((Q, "Q", (m, d)), (K, "K", (m, d)), (V, "V", (d, d))):
            if a is not None:
                check_shape(a, name, shape)
        self.Q, self.K, self.V, self.d = Q, K, V, d
        self.causal = check_bool(causal, "causal")
        self.block = check_block(block)
        if isinstance(self.block, int) and not self._blockwise:
            raise ValueError(
                f"block applies to Softmax and Unnormalized attention; {type(self).__name__} "
                f"always forms the n x n matrix (leave block='auto'); got block={block!r}"
            )

    _blockwise = False  # whether the weights are `exp(logits) / norm` (`_log_norm`): blockwise
    _bounded = True  # whether every row of weights sums to at most 1 (no log scale needed)

    def _log_norm(self, self_logit, lse_rest, counts) -> Float[Array, " n"]:
        """`log norm_i` of the weights `A_ij = exp(logit_ij) / norm_i`, from token `i`'s own
        logit, the log-sum-exp of its other logits and the number of tokens it attends to
        (the kernels with `_blockwise`)."""
        raise NotImplementedError

    def _split(self, queries: Points, tokens: Points, block: int | None, offset=0) -> SelfSplit:
        """The output for the `queries` (rows `offset, offset + 1, ...` of `tokens`) attending
        to all `tokens`, token `i`'s own term apart (`SelfSplit`); blockwise with blocks of
        `block` tokens (`blockwise_attention`, one device's share when the tokens are sharded,
        `Sharded`), or from the `n x n` matrix when `block` is None (`queries = tokens`)."""
        values = tokens if self.V is None else tokens @ self.V.T
        own_values = None if self.V is None else queries @ self.V.T
        if not self._blockwise:  # weights from the matrix: Hardmax, Sinkhorn
            w = self._weights(self._logits(queries, tokens), self._mask(tokens))[1]
            own = jnp.diagonal(w)
            others = jnp.where(jnp.eye(w.shape[0], dtype=bool), 0, w)
            total = jnp.sum(others, axis=-1)
            rest = (others @ values) / jnp.where(total > 0, total, 1)[:, None]
            return SelfSplit(safe_log(own), own_values, safe_log(total), rest)
        q = self.beta * self._queries(queries)
        keys = self._keys(tokens)
        self_logit = jnp.sum(q * self._keys(queries), axis=-1)
        if block is None:  # the others: j != i, or j < i if causal
            n = tokens.shape[0]
            others = jnp.tri(n, k=-1, dtype=bool) if self.causal else ~jnp.eye(n, dtype=bool)
            lse, w = masked_softmax(q @ keys.T, others)
            rest = w @ values
        else:
            lse, rest = blockwise_attention(
                q, keys, values, causal=self.causal, block=block, offset=offset, skip_self=True
            )
        if self.causal:  # token i attends to i + 1 tokens
            counts = offset + jnp.arange(1, queries.shape[0] + 1, dtype=lse.dtype)
        else:
            counts = tokens.shape[0]
        norm = self._log_norm(self_logit, lse, counts)
        return SelfSplit(self_logit - norm, own_values, lse - norm, rest)

    def _projected(self, queries: Points, tokens: Points, block: int | None, offset=0):
        """`projected` for the `queries` among the `tokens` (see `_split`)."""
        split = self._split(queries, tokens, block, offset)
        values = queries if split.values is None else split.values
        log_scale, u = sum_scaled(
            [(split.self_log, values), (split.rest_log, split.rest)], self._bounded
        )
        tangents = [(split.rest_log, project(queries, split.rest))]
        if split.values is not None:  # `V x_i` has a tangent part; `x_i` itself has none
            tangents.append((split.self_log, project(queries, split.values)))
        return Projected(log_scale, u, *sum_scaled(tangents, self._bounded))

    def blockwise(self, queries: Points, tokens: Points, block: int, offset=0):
        """`scaled` for the `queries` (rows `offset, offset + 1, ...` of `tokens`) attending to
        all `tokens`, blockwise (`blockwise_attention`): one share of the output when the
        tokens are split (as one device's are), the whole output when `queries = tokens`."""
        return self._projected(queries, tokens, block, offset)[:2]

    def _resolved_block(self, n: int) -> int | None:
        return resolve_block(self.block, n) if self._blockwise else None

    @abc.abstractmethod
    def _weights(
        self, logits: Float[Array, "n n"], mask: Bool[Array, "n n"] | None
    ) -> tuple[LogScale, Float[Array, "n n"]]:
        """Attention weights `A_ij = exp(s_i) W_ij` from the logits `beta <Q x_i, K x_j>`, as
        `(s, W)` (`s = None` for 0); zero where the `mask` (if any) is False."""

    def _queries(self, x: Points) -> Points:
        return x if self.Q is None else x @ self.Q.T

    def _keys(self, x: Points) -> Points:
        return x if self.K is None else x @ self.K.T

    def _logits(self, queries: Points, tokens: Points) -> Float[Array, "nq n"]:
        return (self.beta * self._queries(queries)) @ self._keys(tokens).T

    def _mask(self, x: Points) -> Bool[Array, "n n"] | None:
        return jnp.tri(x.shape[0], dtype=bool) if self.causal else None

    def weights(self, x: Points) -> Float[Array, "n n"]:
        """The attention matrix `A` (shape `(n, n)`) for tokens `x`."""
        return apply_scale(*self._weights(self._logits(x, x), self._mask(x)))

    def projected(self, t: Scalar, x: Points) -> Projected:
        return self._projected(x, x, self._resolved_block(x.shape[0]))

    def scaled(self, t: Scalar, x: Points) -> tuple[LogScale, Points]:
        """The output alone, as `(None, A x)` from the `n x n` matrix for the kernels whose
        rows sum to at most 1, with `V = I`: the output needs no split of each token's own term
        (that is for its tangent part, `projected`), and the plain product costs about two
        thirds as much in a layer (`Layers`). Otherwise, and blockwise, from `projected` (with
        a general `V`, the split keeps the dense output within 1e-6 of the blockwise one in
        float32, which the plain product misses at `n = 333`, `beta = 10`)."""
        block = self._resolved_block(x.shape[0])
        if not self._bounded or block is not None or self.V is not None:
            return super().scaled(t, x)
        return None, self._weights(self._logits(x, x), self._mask(x))[1] @ x

    def centered(self, t: Scalar, x: Points) -> Points:
        """`sum_j A_ij V (x_j - x_i)`, each token pulled toward the tokens it attends to:
        `e^{b_i} (rest_i - V x_i)` (`SelfSplit`; token `i`'s own term is 0), without the
        rounding of `V x_i` against the whole output."""
        split = self._split(x, x, self._resolved_block(x.shape[0]))
        values = x if split.values is None else split.values
        return scale_by_exp(split.rest_log, split.rest - values)

    def check(self, x: Points) -> None:
        check_width(x, self.d, "attention")

    def in_span(self, basis):
        """With `V = I` (None) the output `sum_j A_ij x_j` stays in the span of the tokens, and
        the logits are `<Q B y_i, K B y_j> = <M y_i, y_j>` with `M = (K B)^T (Q B)`, `n x n`:
        the kernel in the basis has `Q -> M`, `K -> I`, so a step costs `O(n^3)` whatever `d`
        and `m` (kept the identity when `Q = K = I`: inner products are unchanged in
        orthonormal coordinates)."""
        if self.V is None and self.Q is None and self.K is None:
            return self
        if self.V is not None:
            return None
        lead = self.beta.shape  # stacked layers (PerLayer): one weight matrix per layer
        b = jnp.broadcast_to(basis.astype(self.beta.dtype), (*lead, *basis.shape))
        q, k = (b if a is None else a @ b for a in (self.Q, self.K))
        return _replaced(self, Q=jnp.swapaxes(k, -1, -2) @ q, K=None, d=basis.shape[1])


class Softmax(AbstractDotProductAttention):
    """Softmax attention: `A_ij = exp(beta <Q x_i, K x_j>) / Z_i`, `Z_i = sum_k exp(...)`.

    Log-sum-exp stable: `beta = 1e3` gives finite, correct weights. docs/science.md section 1.
    """

    _blockwise = True

    def _weights(self, logits, mask):
        return None, jax.nn.softmax(logits, axis=-1, where=mask)

    def _log_norm(self, self_logit, lse_rest, counts):
        return jnp.logaddexp(self_logit, lse_rest)  # log Z_i


class Unnormalized(AbstractDotProductAttention):
    """Unnormalized attention: `A_ij = exp(beta <Q x_i, K x_j>) / n` (USA, docs/science.md
    section 2); with `causal=True`, `/ (i + 1)`, the number of tokens token `i` attends to.

    The weights grow like `e^beta`. They are kept in log scale: token `i`'s own weight
    `e^{a_i}`, `a_i = beta <Q x_i, K x_i> - log n`, and the others' `e^{b_i} W_ij` with `W`
    softmax weights over `j != i` (`SelfSplit`), so:

    - the discrete layers (`PostLN.layer`, `Layers`) are exact and finite for any
      `beta` (tested up to `1e3` in float32 and float64);
    - the weights (`weights`, entry by entry) and the Post-LN velocity
      `e^{b_i} P_{x_i}(W V x)_i` (with `V = I`) are finite whenever their true value is
      representable: for unit tokens and `Q = K = I` the weights `e^{beta <x_i, x_j>} / n` are
      representable up to `beta` about 709 in float64 and 88 in float32. Beyond, they are
      `+-inf` (never NaN); so is the output where a token's own term overflows (its row is
      then of no use as a whole), and `simulate` refuses an ODE solver.
    """

    _blockwise = True
    _bounded = False

    def _weights(self, logits, mask):
        """`exp(logit_ij - log n_i)` entry by entry: each weight is finite whenever it is
        representable, whatever the others in its row."""
        if mask is None:
            return None, jnp.exp(logits - float(np.log(logits.shape[-1])))
        counts = jnp.sum(mask, axis=-1, keepdims=True, dtype=logits.dtype)
        return None, jnp.exp(jnp.where(mask, logits, -jnp.inf) - jnp.log(counts))

    def _log_norm(self, self_logit, lse_rest, counts):
        return jnp.broadcast_to(jnp.log(jnp.asarray(counts, self_logit.dtype)), self_logit.shape)


class Hardmax(AbstractDotProductAttention):
    """Hardmax attention, the `beta -> infinity` limit: token `i` averages `V x_j` over
    `C_i = argmax_j <Q x_i, K x_j>` (GLPR sections 9.4-9.6; docs/science.md section 2).

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
        return None, best / jnp.sum(best, axis=-1, keepdims=True)


class Sinkhorn(AbstractDotProductAttention):
    """Doubly stochastic attention (Sinkformers, docs/science.md section 2): `A` is the Sinkhorn
    scaling `A_ij = exp(beta <Q x_i, K x_j> + f_i + g_j)` with all row and column sums 1.

    Solved as entropic optimal transport between uniform marginals by ott-jax's log-domain
    Sinkhorn (stable for large `beta`, differentiable by implicit differentiation, jit- and
    vmap-able): row and column sums are 1 to `tol` (max absolute error) within `max_iter`
    iterations, else calling the kernel raises (an `EquinoxRuntimeError` under `jit`); with
    `throw=False` (as in sweeps, which record failures as data) the weights are NaN instead, so
    the run reports a non-finite state.

    `tol=None` (the default) is resolved from the dtype of the logits at call time: `1e-9` in
    float64, `100 eps` (about `1.2e-5`) in float32, the sums' resolution there. In float32 the
    sums are resolved to about `beta eps` only, so `beta` beyond about 50 needs a larger `tol`.
    Sinkhorn converges slowly when the weights are nearly block diagonal (well-separated
    clusters at large `beta`, e.g. 8 random tokens of `S^2` at `beta = 10`): raise `max_iter`.
    """

    tol: float | None = eqx.field(static=True)
    max_iter: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self, beta: Scalar, Q=None, K=None, V=None, *, tol=None, max_iter=1000, throw=True
    ):
        super().__init__(beta, Q, K, V)
        if tol is not None:
            tol = positive_number(tol, "tol", "the max abs error of the row and column sums")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
        self.tol, self.max_iter, self.throw = tol, max_iter, check_bool(throw, "throw")

    def _weights(self, logits, mask):
        from ott.geometry import geometry
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import implicit_differentiation, sinkhorn

        n = logits.shape[-1]
        tol = max(1e-9, 100 * float(jnp.finfo(logits.dtype).eps)) if self.tol is None else self.tol
        problem = linear_problem.LinearProblem(geometry.Geometry(cost_matrix=-logits, epsilon=1.0))
        # ott's threshold bounds the 2-norm of the error of the column marginal of the plan
        # (entries 1 / n; its rows are exact after the last update): below tol / n, every
        # column sum of `n * plan` is within tol of 1.
        # Reverse mode (implicit differentiation): the linear system is singular along the
        # constant shift of the potentials; a ridge on the kernel block (valid for balanced
        # problems) keeps it solvable in float32, where the default solve returns NaN.
        implicit = implicit_differentiation.ImplicitDiff(solver_kwargs={"ridge_kernel": 1.0})
        solver = sinkhorn.Sinkhorn(
            threshold=tol / n, norm_error=2, max_iterations=self.max_iter, implicit_diff=implicit
        )
        out = solver(problem)
        if not self.throw:
            return None, jnp.where(out.converged, n * out.matrix, jnp.nan)
        return None, eqx.error_if(
            n * out.matrix,
            ~out.converged,
            f"Sinkhorn attention did not converge to tol = {tol:g} within "
            f"max_iter = {self.max_iter} iterations; raise max_iter or tol",
        )


class MultiHead(FromProjected):
    """The sum of several attention heads, each with its own weights and partition function.

    `MultiHead((Softmax(beta, Q1, K1, V1), Softmax(beta, Q2, K2, V2)))`. `H` identical heads
    with `V / H` equal one head (docs/science.md section 2).
    """

    heads: tuple[AbstractAttention, ...]

    def __init__(self, heads: Sequence[AbstractAttention]):
        heads = tuple(heads)
        if not heads or not all(isinstance(h, AbstractAttention) for h in heads):
            raise ValueError(
                f"heads must be a non-empty sequence of attention kernels; got {heads!r:.80}"
            )
        self.heads = heads

    def projected(self, t: Scalar, x: Points) -> Projected:
        """The heads' outputs summed in log scale, `s = max_h s_h` (heads without one count as
        `s_h = 0`), and their tangent parts the same way (`sum_scaled`)."""
        parts = [head.projected(t, x) for head in self.heads]
        log_scale, u = sum_scaled([(part.log_scale, part.output) for part in parts])
        tangent = sum_scaled([(part.tangent_log_scale, part.tangent) for part in parts])
        return Projected(log_scale, u, *tangent)

    def check(self, x: Points) -> None:
        for head in self.heads:
            head.check(x)

    def in_span(self, basis):
        heads = [head.in_span(basis) for head in self.heads]
        return None if any(head is None for head in heads) else MultiHead(heads)


class PerLayer(FromProjected):
    """Time-dependent weights, piecewise constant in `t`: one kernel per layer.

    Layer `k` (0-based) acts for `t` in `[k h, (k + 1) h)`; times before 0 use the first
    layer and times after `L h` the last. This is a trained model's "one weight set per layer"
    (docs/science.md section 2). All layers must be kernels of the same kind and shapes; they are
    stored stacked, so a deep model compiles once.
    """

    layers: AbstractAttention
    h: float = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)

    def __init__(self, layers: Sequence[AbstractAttention], h: float):
        layers = tuple(layers)
        if not layers or not all(isinstance(layer, AbstractAttention) for layer in layers):
            raise ValueError("layers must be a non-empty sequence of attention kernels")
        h = positive_number(h, "h", "the layer duration")
        structures = {jax.tree.structure(layer) for layer in layers}
        if len(structures) != 1:
            raise ValueError(
                "layers must all be kernels of the same kind with the same weight shapes; "
                f"got {len(structures)} different structures"
            )
        self.layers = jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)
        self.h, self.num_layers = h, len(layers)

    def layer(self, t: Scalar) -> AbstractAttention:
        """The kernel in force at time `t`."""
        k = jnp.floor(t / self.h)
        # `t / h` may round to just below `k` at the layer time `t = k * h` itself.
        k = jnp.where(t >= (k + 1) * self.h, k + 1, k)
        k = jnp.clip(k, 0, self.num_layers - 1).astype(int)
        return jax.tree.map(lambda leaf: leaf[k], self.layers)

    def projected(self, t: Scalar, x: Points) -> Projected:
        return self.layer(t).projected(t, x)

    def check(self, x: Points) -> None:
        self.layers.check(x)

    def in_span(self, basis):
        layers = self.layers.in_span(basis)
        return None if layers is None else _replaced(self, layers=layers)
