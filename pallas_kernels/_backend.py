"""Backend selection and tile sizes shared by the kernels in `pallas_kernels`.

Every kernel here takes ``backend: Backend``:

- ``"xla"``: the pure-jnp ``*_reference`` (the spec), compiled by XLA on any platform.
- ``"pallas"``: the compiled Pallas kernel (Triton on GPU). Needs a GPU or TPU.
- ``"interpret"``: the same Pallas kernel body run by Pallas' HLO interpreter; works everywhere
  and is what the CPU tests use.
- ``"auto"``: each kernel's own rule, chosen from measurements (see the kernel files).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import jax
from jax.experimental.pallas import triton as pltriton

Backend = Literal["auto", "xla", "pallas", "interpret"]
Resolved = Literal["xla", "pallas", "interpret"]

BACKENDS: tuple[str, ...] = get_args(Backend)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BlockSizes:
    """Tile sizes of a matmul kernel: ``[block_m, block_k] @ [block_k, block_n]``.

    Tiles are clamped to the array, and shapes that do not divide are padded by the wrapper,
    so any positive sizes are valid. For 4-bit weights ``block_n`` counts *packed* columns: one
    tile produces ``block_n`` output columns in each half of the output. On GPU the compiled
    kernel rounds tiles to powers of two of at least 16 (Triton's requirement).

    Frozen, so it can be a static argument of `jax.jit`.

    Attributes:
        block_m: rows of ``x`` per tile.
        block_n: (packed) weight columns per tile.
        block_k: contraction length per step of the in-kernel loop.
    """

    block_m: int
    block_n: int
    block_k: int

    def __post_init__(self):
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BlockSizes.{name} must be a positive int, got {value!r}")

    @classmethod
    def get_default(cls, platform: str | None = None) -> BlockSizes:
        """Default tiles for ``platform`` (``jax.default_backend()`` when None).

        On CPU (interpret mode) each grid step costs a copy of its blocks, so the output is one
        tile (splitting N into 512- or 1024-wide tiles was slower) and only the contraction is
        split, into cache-sized steps: in ``benchmarks/kernels_cpu.py`` 512 was the fastest or
        within noise of it among 128/256/512/1024, and a single 4096-long step was ~10x slower.
        On GPU these are ordinary Triton tiles.
        """
        platform = jax.default_backend() if platform is None else platform
        if platform == "cpu":
            return cls(block_m=1 << 16, block_n=1 << 16, block_k=512)
        return cls(block_m=64, block_n=64, block_k=64)


def check_backend(backend: object) -> Backend:
    """Return ``backend`` if it is one of `BACKENDS`, else raise a ValueError naming it."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend  # type: ignore[return-value]


def resolve_backend(
    backend: object, *, pallas_supported: bool, cpu_auto: Resolved = "xla"
) -> Resolved:
    """Validate ``backend`` and turn ``"auto"`` into a concrete backend.

    Args:
        backend: the user's ``backend`` argument.
        pallas_supported: whether the compiled kernel handles these shapes and dtypes.
        cpu_auto: what ``"auto"`` means on CPU; each kernel passes its measured winner.

    Returns:
        ``"xla"``, ``"pallas"`` or ``"interpret"``.

    Raises:
        ValueError: unknown backend; ``"pallas"`` on CPU; ``"pallas"`` for unsupported shapes.
    """
    backend = check_backend(backend)
    platform = jax.default_backend()
    if backend == "auto":
        if platform == "cpu":
            return cpu_auto
        # Only the GPU (Triton) lowering has been written for; the TPU (Mosaic) layout rules
        # (last two tile dims multiples of 8 and 128) are not checked here, so TPU stays on XLA.
        if platform == "gpu" and pallas_supported:
            return "pallas"
        return "xla"
    if backend == "pallas":
        if platform == "cpu":
            raise ValueError(
                "backend='pallas' compiles a Pallas kernel, which needs a GPU or TPU; "
                "on CPU use backend='interpret' (same kernel, interpreted) or 'xla'"
            )
        if not pallas_supported:
            raise ValueError(
                "backend='pallas' does not support these shapes (see the kernel's docstring); "
                "use backend='xla' or 'auto'"
            )
    return backend


def round_up(n: int, m: int) -> int:
    """``n`` rounded up to a multiple of ``m``."""
    return -(-n // m) * m


def triton_params(interpret: bool) -> pltriton.CompilerParams | None:
    """Compiler parameters for a compiled GPU `pallas_call` (None when interpreting or on TPU).

    jax 0.10 lowers a GPU pallas_call with Mosaic GPU unless given Triton parameters; our kernels
    are written for Triton (tiles of any power of two, no warpgroup-sized copies).
    """
    if interpret or jax.default_backend() == "tpu":
        return None
    return pltriton.CompilerParams(num_warps=4, num_stages=2)
