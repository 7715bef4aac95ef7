"""jaxtyping aliases shared across attnflow."""

from jaxtyping import Array, ArrayLike, Bool, Float

Points = Float[Array, "n d"]
"""Tokens as rows: `n` points of `R^d` (on the sphere `S^{d-1}` for sphere fields)."""

Angles = Float[Array, " n"]
"""Tokens on the circle as angles `theta_i`."""

Scalar = Float[ArrayLike, ""]
"""A real scalar: Python float or 0-d array (`beta`, `t`, `h`)."""

__all__ = ["Angles", "Array", "ArrayLike", "Bool", "Float", "Points", "Scalar"]
