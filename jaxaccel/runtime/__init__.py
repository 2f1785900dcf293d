"""`jaxaccel.runtime`: what every batch job shares — typed configs, checkpoints, progress, outputs.

A job is a `Job`: a frozen config dataclass (checked key by key by `load_config` before any work
starts), size presets, and its science ``science(config, *, key, out, progress) -> Summary``.
`Job.run` writes ``summary.json``; `Checkpointer` makes long work resumable; `Progress` reports
it; `figure`/`save_figure` draw without touching matplotlib's global backend.
"""

from .._errors import (
    CheckpointError as CheckpointError,
    ConfigError as ConfigError,
    Error as Error,
    InputError as InputError,
)
from ._checkpoint import (
    Checkpointer as Checkpointer,
    Restored as Restored,
    fingerprint as fingerprint,
)
from ._config import (
    Range as Range,
    check_value as check_value,
    config_keys as config_keys,
    describe_type as describe_type,
    load_config as load_config,
    read_toml as read_toml,
)
from ._job import SIZES as SIZES, Job as Job, Option as Option
from ._output import (
    Summary as Summary,
    figure as figure,
    prepare_out as prepare_out,
    save_figure as save_figure,
    to_json as to_json,
    write_json as write_json,
)
from ._progress import Progress as Progress
