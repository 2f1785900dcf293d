"""One progress reporter: a tqdm bar on stderr that shows compiling as a phase and never freezes.

A JAX loop spends its first call compiling, and a chunked ``lax.scan`` updates the host only
between chunks; a bar that moves only on updates looks hung. `Progress` therefore refreshes itself
from a background thread every ``refresh`` seconds (so elapsed time keeps moving), shows
"compiling…" while the first call of a jitted function runs, says "resumed from step N" when a
run picks up a checkpoint, and can be advanced from inside jitted code with `Progress.tick`
(a ``jax.debug.callback``), for loops whose chunks take longer than a few seconds.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

__all__ = ["Progress"]


class Progress:
    """A progress bar for ``total`` units of work.

    Args:
        total: units (steps, samples, ...) in the whole run, resumed part included.
        desc: the label before the bar.
        unit: the unit's name.
        enabled: ``False`` makes every method a no-op (library calls with ``progress=False``).
        refresh: seconds between forced redraws while nothing else happens.

    Example:
        >>> with Progress(1000, "train") as bar:
        ...     bar.resumed(start)
        ...     with bar.compiling():
        ...         state = step(state)  # first call: compiles
        ...     bar.update(1, loss=float(loss))
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "step",
        enabled: bool = True,
        refresh: float = 2.0,
    ):
        self.desc = desc
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._phase = ""
        self._postfix: dict[str, str] = {}
        if not enabled:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True
        )
        if refresh > 0:
            self._thread = threading.Thread(target=self._tick_loop, args=(refresh,), daemon=True)
            self._thread.start()

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _tick_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()

    def _show(self) -> None:
        items = ({"": self._phase} if self._phase else {}) | self._postfix
        text = ", ".join(v if not k else f"{k}={v}" for k, v in items.items())
        self._bar.set_postfix_str(text, refresh=True)

    # -- reporting ---------------------------------------------------------------------------
    def write(self, message: str) -> None:
        """A line above the bar (or on stderr without a bar)."""
        if self._bar is not None:
            with self._lock:
                self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def resumed(self, step: int) -> None:
        """Start the bar at ``step`` (from a checkpoint) and say so; ``step == 0`` does nothing."""
        if step <= 0:
            return
        self.write(f"{self.desc}: resumed from step {step}")
        if self._bar is not None:
            with self._lock:
                self._bar.n = step
                self._bar.last_print_n = step
                self._bar.refresh()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Show ``name`` (e.g. "compiling…") next to the bar while the block runs."""
        if self._bar is None:
            yield
            return
        with self._lock:
            self._phase = name
            self._show()
        try:
            yield
        finally:
            with self._lock:
                self._phase = ""
                self._show()

    def compiling(self) -> contextlib.AbstractContextManager[None]:
        """`phase` "compiling…": wrap the first call of a jitted function."""
        return self.phase("compiling…")

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` units and show ``postfix`` values (e.g. ``loss=0.12``)."""
        if self._bar is None:
            return
        with self._lock:
            if postfix:
                self._postfix = {k: f"{float(v):.4g}" for k, v in postfix.items()}
            self._show()
            self._bar.update(n)

    def set(self, n: int, **postfix: Any) -> None:
        """Move the bar to ``n`` units done (monotone: never moves back)."""
        if self._bar is None:
            return
        with self._lock:
            if postfix:
                self._postfix = {k: f"{float(v):.4g}" for k, v in postfix.items()}
            if n > self._bar.n:
                self._bar.update(n - self._bar.n)
            else:
                self._show()

    def tick(self, done: Any, every: int = 1) -> None:
        """From inside jitted code: move the bar to ``done`` (a traced int) every ``every`` units.

        Uses ``jax.debug.callback``, so it costs one host call per ``every`` units; put it in a
        scan body to make a long chunk visible.
        """
        if self._bar is None:
            return

        def host(d):
            self.set(int(np.asarray(d)))

        done = jax.numpy.asarray(done)
        jax.lax.cond(
            done % every == 0,
            lambda d: jax.debug.callback(host, d),
            lambda d: None,
            done,
        )

    def close(self) -> None:
        """Stop the refresh thread and remove the bar."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._bar is not None:
            with self._lock:
                self._bar.close()
                self._bar = None
