"""The ``jaxaccel`` command: one entry point, subcommands registered by the packages that own them.

Packages register a subcommand in pyproject.toml under ``[project.entry-points."jaxaccel.commands"]``
as ``name = "module:main"`` where ``main(argv: list[str]) -> int``; this module imports nothing
above the core floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["main", "common_parser", "CommonArgs", "run_job"]

Size = Literal["tiny", "small", "full"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CommonArgs:
    """Options every job takes."""

    out: Path
    config: dict[str, Any]
    seed: int
    size: Size


def common_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--out``, ``--config``, ``--seed`` and ``--size``."""
    p = argparse.ArgumentParser(prog=f"jaxaccel {prog}", description=description)
    p.add_argument("--out", type=Path, default=Path("out") / prog, help="results folder")
    p.add_argument("--config", type=Path, default=None, help="TOML file overriding defaults")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument(
        "--size",
        choices=["tiny", "small", "full"],
        default="small",
        help="tiny: < 1 min on 2 CPU cores (tests); small: a few minutes; full: real size",
    )
    return p


def parse_common(ns: argparse.Namespace) -> CommonArgs:
    """Turn parsed options into `CommonArgs`, reading the TOML config if given."""
    config: dict[str, Any] = {}
    if ns.config is not None:
        if not ns.config.exists():
            raise SystemExit(f"--config: file {ns.config} does not exist")
        with open(ns.config, "rb") as f:
            try:
                config = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise SystemExit(f"--config: {ns.config} is not valid TOML: {e}") from None
    ns.out.mkdir(parents=True, exist_ok=True)
    return CommonArgs(out=ns.out, config=config, seed=ns.seed, size=ns.size)


def run_job(prog: str, description: str, run, argv: Sequence[str] | None = None) -> int:
    """The ``main`` of a job: parse the common options and call ``run(size, seed, out, config)``."""
    args = parse_common(common_parser(prog, description).parse_args(argv))
    run(args.size, args.seed, args.out, args.config)
    return 0


def _commands() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group="jaxaccel.commands")}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``jaxaccel <command> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: jaxaccel <command> [options]\n\ncommands:")
        for name in sorted(commands):
            print(f"  {name}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"jaxaccel: unknown command {name!r}; known: {', '.join(sorted(commands))}")
        return 2
    return int(commands[name].load()(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
