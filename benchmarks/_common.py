"""Helpers shared by the benchmark scripts in ``benchmarks/``.

- `device_string`: ``"cpu: 2 cores AMD EPYC"`` (or the accelerator's kind);
- `time_paths`: jitted callables timed with ``block_until_ready`` in interleaved rounds, medians;
- `row`: one result row in the shared JSON shape (``ratio`` > 1 means ours is better);
- `write_results`: ``benchmarks/results/<name>.json``;
- `markdown_table` / `print_table`: the rows as a table;
- `loadavg` / `git_commit`: the machine's load and the commit a run measured;
- `json_clean`: a report made JSON-safe;
- `update_benchmarks_md`: rewrite this benchmark's section of ``BENCHMARKS.md`` between
  ``<!-- <name>:begin -->`` and ``<!-- <name>:end -->`` markers.

The JSON shape (see ``DESIGN.md``, "Performance measurement")::

    {"benchmark": name, "device": ..., "jax": ..., "date": "YYYY-MM-DD",
     "rows": [{"case", "metric", "ours", "peer", "peer_value", "ratio", "better", "note"}]}
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

_MD_HEADER = """# Benchmarks

Measured by the scripts in `benchmarks/` (one per area); each runs ours and the peer in the same
process on the same inputs and reports medians after warm-up. The raw rows are in
`benchmarks/results/<name>.json`. **ratio** is how many times better ours is (peer / ours when
lower is better, ours / peer when higher is better): above 1 means ours wins.
"""


# ----------------------------------------------------------------------------------------------
# device
# ----------------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The processor's model name from ``/proc/cpuinfo`` (or what `platform` knows)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_string() -> str:
    """``"cpu: <cores> cores <processor>"`` on CPU, else ``"<platform>: <device kind>"``."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu: {cpu_cores()} cores {cpu_name()}"
    return f"{dev.platform}: {dev.device_kind} (x{len(jax.devices())})"


def today() -> str:
    return datetime.date.today().isoformat()


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    """The median of ``reps`` timed calls (milliseconds) after ``warmup`` untimed calls."""

    median_ms: float
    reps: int
    warmup: int
    times_ms: tuple[float, ...]

    @property
    def note(self) -> str:
        return f"median of {self.reps} after {self.warmup} warm-up"


def time_call(fn: Callable[[], Any]) -> float:
    """Seconds for one call of ``fn``, waiting for its result (``jax.block_until_ready``)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def time_paths(
    paths: dict[str, Callable[[], Any]],
    *,
    warmup: int = 3,
    reps: int = 20,
    min_reps: int = 5,
    budget_s: float = 4.0,
    seed: int = 0,
) -> dict[str, Timing]:
    """Time several zero-argument callables (closures over jitted functions and their inputs).

    Each path is called ``warmup`` times first (the first call compiles). Then the paths are
    timed in rounds, each round in a fresh random order, so that load from other processes on a
    shared machine falls on all paths alike. A path whose warm-up calls say that ``reps`` calls
    would take more than ``budget_s`` gets fewer timed calls (never fewer than ``min_reps``);
    `Timing.reps` and `Timing.note` say how many it got.
    """
    want: dict[str, int] = {}
    for name, fn in paths.items():
        warm = [time_call(fn) for _ in range(warmup)]
        per_call = min(warm[1:] or warm)  # the first call may include compilation
        want[name] = max(min_reps, min(reps, int(budget_s / max(per_call, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in paths}
    order = random.Random(seed)
    for i in range(max(want.values(), default=0)):
        live = [name for name in paths if want[name] > i]
        for name in order.sample(live, len(live)):
            times[name].append(1e3 * time_call(paths[name]))
    return {
        name: Timing(statistics.median(ts), len(ts), warmup, tuple(ts))
        for name, ts in times.items()
    }


# ----------------------------------------------------------------------------------------------
# rows, JSON, tables
# ----------------------------------------------------------------------------------------------


def ratio(ours: float | None, peer: float | None, better: str) -> float | None:
    """How many times better ours is: peer/ours (``better="lower"``) or ours/peer ("higher")."""
    if ours is None or peer is None:
        return None
    num, den = (peer, ours) if better == "lower" else (ours, peer)
    if den == 0:
        return math.inf if num > 0 else None
    return num / den


def _round(v: float | None, digits: int = 4) -> float | None:
    if v is None or not math.isfinite(v) or v == 0:
        return v
    # keep `digits` significant digits
    return round(v, max(0, digits - 1 - int(math.floor(math.log10(abs(v))))))


def row(
    case: str,
    metric: str,
    ours: float | None,
    peer: str,
    peer_value: float | None,
    *,
    better: str = "lower",
    note: str = "",
) -> dict[str, Any]:
    """One row of the shared JSON shape; ``ratio`` is filled in (None if a value is missing)."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    r = ratio(ours, peer_value, better)
    return {
        "case": case,
        "metric": metric,
        "ours": _round(ours),
        "peer": peer,
        "peer_value": _round(peer_value),
        "ratio": None if r is None else round(r, 3),
        "better": better,
        "note": note,
    }


