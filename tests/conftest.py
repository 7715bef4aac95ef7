import itertools

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key at each call, deterministic per test."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter))
