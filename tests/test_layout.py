"""The package's layout: each subpackage reaches another only through its public names.

Parsed with `ast`, not imported: a private name (`_x`, dunders aside) is never imported
across subpackages, no module imports from inside another subpackage (`from ..x._y import`),
and no subpackage imports the package root, whose names are a re-export for users. Shared
helpers live in top-level private modules (`attnflow/_checks.py`, ...) under public names.
The command line (`attnflow.cli`) is a client of the public API, as a user is: it may import
the root.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "attnflow"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(path: pathlib.Path, text: str):
    """`(line, target module parts, imported names)` of each `from ... import` in `path`,
    with relative targets resolved against the package."""
    here = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = here if path.name == "__init__.py" else here[:-1]
    if path.name == "__init__.py":
        package = here[:-1]
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif (node.module or "").split(".")[0] == "attnflow":
                target = node.module.split(".")
            else:
                continue
            yield node.lineno, target, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "attnflow":
                    yield node.lineno, alias.name.split("."), []


def _owner(parts: list[str]) -> str:
    """The subpackage a module belongs to (`attnflow.fields._field` -> `fields`), or `""` for
    the root and its top-level modules."""
    if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return ""


def _violations(path: pathlib.Path, text: str | None = None) -> list[str]:
    mine = _owner(list(path.relative_to(PACKAGE.parent).with_suffix("").parts))
    found = []
    text = path.read_text() if text is None else text
    for line, target, names in _imports(path, text):
        where = f"{path.relative_to(PACKAGE.parent)}:{line}"
        theirs = _owner(target)
        if target == ["attnflow"] and mine not in ("", "cli"):
            if not all(
                (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").exists() for name in names
            ):
                found.append(f"{where} imports the package root ({names})")
            elif mine:
                found.append(f"{where} imports subpackages through the root ({names})")
            continue
        if theirs == mine:
            continue
        inside = target[2:] if theirs else []
        if any(_private(part) for part in inside):
            found.append(f"{where} imports from inside {'.'.join(target)}")
        private = [name for name in names if _private(name)]
        if private:
            found.append(f"{where} imports private names {private} from {'.'.join(target)}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_through_public_names(path):
    assert _violations(path) == []


def test_the_check_sees_a_violation():
    """The rule is not vacuous: the imports that the layout forbids are reported."""
    text = (
        "from .._checks import check_times\n"
        "from ..fields._field import check_finite\n"
        "from ..integrate import _core\n"
        "from .. import __version__\n"
        "from ..sphere import uniform\n"
    )
    found = _violations(PACKAGE / "studies" / "_probe.py", text)
    assert len(found) == 3, found
    assert "inside attnflow.fields._field" in found[0]
    assert "private names ['_core']" in found[1]
    assert "package root" in found[2]


TESTS = pathlib.Path(__file__).resolve().parent
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
# What no single subpackage owns: the documentation, the notebooks, this layout, the public API
# in float32 across every subpackage, and the built package.
ACROSS = {
    "test_docs.py",
    "test_notebooks.py",
    "test_layout.py",
    "test_float32.py",
    "test_release.py",
}


def _mirrors(name: str) -> bool:
    """`test_<subpackage>.py` or `test_<subpackage>_<topic>.py`, or a test across them."""
    stem = name.removesuffix(".py").removeprefix("test_")
    return name in ACROSS or any(stem == s or stem.startswith(f"{s}_") for s in SUBPACKAGES)


def test_tests_mirror_the_package():
    """Each test file is named after the subpackage it tests, so `tests/test_fields*.py` holds
    every test of `attnflow.fields`."""
    strays = [p.name for p in sorted(TESTS.glob("test_*.py")) if not _mirrors(p.name)]
    assert strays == [], f"name these test_<subpackage>[_<topic>].py: {strays}"
    assert not _mirrors("test_blockwise.py") and _mirrors("test_fields_blockwise.py")


def test_the_root_imports_its_names_on_first_use():
    """`import attnflow` is quick (no JAX); each re-exported name is its subpackage's."""
    import importlib
    import subprocess
    import sys

    probe = "import sys, attnflow; print('jax' in sys.modules, attnflow.SA.__module__)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["False", "attnflow.fields._field"], done.stderr
    import attnflow

    assert len(attnflow._HOMES) == 46 and attnflow._HOMES["fields"] is None
    for name, home in attnflow._HOMES.items():
        module = importlib.import_module(f"attnflow.{home or name}")
        assert getattr(attnflow, name) is (module if home is None else getattr(module, name))
    assert set(attnflow.__all__) <= set(dir(attnflow))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        attnflow.nonexistent  # noqa: B018


def test_every_long_check_names_a_test():
    """Each node id of `tests/long_checks.txt` (marked `slow` by conftest) names a test
    function of an existing file, so a renamed test never drops back into the default run
    unnoticed, nor leaves a stale line behind."""
    from conftest import long_checks

    listed = long_checks()
    assert len(listed) > 100
    for node in sorted(listed):
        path, *names = node.split("::")
        source = (PACKAGE.parent / path).read_text() if (PACKAGE.parent / path).is_file() else ""
        function = names[-1].split("[")[0]
        assert f"def {function}(" in source, f"{node}: no test {function} in {path}"
