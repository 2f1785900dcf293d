"""transformers_jax: not built yet (see the issue tracker)."""

__all__: list[str] = []
