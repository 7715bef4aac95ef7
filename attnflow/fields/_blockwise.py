"""Softmax attention without the `n x n` matrix: blocks of keys with an online log-sum-exp.

`blockwise_attention(q, k, v)`: queries are taken in blocks of `block` rows, and for each query
block the keys are scanned in blocks of `block` with a running maximum, partition function and
output (Milakov and Gimelshein 2018; Rabe and Staats 2021; FlashAttention, Dao et al. 2022).

Derivatives have a rule of their own (`jax.custom_jvp`): the tangent is a second blockwise pass,

    d lse_i = sum_j p_ij ds_ij,    d out_i = sum_j p_ij (dv_j + ds_ij (v_j - out_i)),

with `p_ij = exp(s_ij - lse_i)` recomputed block by block from the primal `lse`, and
`ds_ij = <dq_i, k_j> + <q_i, dk_j>`. Forward mode (`jax.jvp`, `jax.jacfwd`, Lyapunov tangents)
runs it as it is; reverse mode (`jax.grad`) is JAX's transpose of this linear pass, whose block
step is rematerialized (`jax.checkpoint`) so that the transposed scan recomputes each `p` block
instead of storing it: gradients also stay in `O(n (m + d) + block^2)` memory.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

BLOCK = 512  # rows of a query block and of a key block
THRESHOLD = 2048  # `block="auto"` goes blockwise above this many tokens (benchmarks/roofline.py)


def resolve_block(block, n: int) -> int | None:
    """The block size for `n` tokens under the option `block`: `None` for the dense matrix.

    `"auto"`: `BLOCK` when `n > THRESHOLD`, dense otherwise; `None`: dense; an int: that size
    (capped at `n`, so a small system is one block)."""
    if block == "auto":
        block = BLOCK if n > THRESHOLD else None
    return None if block is None else min(block, n)


def check_block_size(block) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int; got {block!r}")
    return block


def check_block(block):
    if block == "auto" or block is None:
        return block
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(
            f"block must be 'auto' (blockwise above {THRESHOLD} tokens), None (the dense n x n "
            f"matrix) or a positive int (the block size); got {block!r}"
        )
    return block


def _padded(a: Array, block: int) -> Array:
    """`a` with zero rows appended up to a multiple of `block` rows."""
    rows = -(-a.shape[0] // block) * block
    return jnp.pad(a, [(0, rows - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


def _rows(a: Array, i, block: int) -> Array:
    return jax.lax.dynamic_slice_in_dim(a, i * block, block)


def _block_logits(qi, kj, i, j, n: int, mask: tuple[bool, bool], block: int, offset) -> Array:
    """Logits `<q_r, k_c>` of query block `i` against key block `j`, `-inf` where key `c` is
    padding or, with `mask = (causal, skip_self)`, where `c > r` (causal) or `c = r`
    (skip_self), query `r` being token `offset + r`."""
    causal, skip_self = mask
    rows = offset + i * block + jnp.arange(block)
    cols = j * block + jnp.arange(block)
    allowed = (cols < n)[None, :]
    if causal:
        allowed = allowed & (cols[None, :] <= rows[:, None])
    if skip_self:
        allowed = allowed & (cols[None, :] != rows[:, None])
    return jnp.where(allowed, qi @ kj.T, -jnp.inf)


def _scan_keys(step, start, key_blocks: int, i, offset, mask: tuple[bool, bool], block: int):
    """The carry of `step(carry, j)` over the key blocks `j`, from `start`. Causal: the blocks
    that lie wholly above the diagonal of query block `i` are skipped (the carry unchanged),
    half the work of a causal pass, not masked blocks computed and thrown away (a `lax.cond`;
    under `vmap` both branches run)."""
    last_row = offset + (i + 1) * block - 1

    def skipping(carry, j):
        return jax.lax.cond(j * block <= last_row, step, lambda c, j: (c, None), carry, j)

    return jax.lax.scan(skipping if mask[0] else step, start, jnp.arange(key_blocks))[0]


def _by_query_blocks(query_block, blocks: int, m: int, d: int):
    """`query_block(i) -> (lse, out)` for each block of queries, joined and trimmed to `m`."""
    lse, out = jax.lax.map(query_block, jnp.arange(blocks))
    return lse.reshape(-1)[:m], out.reshape(-1, d)[:m]


def _forward(q, k, v, offset, mask: tuple[bool, bool], block: int):
    n, dtype = k.shape[0], q.dtype
    qp, kp, vp = (_padded(a, block) for a in (q, k, v))
    blocks, key_blocks = qp.shape[0] // block, kp.shape[0] // block

    def query_block(i):
        qi = _rows(qp, i, block)

        def step(carry, j):
            top, total, acc = carry
            s = _block_logits(qi, _rows(kp, j, block), i, j, n, mask, block, offset)
            new_top = jnp.maximum(top, jnp.max(s, axis=-1))
            rescale = jnp.exp(top - new_top)
            p = jnp.exp(s - new_top[:, None])  # masked logits give exactly 0
            total = total * rescale + jnp.sum(p, axis=-1)
            acc = acc * rescale[:, None] + p @ _rows(vp, j, block)
            return (new_top, total, acc), None

        # The finite lowest value, not -inf: a fully masked block rescales by exp(0) = 1.
        start = (
            jnp.full((block,), jnp.finfo(dtype).min, dtype),
            jnp.zeros((block,), dtype),
            jnp.zeros((block, v.shape[1]), dtype),
        )
        top, total, acc = _scan_keys(step, start, key_blocks, i, offset, mask, block)
        # A row with no key allowed (its own key skipped, or a negative offset) attends to
        # nothing: lse -inf, output 0.
        nothing = total == 0
        out = acc / jnp.where(nothing, 1, total)[:, None]
        return jnp.where(nothing, -jnp.inf, top + jnp.log(total)), out

    return _by_query_blocks(query_block, blocks, q.shape[0], v.shape[1])


def _tangent(q, k, v, offset, lse, out, dq, dk, dv, mask: tuple[bool, bool], block: int):
    """`(d lse, d out)`: linear in `(dq, dk, dv)`, one more blockwise pass (module docstring)."""
    n, dtype = k.shape[0], q.dtype
    padded = (_padded(a, block) for a in (q, k, v, dq, dk, dv, out, lse))
    qp, kp, vp, dqp, dkp, dvp, outp, lsep = padded
    blocks, key_blocks = qp.shape[0] // block, kp.shape[0] // block

    def query_block(i):
        qi, dqi, outi, lsei = (_rows(a, i, block) for a in (qp, dqp, outp, lsep))
        lsei = jnp.where(jnp.isneginf(lsei), 0, lsei)  # a row attending to nothing: p = 0

        @jax.checkpoint  # the transpose (reverse mode) recomputes p, never stores it
        def step(carry, j):
            dlse, dout = carry
            kj, dkj, vj, dvj = (_rows(a, j, block) for a in (kp, dkp, vp, dvp))
            p = jnp.exp(_block_logits(qi, kj, i, j, n, mask, block, offset) - lsei[:, None])
            pds = p * (dqi @ kj.T + qi @ dkj.T)
            row = jnp.sum(pds, axis=-1)
            return (dlse + row, dout + p @ dvj + pds @ vj - row[:, None] * outi), None

        start = (jnp.zeros((block,), dtype), jnp.zeros((block, v.shape[1]), dtype))
        return _scan_keys(step, start, key_blocks, i, offset, mask, block)

    return _by_query_blocks(query_block, blocks, q.shape[0], v.shape[1])


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def _attention(q, k, v, offset, mask: tuple[bool, bool], block: int):
    return _forward(q, k, v, offset, mask, block)


@_attention.defjvp
def _attention_jvp(mask, block, primals, tangents):
    q, k, v, offset = primals
    dq, dk, dv, _ = tangents  # the offset is an integer: no tangent
    lse, out = _attention(q, k, v, offset, mask, block)
    return (lse, out), _tangent(q, k, v, offset, lse, out, dq, dk, dv, mask, block)


def blockwise_attention(
    q: Float[Array, "nq m"],
    k: Float[Array, "n m"],
    v: Float[Array, "n d"],
    *,
    causal: bool = False,
    block: int = BLOCK,
    offset=0,
    skip_self: bool = False,
) -> tuple[Float[Array, " nq"], Float[Array, "nq d"]]:
    """`(lse, out)` with `lse_i = log sum_j exp(<q_i, k_j>)` and `out_i = sum_j
    exp(<q_i, k_j> - lse_i) v_j`, over all `j` (`j <= offset + i` if `causal`; `j != offset + i`
    if `skip_self`), without forming the `nq x n` logits: memory `O(n (m + d) + block^2)`,
    derivatives included (module docstring). A query with no key to attend to (the first token
    with `causal` and `skip_self`, or a single token with `skip_self`) gets `lse = -inf` and
    `out = 0`.

    Queries carry any temperature (`q = beta Q x`). The three arrays share one floating dtype
    (promoted if not). `offset` (an int, traced or not): the index among the keys of the first
    query, for the causal mask when the queries are a slice of the tokens (one device's share).
    `skip_self` leaves out each query's own key (key `offset + i` for query `i`): the attention
    of a token to the others, whose weights next to its own can be far below the rounding of
    the whole output (`AbstractDotProductAttention`).
    """
    q, k, v = (jnp.asarray(a) for a in (q, k, v))
    block = check_block_size(block)
    if isinstance(offset, int) and offset < 0:
        raise ValueError(f"offset must be >= 0 (the index of the first query); got {offset}")
    for flag, name in ((causal, "causal"), (skip_self, "skip_self")):
        if not isinstance(flag, bool | np.bool_):
            raise ValueError(f"{name} must be True or False; got {flag!r}")
    causal, skip_self = bool(causal), bool(skip_self)
    if q.ndim != 2 or k.ndim != 2 or v.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(
            f"q, k, v must have shapes (nq, m), (n, m), (n, d); got {q.shape}, {k.shape}, {v.shape}"
        )
    if k.shape[0] != v.shape[0]:
        raise ValueError(f"k and v must have as many rows; got {k.shape[0]} and {v.shape[0]}")
    dtype = jnp.result_type(q, k, v)
    q, k, v = (jnp.asarray(a, dtype) for a in (q, k, v))
    block = min(block, max(q.shape[0], k.shape[0]))
    return _attention(q, k, v, jnp.asarray(offset, jnp.int32), (causal, skip_self), block)
