"""The one way an old spelling keeps working for a release: a `DeprecationWarning` naming the
new one (listed in CHANGELOG.md)."""

import functools
import warnings
from collections.abc import Callable


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that `old` is deprecated in favour of `new` (the caller's caller by default)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def keyword_key(function: Callable) -> Callable:
    """`function(*, key, ...)` that still accepts the key as its first positional argument, the
    old spelling, for a release (with a `DeprecationWarning`)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if args:
            if len(args) > 1 or "key" in kwargs:
                raise TypeError(
                    f"{function.__name__}() takes only keyword arguments (key=..., ...); "
                    f"got {len(args)} positional"
                )
            deprecated(
                f"{function.__name__}(key, ...) with a positional key",
                f"{function.__name__}(key=key, ...)",
            )
            kwargs["key"] = args[0]
        return function(**kwargs)

    return wrapper


def default_key(key, name: str, legacy):
    """`key`, or for the deprecated call without one the former default `legacy` (a
    `DeprecationWarning` asks for the key)."""
    if key is None:
        deprecated(f"{name} without key=", f"{name}(..., key=jax.random.key(seed))", 4)
        return legacy
    return key
