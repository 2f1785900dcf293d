"""The one job shape: a typed config, size presets, and ``run(config, *, key, out) -> Summary``.

A job module defines its science as a function ``science(config, *, key, out, progress) ->
Summary`` and wraps it in a `Job`. The `Job` owns the plumbing every job shares: loading and
checking the config (defaults < ``--size`` preset < ``--config`` TOML < command-line flags)
before anything heavy happens, checking ``--out``, writing ``summary.json`` and printing the
results table. ``jaxaccel <name>`` runs it (see `jaxaccel._cli`); notebooks and tests call
`Job.load` and `Job.run` directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax

from .._errors import ConfigError, InputError
from ._config import _strip, config_keys, describe_type, load_config, read_toml
from ._output import Summary, prepare_out, to_json, write_json

__all__ = ["Job", "Option", "SIZES"]

SIZES = ("tiny", "small", "full")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """A job-specific command-line flag that sets one config key.

    Attributes:
        flag: e.g. ``"--max-new-tokens"``.
        key: the config key it sets (``"max_new_tokens"``).
        help: one line of help.
        short: an optional short flag (``"-p"``).
    """

    flag: str
    key: str
    help: str = ""
    short: str | None = None


def _flag_type(tp: Any) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    """argparse keywords for annotation ``tp`` and a converter of the parsed string."""
    base, _ = _strip(tp)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _flag_type(rest[0])
        return {}, lambda s: s
    if base is bool:
        return {"action": "store_true", "default": None}, lambda v: v
    if origin is Literal:
        return {"choices": [str(a) for a in args]}, lambda s: next(
            (a for a in args if str(a) == s), s
        )
    if origin is tuple:
        inner = args[0] if args else str
        conv = _flag_type(inner)[1] if inner is not str else (lambda s: s)
        return {"metavar": "A,B,..."}, lambda s: [
            conv(x.strip()) for x in s.split(",") if x.strip()
        ]

    def scalar(s: str, base=base):
        if base is int:
            try:
                return int(s)
            except ValueError:
                return s  # left to the config check, which names the flag
        if base is float:
            try:
                return float(s)
            except ValueError:
                return s
        return s

    return {}, scalar


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    """A batch job run by ``jaxaccel <name>`` or from Python.

    Attributes:
        name: the subcommand (``"gw-population"``).
        description: help text (the job module's docstring).
        config: the job's frozen config dataclass; its defaults are the ``small`` size.
        sizes: per-size overrides of the defaults (``{"tiny": {"steps": 50}, "full": {...}}``).
        science: ``science(config, *, key, out, progress) -> Summary``: the job's own work.
        options: job-specific command-line flags.
        checks: optional ``checks(config) -> None`` run after the config is built and before
            ``science``: cheap checks of data paths and files (raise `jaxaccel.Error`).

    Example:
        >>> cfg = GW_JOB.load(size="tiny", overrides={"steps": 100})
        >>> summary = GW_JOB.run(cfg, key=jax.random.key(0), out=Path("out/gw"))
    """

    name: str
    description: str
    config: type
    science: Callable[..., Summary]
    sizes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    options: tuple[Option, ...] = ()
    checks: Callable[[Any], None] | None = None

    def __post_init__(self):
        keys = set(config_keys(self.config))
        for size, preset in self.sizes.items():
            if size not in SIZES:
                raise ValueError(f"{self.name}: unknown size {size!r}")
            bad = set(preset) - keys
            if bad:
                raise ValueError(f"{self.name}: size {size!r} sets unknown keys {sorted(bad)}")
        for o in self.options:
            if o.key not in keys:
                raise ValueError(f"{self.name}: option {o.flag} sets unknown key {o.key!r}")

    # -- configs -----------------------------------------------------------------------------
    def load(
        self,
        *,
        size: str = "small",
        config: str | Path | Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        source: str = "overrides",
    ) -> Any:
        """The config for ``size``, updated by ``config`` (a TOML path or a mapping) and ``overrides``.

        Every key is checked before anything else runs; errors name the key and its source.
        """
        if size not in SIZES:
            raise ConfigError(f"expected one of {', '.join(SIZES)}, got {size!r}", key="--size")
        sources: list[tuple[str, Mapping[str, Any]]] = [
            (f"size {size!r}", self.sizes.get(size, {}))
        ]
        if isinstance(config, str | Path):
            sources.append((str(config), read_toml(config)))
        elif config is not None:
            sources.append(("config", config))
        if overrides:
            sources.append((source, overrides))
        cfg = load_config(self.config, sources)
        if self.checks is not None:
            try:
                self.checks(cfg)
            except ConfigError as e:
                if e.source is not None or e.key is None:
                    raise
                top = e.key.split(".")[0].split("[")[0]
                named = [name for name, values in sources if top in values]
                if named and named[-1] != source:  # a flag's key is renamed by main()
                    raise e.with_source(named[-1]) from None
                raise
        return cfg

    def describe_config(self, config: Any) -> str:
        """``config`` as TOML lines, each with a comment saying what the key accepts."""
        hints = typing.get_type_hints(self.config, include_extras=True)
        lines = [f"# {self.name}: resolved config (write any of these keys in a --config TOML)"]
        for f in dataclasses.fields(self.config):
            if not f.init:
                continue
            value = to_json(getattr(config, f.name))
            about = describe_type(hints[f.name])
            if value is None:
                lines.append(f"# {f.name} = (unset)    # {about}")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}    # {about}")
        return "\n".join(lines)

    # -- running -----------------------------------------------------------------------------
    def run(
        self,
        config: Any,
        *,
        key: jax.Array,
        out: str | Path,
        progress: bool = True,
        echo: bool = False,
    ) -> Summary:
        """Run the job: checks ``out``, runs the science, writes ``out/summary.json``.

        Args:
            config: from `load` (an instance of ``self.config``).
            key: a JAX PRNG key; every random choice of the job derives from it.
            out: the output folder (created; checkpoints inside make a rerun resume).
            progress: show progress bars on stderr.
            echo: print the results table (the command line does).

        Returns:
            The job's `Summary`; ``summary.json`` holds its results plus the config, the key,
            the device and the wall time.
        """
        if not isinstance(config, self.config):
            raise InputError(
                f"config: expected a {self.config.__name__} (from {self.name} job.load()), "
                f"got {type(config).__name__}"
            )
        key = _check_key(key)
        out = prepare_out(out)
        t0 = time.perf_counter()
        summary = self.science(config, key=key, out=out, progress=progress)
        if not isinstance(summary, Summary):
            raise TypeError(f"{self.name}: science returned {type(summary).__name__}, not Summary")
        record = {
            "job": self.name,
            **summary.results,
            "config": config,
            "key": jax.random.key_data(key),
            "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
            "jax": jax.__version__,
            "wall_seconds": time.perf_counter() - t0,
            "files": ["summary.json", *summary.files],
        }
        if jax.process_index() == 0:
            write_json(out / "summary.json", record)
        if echo:
            if summary.table:
                print("\n" + summary.table.rstrip())
            print(f"wrote {out}/summary.json ({record['wall_seconds']:.0f} s)")
        return summary

    # -- command line ------------------------------------------------------------------------
    def parser(self) -> argparse.ArgumentParser:
        """The job's argument parser: common options plus its own `Option` flags."""
        p = argparse.ArgumentParser(
            prog=f"jaxaccel {self.name}",
            description=self.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--out", type=Path, default=Path("out") / self.name, help="results folder")
        p.add_argument("--config", type=Path, default=None, help="TOML file of config keys")
        p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
        p.add_argument(
            "--size",
            choices=SIZES,
            default="small",
            help="tiny: well under a minute on 2 CPU cores (tests); small: a few minutes; full",
        )
        p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.add_argument(
            "--show-config",
            action="store_true",
            help="print the resolved config (every key, its value and what it accepts) and exit",
        )
        hints = typing.get_type_hints(self.config, include_extras=True)
        for o in self.options:
            kw, _ = _flag_type(hints[o.key])
            names = [o.flag] + ([o.short] if o.short else [])
            p.add_argument(*names, dest=f"opt_{o.key}", help=o.help, **{"default": None, **kw})
        return p

    def main(self, argv: Sequence[str] | None = None) -> int:
        """``jaxaccel <name> [options]``: load and check the config, run, print the table."""
        ns = self.parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        hints = typing.get_type_hints(self.config, include_extras=True)
        flags: dict[str, Any] = {}
        for o in self.options:
            v = getattr(ns, f"opt_{o.key}")
            if v is not None:
                flags[o.key] = _flag_type(hints[o.key])[1](v)
        flag_of = {o.key: o.flag for o in self.options}
        try:
            cfg = self.load(size=ns.size, config=ns.config, overrides=flags, source="command line")
        except ConfigError as e:
            top = (e.key or "").split(".")[0].split("[")[0]
            # a key set by a flag (checked by the loader, or by the job's checks) is named by it
            if top in flag_of and (e.source == "command line" or e.source is None and top in flags):
                key = flag_of[top] + (e.key or "")[len(top) :]
                raise ConfigError(e.detail, key=key) from None
            raise
        if ns.show_config:
            print(self.describe_config(cfg))
            return 0
        if ns.seed < 0:
            raise ConfigError(f"expected a non-negative integer, got {ns.seed}", key="--seed")
        prepare_out(ns.out)
        self.run(
            cfg, key=jax.random.key(ns.seed), out=ns.out, progress=not ns.no_progress, echo=True
        )
        return 0


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def _check_key(key: Any) -> jax.Array:
    if not isinstance(key, jax.Array):
        raise InputError(f"key: expected a JAX PRNG key (jax.random.key(seed)), got {key!r}")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise InputError(f"key: expected one PRNG key, got a batch of shape {key.shape}")
        return key
    if key.shape == (2,) and key.dtype == jax.numpy.uint32:
        return jax.random.wrap_key_data(key)
    raise InputError(
        f"key: expected a JAX PRNG key (jax.random.key(seed)), got {key.dtype}{key.shape}"
    )
