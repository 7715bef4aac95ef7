"""The one way an old spelling keeps working for a release: a `DeprecationWarning` naming the
new one (listed in CHANGELOG.md)."""

import warnings


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that `old` is deprecated in favour of `new` (the caller's caller by default)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
