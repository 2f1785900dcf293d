"""The ``jaxaccel`` command: one entry point, subcommands registered by the packages that own them.

Packages register a subcommand in pyproject.toml under ``[project.entry-points."jaxaccel.commands"]``
as ``name = "module:JOB"`` where ``JOB`` is a `jaxaccel.runtime.Job`; this module imports nothing
above the core floor. A `jaxaccel.Error` (bad input, bad config, unusable checkpoint) is printed
as one line and exits with status 2; ``--debug`` shows its traceback instead.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Sequence

from ._errors import Error
from .runtime import Job

__all__ = ["main"]


def _commands() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group="jaxaccel.commands")}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``jaxaccel <command> [options]``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: jaxaccel <command> [options]   (jaxaccel <command> --help for its options)")
        print("\ncommands:")
        for name in sorted(commands):
            print(f"  {name}")
        return 0
    if argv[0] == "--debug":
        argv = argv[1:]
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(
            f"jaxaccel: unknown command {name!r}; known: {', '.join(sorted(commands))}",
            file=sys.stderr,
        )
        return 2
    job = commands[name].load()
    if not isinstance(job, Job):
        raise TypeError(f"entry point {name!r} names {job!r}, not a jaxaccel.runtime.Job")
    if debug and "--debug" not in rest:
        rest = [*rest, "--debug"]
    try:
        return int(job.main(rest) or 0)
    except Error as e:
        if debug:
            raise
        print(f"jaxaccel {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\njaxaccel {name}: interrupted (a rerun with the same --out resumes)", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
