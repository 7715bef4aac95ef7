"""The one way an old spelling keeps working for a release: a `DeprecationWarning` naming the
new one (listed in CHANGELOG.md)."""

import functools
import sys
import warnings
from collections.abc import Callable


def deprecated(old: str, new: str) -> None:
    """Warn that `old` is deprecated in favour of `new`, at the line of the user's code that
    spelled it: the first frame outside attnflow, however deep inside the package the old
    spelling was read. So Python's default filters show it when that line is a script's
    (`__main__`, as for the installed `attnflow` command)."""
    package = __name__.partition(".")[0]
    frame, level = sys._getframe(1), 2  # the caller, at `stacklevel=2`
    while (
        frame.f_back is not None
        and frame.f_globals.get("__name__", "").partition(".")[0] == package
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=level,
    )


def keyword_key(function: Callable | None = None, *, positional: int = 0) -> Callable:
    """`function(<positional> arguments, *, key, ...)` that still accepts the key before them,
    the old spelling, for a release (with a `DeprecationWarning`)."""
    if function is None:
        return functools.partial(keyword_key, positional=positional)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if len(args) > positional:
            if len(args) > positional + 1 or "key" in kwargs:
                takes = f"{positional} positional arguments and" if positional else "only"
                raise TypeError(
                    f"{function.__name__}() takes {takes} keyword arguments (key=..., ...); "
                    f"got {len(args)} positional"
                )
            new = "..., key=key" if positional else "key=key, ..."
            deprecated(
                f"{function.__name__}(key, ...) with a positional key",
                f"{function.__name__}({new})",
            )
            kwargs["key"], args = args[0], args[1:]
        return function(*args, **kwargs)

    return wrapper


def default_key(key, name: str, legacy):
    """`key`, or for the deprecated call without one the former default `legacy` (a
    `DeprecationWarning` asks for the key)."""
    if key is None:
        deprecated(f"{name} without key=", f"{name}(..., key=jax.random.key(seed))")
        return legacy
    return key
