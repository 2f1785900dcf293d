"""Strict JAX settings for every test, plus an explicit-key fixture."""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


class _GetKey:
    """Hands out fresh PRNG keys from one seed, so tests never share or reuse a key."""

    def __init__(self, seed: int):
        self._key = jax.random.key(seed)

    def __call__(self):
        self._key, sub = jax.random.split(self._key)
        return sub


@pytest.fixture
def getkey():
    return _GetKey(0)
