"""What a job leaves behind: the output folder, ``summary.json`` and figures.

Figures use matplotlib's object API (`matplotlib.figure.Figure`), never ``pyplot`` state or
``matplotlib.use``: library code must not change the backend of a user's notebook or session.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._errors import InputError

__all__ = ["Summary", "prepare_out", "write_json", "figure", "save_figure", "to_json"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Summary:
    """What a job's ``run`` returns.

    Attributes:
        job: the job's name (``"gw-population"``).
        results: the job's figures of merit (JSON-able: numbers, strings, lists, dicts, arrays).
        table: the short results table printed at the end of a command-line run.
        files: names of the files written in the output folder, besides ``summary.json``.
    """

    job: str
    results: Mapping[str, Any]
    table: str = ""
    files: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.results[key]


def prepare_out(out: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Create the output folder if needed and check that it is writable.

    Raises:
        InputError: naming ``flag`` when ``out`` is a file, cannot be created or is read-only.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag}: {out} is a file; expected a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{flag}: cannot create folder {out} ({e.strerror or e})") from None
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise InputError(f"{flag}: folder {out} is not writable ({e.strerror or e})") from None
    return out


def to_json(x: Any) -> Any:
    """``x`` with arrays, numpy scalars, paths and dataclasses made JSON-able (NaN -> null)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: to_json(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_json(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.ndarray | jax.Array):
        a = np.asarray(x)
        return to_json(a.item() if a.ndim == 0 else a.tolist())
    if isinstance(x, np.generic):
        return to_json(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_json(data), indent=2))
    os.replace(tmp, path)
    return path


def figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """A matplotlib ``(Figure, axes)`` made without pyplot (object API; no backend change).

    ``kwargs`` go to `matplotlib.figure.Figure` (``figsize``, ``layout``, ...); ``subplot_kw``
    and ``squeeze`` go to ``Figure.subplots``.
    """
    from matplotlib.figure import Figure

    sub = {k: kwargs.pop(k) for k in ("subplot_kw", "squeeze", "sharex", "sharey") if k in kwargs}
    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols, **sub)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Save ``fig`` (a `matplotlib.figure.Figure`) to ``path`` with the Agg renderer."""
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if type(fig.canvas) is FigureCanvasBase:  # a Figure made without pyplot: draw with Agg
        FigureCanvasAgg(fig)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path
