"""Jacobians of vector fields, and their restriction to the tangent bundle of `(S^{d-1})^n`.

A sphere field `f` (`AbstractSphereField`, state `(n, d)`) has `<x_i, f_i(x)> = 0` for every
`x`, so its flow keeps each `|x_i|`: the normal directions `x_i` carry a neutral mode of no
dynamical meaning. Linear stability is therefore taken on the tangent space
`T_x = {v : <x_i, v_i> = 0 for every i}`, of dimension `n (d - 1)`, through an orthonormal basis
`B` of it (`tangent_basis`): the tangent Jacobian is `B^T J B`. At an equilibrium `J` maps into
`T_x` (differentiate `<x_i, f_i(x)> = 0`), so the eigenvalues of `B^T J B` are exactly those of
`J` on `T_x`.
"""

import jax
import jax.numpy as jnp

from .._checks import as_float_array, check_finite
from ..fields import AbstractField


def check_state(field, x, name: str, t=0.0, args=None) -> jax.Array:
    """`x` as a float array, checked finite (and on the sphere, by `field.check`, for attnflow
    fields), with `field(t, x, args)` an array of `x`'s shape; `ValueError` naming `name`."""
    x = as_float_array(x, name)
    if isinstance(field, AbstractField):
        try:
            x = field.check(x)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    else:
        x = check_finite(x, name)
    if x.ndim == 0:
        raise ValueError(f"{name} must be an array with at least one entry; got a scalar")
    out = jax.eval_shape(lambda y: field(t, y, args), x)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != x.shape:
        got = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(f"field must return an array of {name}'s shape {x.shape}; got {got}")
    return x


def token_tangent_basis(x: jax.Array) -> jax.Array:
    """An orthonormal basis of `x^perp` in `R^d`, shape `(d, d - 1)`, for `x != 0`.

    The last `d - 1` columns of the Householder reflection that maps `x / |x|` to `-s e_0`,
    `s = sign(x_0)` (`+1` at 0): smooth in `x` away from `x_0 = 0`, and well conditioned.
    """
    u = x / jnp.linalg.norm(x)
    s = jnp.where(u[0] >= 0, 1.0, -1.0).astype(u.dtype)
    u = u.at[0].add(s)
    householder = jnp.eye(x.shape[0], dtype=x.dtype) - 2 * jnp.outer(u, u) / jnp.dot(u, u)
    return householder[:, 1:]


def tangent_basis(x: jax.Array) -> jax.Array:
    """An orthonormal basis of the tangent space of `(S^{d-1})^n` at `x` (shape `(n, d)`).

    Returns a matrix of shape `(n d, n (d - 1))`: column `i (d - 1) + a` is the `a`-th tangent
    direction of token `i`, zero on the other tokens (rows are `x.reshape(-1)`'s entries).
    """
    n, d = x.shape
    blocks = jax.vmap(token_tangent_basis)(x)  # (n, d, d - 1)
    eye = jnp.eye(n, dtype=x.dtype)
    return jnp.einsum("iab,ij->iajb", blocks, eye).reshape(n * d, n * (d - 1))


def value_and_jvps(f, y, ws):
    """`(f(y), J w for each w in ws)`: the value of `f` at `y` and its Jacobian-vector products
    with the stacked tangents `ws` (shape `(k, *y.shape)`).

    By `jax.linearize` and a `vmap` of its `jvp` (forward mode). A function that only has a
    reverse-mode rule (a `jax.custom_vjp`, such as `Sinkhorn` attention through ott-jax's implicit
    differentiation) cannot be differentiated in forward mode; for it the full Jacobian is built
    by `jax.jacrev` (`y.size` vector-Jacobian products) and multiplied with the tangents.
    """
    try:
        value, jvp = jax.linearize(f, y)
        return value, jax.vmap(jvp)(ws)
    except TypeError as err:
        if "custom_vjp" not in str(err):
            raise
    matrix = jax.jacrev(lambda z: f(z.reshape(y.shape)).reshape(-1))(y.reshape(-1))
    return f(y), (ws.reshape(len(ws), -1) @ matrix.T).reshape(ws.shape)


def jacobian(field, x, t=0.0, args=None) -> jax.Array:
    """The Jacobian of `field(t, ., args)` at `x`, by `jax.jacfwd` (`jax.jacrev` for fields
    with only a reverse-mode rule, see `value_and_jvps`), as a `(x.size, x.size)` matrix (rows
    and columns are `x.reshape(-1)`'s entries). `x` is checked as `classify_fixed_point` checks
    it (finite, on the sphere for attnflow's sphere fields, of the field's shape)."""
    x = check_state(field, x, "x", t, args)
    flat = lambda y: field(t, y.reshape(x.shape), args).reshape(-1)  # noqa: E731
    try:
        return jax.jacfwd(flat)(x.reshape(-1))
    except TypeError as err:
        if "custom_vjp" not in str(err):
            raise
    return jax.jacrev(flat)(x.reshape(-1))


def tangent_jacobian(field, x, t=0.0, args=None) -> tuple[jax.Array, jax.Array]:
    """`(B^T J B, B)`: the Jacobian restricted to the tangent space of `(S^{d-1})^n` at `x`, in
    the orthonormal basis `B = tangent_basis(x)`; `J v` is computed for the columns `v` of `B`
    only (`value_and_jvps`: `jax.jvp`), never the full `J`. `x` is checked as in `jacobian`."""
    x = check_state(field, x, "x", t, args)
    basis = tangent_basis(x)
    columns = basis.T.reshape(-1, *x.shape)
    _, image = value_and_jvps(lambda y: field(t, y, args), x, columns)
    return basis.T @ image.reshape(len(columns), -1).T, basis