def write_results(
    name: str,
    rows: Sequence[dict[str, Any]],
    *,
    path: pathlib.Path | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``benchmarks/results/<name>.json`` (or ``path``); returns the report written."""
    report: dict[str, Any] = {
        "benchmark": name,
        "device": device_string(),
        "jax": jax.__version__,
        "date": today(),
        **(extra or {}),
        "rows": list(rows),
    }
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return report


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


_COLUMNS = ("case", "metric", "ours", "peer", "peer value", "ratio (×, >1 = ours better)", "note")


def _cells(r: dict[str, Any]) -> list[str]:
    return [
        str(r["case"]),
        str(r["metric"]),
        _fmt(r["ours"]),
        str(r["peer"]),
        _fmt(r["peer_value"]),
        _fmt(r["ratio"]),
        str(r.get("note", "")),
    ]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a GitHub markdown table."""
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(esc(c) for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def print_table(rows: Sequence[dict[str, Any]], *, max_note: int = 60) -> None:
    """The rows as an aligned plain-text table on stdout."""
    table = [list(_COLUMNS)] + [_cells(r) for r in rows]
    for line in table:
        line[-1] = line[-1] if len(line[-1]) <= max_note else line[-1][: max_note - 1] + "…"
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    for j, line in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def update_benchmarks_md(
    name: str,
    report: dict[str, Any],
    *,
    title: str | None = None,
    intro: str = "",
    path: pathlib.Path | None = None,
) -> pathlib.Path:
    """Rewrite ``name``'s section of ``BENCHMARKS.md`` (between its markers) from ``report``.

    The file is created with a short header if missing; a missing section is appended. Other
    sections are left untouched.
    """
    path = path or BENCHMARKS_MD
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    parts = [f"## {title or name}", ""]
    if intro:
        parts += [intro.strip(), ""]
    parts += [
        f"Device: {report['device']}; jax {report['jax']}; run on {report['date']} "
        f"(`benchmarks/results/{name}.json`).",
        "",
        markdown_table(report["rows"]),
    ]
    section = "\n".join([begin, *parts, end])
    text = path.read_text() if path.exists() else _MD_HEADER
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    return path


def output_arguments(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    quick: str,
    render: str = "rebuild the BENCHMARKS.md section from a results JSON",
) -> None:
    """Add the options every benchmark shares: ``--quick`` (a smoke run), ``--out``, ``--no-md``
    and ``--render JSON`` (measure nothing). Parse with `parse_output_arguments`."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {quick}; writes $TMPDIR/{name}_quick.json (unless --out) and leaves "
        "BENCHMARKS.md alone",
    )
    parser.add_argument("--no-md", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--out", default=None, help=f"JSON path (default results/{name}.json)")
    parser.add_argument("--render", default=None, metavar="JSON", help=f"measure nothing: {render}")


def parse_output_arguments(
    parser: argparse.ArgumentParser, name: str, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse; a quick run writes to ``$TMPDIR/<name>_quick.json`` and leaves BENCHMARKS.md alone
    (a smoke run never overwrites the measurement)."""
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        args.out = os.path.join(tempfile.gettempdir(), f"{name}_quick.json")
        args.no_md = True
    return args


def loadavg() -> str:
    """The 1/5/15-minute load averages, as text ("?" where the OS has none)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def git_commit(watched: str) -> str:
    """The repository's short commit, with "+dirty" when ``watched`` (a path) has uncommitted edits."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return commit + ("+dirty" if git("status", "--porcelain", watched) else "")


def json_clean(x: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None, keys to str."""
    import numpy as np

    if isinstance(x, dict):
        return {str(k): json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x
