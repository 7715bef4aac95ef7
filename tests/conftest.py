import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

# Property-based tests: the same examples on every run by default (CI), so that a failure is
# reproducible and the suite's time is fixed; `--hypothesis-profile=explore` searches anew with
# many more examples.
settings.register_profile("default", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("explore", max_examples=1000, deadline=None)
settings.load_profile("default")


LONG_CHECKS = Path(__file__).with_name("long_checks.txt")


def long_checks() -> set[str]:
    """The node ids listed in `long_checks.txt`."""
    lines = LONG_CHECKS.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Mark the long checks of `long_checks.txt` `slow`: out of the default run, in `-m slow`."""
    listed = long_checks()
    for item in items:
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)


def _memory_mappings() -> int:
    """How many memory mappings this process holds (Linux); a large number elsewhere."""
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return 1 << 30


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drop the compiled programs after a test module once they are many. XLA keeps every
    executable mapped in memory (about 3 mappings each) while JAX's caches (and the sweep
    engine's) hold it; the whole suite compiles tens of thousands, past Linux's default
    `vm.max_map_count` (65530), where the compiler segfaults. Releasing them past 20000
    mappings keeps the count low and recompiles little."""
    yield
    if _memory_mappings() > 20_000:
        import attnflow as af

        af.sweep.clear_cache()
        jax.clear_caches()


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key at each call, deterministic per test."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter))


@pytest.fixture(params=[jnp.float32, jnp.float64], ids=["float32", "float64"])
def dtype(request):
    """The float dtype of a test's inputs: float32 (JAX's default) and float64."""
    return request.param


def tol(dtype) -> float:
    """The tolerance of a result computed in `dtype`: `sqrt(eps)` (float32 `3.5e-4`, float64
    `1.5e-8`), half the digits, as `attnflow.sphere.on_sphere` uses. Scale it by the size of
    the quantity or the number of operations where a test needs to."""
    return float(np.finfo(jnp.dtype(dtype)).eps) ** 0.5


def ode_tol(dtype) -> float:
    """`rtol = atol` for ODE solves in `dtype` that are compared against float64 references:
    `eps^(3/4)` (float32 `6.4e-6`, float64 `1.8e-12`), a few hundred times above the rounding
    of one step (so the solve can meet it) and far below `tol(dtype)` (so it is negligible)."""
    return tol(dtype) ** 1.5
