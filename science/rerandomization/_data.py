"""The experiments the job reads: a CSV, or a real experiment shipped by ``causaldata``."""

from __future__ import annotations

import numpy as np

from jaxaccel import runtime

from ._balance import RerandomizationError

__all__ = ["DATASETS", "load_dataset", "read_experiment"]

DATASETS = {
    "nsw": {
        "module": "nsw_mixtape",
        "treatment": "treat",
        "outcome": "re78",
        "covariates": ("age", "educ", "black", "hisp", "marr", "nodegree", "re74", "re75"),
    },
    "thornton_hiv": {
        "module": "thornton_hiv",
        "treatment": "any",
        "outcome": "got",
        "covariates": ("age", "distvct", "hiv2004"),
    },
}


def load_dataset(name: str):
    """A real experiment shipped by ``causaldata``: (DataFrame, treatment, outcome, covariates).

    ``name`` is one of `DATASETS` (``"nsw"``: LaLonde's NSW job-training experiment, Dehejia-Wahba
    sample; ``"thornton_hiv"``: Thornton 2008). Units with a missing treatment, outcome or
    covariate are dropped (Thornton's data has them).
    """
    if name not in DATASETS:
        raise RerandomizationError(f"dataset: expected one of {sorted(DATASETS)}, got {name!r}")
    import importlib

    spec = DATASETS[name]
    try:
        mod = importlib.import_module(f"causaldata.{spec['module']}")
    except ImportError:
        raise RerandomizationError(
            f"dataset: {name!r} needs the causaldata package (pip install causaldata; it is in "
            "jaxaccel's science extra)"
        ) from None
    df = mod.load_pandas().data
    cols = [spec["treatment"], spec["outcome"], *spec["covariates"]]
    df = df.dropna(subset=cols).reset_index(drop=True)
    return df, spec["treatment"], spec["outcome"], list(spec["covariates"])


def read_experiment(config):
    """(DataFrame, treatment column, outcome column, covariates, source) of a
    `RerandomizeConfig`'s data (its ``csv`` or ``dataset``), every column checked: columns
    present, covariates and outcome numeric and finite, treatment 0/1 with at least 2 units in
    each arm. Errors are `jaxaccel.ConfigError` naming the config key."""
    if config.csv is None:
        df, tcol, ycol, covs = load_dataset(config.dataset)
        covs = list(config.covariates or covs)
        source = f"causaldata:{DATASETS[config.dataset]['module']}"
    else:
        import pandas as pd

        path = config.csv
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise runtime.ConfigError(f"file {path} {what}", key="csv")
        try:
            df = pd.read_csv(path)
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise runtime.ConfigError(f"cannot read {path} as CSV ({e})", key="csv") from None
        tcol, ycol, source = config.treatment, config.outcome, str(path)
        for key in ("treatment", "outcome"):
            col = getattr(config, key)
            if col is not None and col not in df.columns:
                raise runtime.ConfigError(
                    f"column {col!r} not in {path.name}; its columns: {list(df.columns)}", key=key
                )
        if config.covariates is None:
            covs = [
                c
                for c in df.columns
                if c not in (tcol, ycol) and pd.api.types.is_numeric_dtype(df[c])
            ]
            if not covs:
                raise runtime.ConfigError(
                    f"{path.name} has no numeric column besides treatment and outcome",
                    key="covariates",
                )
        else:
            covs = list(config.covariates)
    missing = [c for c in covs if c not in df.columns]
    if missing:
        raise runtime.ConfigError(
            f"{missing} not in {source}; its columns: {list(df.columns)}", key="covariates"
        )
    import pandas as pd

    for key, cols in (("covariates", covs), ("outcome", [ycol] if ycol else [])):
        for c in cols:
            if not pd.api.types.is_numeric_dtype(df[c]):
                raise runtime.ConfigError(f"column {c!r} is not numeric", key=key)
            bad = ~np.isfinite(df[c].to_numpy(np.float64))
            if bad.any():
                raise runtime.ConfigError(
                    f"column {c!r} has {int(bad.sum())} missing or non-finite value(s), e.g. row "
                    f"{int(np.nonzero(bad)[0][0])}; drop or impute those units first",
                    key=key,
                )
    n = len(df)
    if tcol is not None:
        tv = df[tcol].to_numpy()
        if not np.isin(tv, (0, 1)).all():
            odd = np.unique(tv[~np.isin(tv, (0, 1))])[:3].tolist()
            raise runtime.ConfigError(
                f"column {tcol!r} must be 0/1 (the observed assignment), found {odd}",
                key="treatment",
            )
        n_t, key = int(tv.sum()), "treatment"
    else:
        n_t, key = int(config.n_treated), "n_treated"
    if not 2 <= n_t <= n - 2:
        raise runtime.ConfigError(
            f"{n_t} treated of {n} units: each arm needs at least 2 units", key=key
        )
    return df, tcol, ycol, covs, source
