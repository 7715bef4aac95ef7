"""attnflow: transformers as interacting particle systems on the sphere, in JAX.

Tokens are particles, depth is time, self-attention is the interaction. See the README and the
documentation site, `docs/` (`docs/science.md` for the models).
"""

import ast
import importlib
import pathlib

from ._version import __version__ as __version__


def _homes() -> dict[str, str | None]:
    """Each name of `__init__.pyi` (the re-exports, as type checkers see them) and the module it
    comes from (`None`: the name is a subpackage)."""
    stub = ast.parse(pathlib.Path(__file__).with_suffix(".pyi").read_text())
    return {
        alias.asname or alias.name: node.module
        for node in stub.body
        if isinstance(node, ast.ImportFrom) and node.module != "_version"
        for alias in node.names
    }


# Loaded on first use (PEP 562), so that `import attnflow` and the command line's `--help` do
# not import JAX: each name is taken from its subpackage when first asked for.
_HOMES = _homes()
__all__ = ["__version__", *_HOMES]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = _HOMES[name]
    if home is None:
        return importlib.import_module(f".{name}", __name__)
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # found here directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
