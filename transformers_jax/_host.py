"""Host buffers that JAX can adopt without copying.

First touches of fresh memory are slow on small VMs (a page fault per 4 KiB page: ~5 ms per MB
measured here under load), so a 135M-parameter model should be written into memory once, and
that memory mapped in one go: `aligned_empty` asks the kernel for pre-populated pages
(``MAP_POPULATE``, ~5x faster than faulting them in one by one). `load_gguf` dequantizes each
per-layer tensor straight into one stacked, page-aligned, then read-only float32 buffer per kind,
and `from_hf_state_dict` hands those buffers to `jax.device_put`, which on CPU uses aligned host
memory in place. Read-only is what makes sharing safe: neither side can change the other's weights.
"""

from __future__ import annotations

import math
import mmap

import numpy as np

__all__ = ["aligned_empty", "as_stacked", "shareable"]

_ALIGN = 64  # XLA:CPU adopts host buffers aligned to 64 bytes


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """A writable float32 array (zeros or garbage) whose data is at least 64-byte aligned."""
    n = math.prod(shape) * 4
    if n >= 1 << 20 and _POPULATE:
        buf = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE)
        return np.frombuffer(buf, np.float32).reshape(shape)  # page-aligned
    raw = np.empty(n + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + n].view(np.float32).reshape(shape)


def shareable(a: np.ndarray) -> bool:
    """A read-only, C-contiguous float32 array: safe to give to JAX as is."""
    return (
        isinstance(a, np.ndarray)
        and a.dtype == np.float32
        and a.flags.c_contiguous
        and not a.flags.writeable
    )


def as_stacked(arrays: list[np.ndarray]) -> np.ndarray | None:
    """If ``arrays`` are consecutive read-only slices ``s[0], s[1], ...`` of one buffer, that
    buffer as a read-only ``[len(arrays), *shape]`` array (no copy); else ``None``."""
    a0 = arrays[0]
    if not shareable(a0) or a0.base is None:
        return None
    step = a0.nbytes
    for i, a in enumerate(arrays):
        if not (shareable(a) and a.base is a0.base and a.shape == a0.shape):
            return None
        if a.ctypes.data != a0.ctypes.data + i * step:
            return None
    return np.lib.stride_tricks.as_strided(
        a0, shape=(len(arrays), *a0.shape), strides=(step, *a0.strides), writeable=False
    )
