"""jaxaccel.runtime: the config loader, the job shape, checkpoints, progress, outputs, the CLI."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxaccel as ja
from jaxaccel import _cli, runtime


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self):
        if not self.low < self.high:
            raise runtime.ConfigError("expected low < high", key="high")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cfg:
    steps: Annotated[int, runtime.Range(ge=1)] = 10
    lr: Annotated[float, runtime.Range(gt=0)] = 1e-3
    model: Literal["bbh", "bbh+nsbh"] = "bbh"
    free: Annotated[tuple[str, ...], runtime.Range(ge=1, length=True)] = ("alpha",)
    shape: tuple[int, int] = (64, 64)
    priors: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    n_events: Annotated[int, runtime.Range(ge=1)] | None = None
    data: Path | None = None
    bounds: Inner = Inner()
    verbose: bool = False


BAD = [
    ({"stepz": 3}, "stepz", "unknown key; did you mean 'steps'?"),
    ({"steps": 0}, "steps", "expected an integer >= 1, got 0"),
    ({"steps": -5}, "steps", "expected an integer >= 1, got -5"),
    ({"steps": "abc"}, "steps", "got 'abc'"),
    ({"steps": 2.5}, "steps", "a whole number is needed"),
    ({"steps": True}, "steps", "got True"),
    ({"lr": float("nan")}, "lr", "expected a finite number, got nan"),
    ({"lr": 0.0}, "lr", "expected a number > 0"),
    ({"model": "bhb"}, "model", "did you mean 'bbh'?"),
    ({"free": "alpha"}, "free", 'a list is needed: write ["alpha"]'),
    ({"free": []}, "free", "with length >= 1"),
    ({"free": ["a", 3]}, "free[1]", "expected a string, got 3"),
    ({"shape": [63]}, "shape", "a list of 2 values"),
    ({"priors": {"alpha": [1, "x"]}}, "priors.alpha[1]", "expected a number"),
    ({"priors": [1, 2]}, "priors", "expected a table"),
    ({"n_events": 0}, "n_events", "expected an integer >= 1, got 0"),
    ({"n_events": -3}, "n_events", "got -3"),
    ({"data": 5}, "data", "expected a path"),
    ({"bounds": {"low": 2.0, "high": 1.0}}, "bounds.high", "expected low < high"),
    ({"bounds": {"lo": 2.0}}, "bounds.lo", "unknown key"),
    ({"verbose": "yes"}, "verbose", "expected true or false"),
]


@pytest.mark.parametrize("values,key,message", BAD, ids=[b[1] + ":" + repr(b[0])[:20] for b in BAD])
def test_config_errors_name_key_and_source(values, key, message):
    with pytest.raises(runtime.ConfigError, match="run.toml: ") as e:
        runtime.load_config(Cfg, [("defaults", {}), ("run.toml", values)])
    assert e.value.key == key and e.value.source == "run.toml"
    assert message in str(e.value)
    assert isinstance(e.value, ja.Error) and isinstance(e.value, ValueError)


def test_config_converts_and_layers():
    cfg = runtime.load_config(
        Cfg,
        [
            ("size 'tiny'", {"steps": 5, "free": ["a"]}),
            ("run.toml", {"steps": 7, "shape": [3, 4], "priors": {"a": [1, 2]}, "data": "x.npy"}),
        ],
    )
    assert cfg.steps == 7 and cfg.free == ("a",) and cfg.shape == (3, 4)
    assert cfg.priors == {"a": (1.0, 2.0)} and cfg.data == Path("x.npy")
    assert isinstance(cfg.lr, float) and cfg.n_events is None


def test_cross_field_error_names_the_source_that_set_the_key():
    with pytest.raises(runtime.ConfigError) as e:
        runtime.load_config(Cfg, [("a.toml", {"bounds": {"low": 0.0, "high": 1.0}}),
                                  ("b.toml", {"bounds": {"low": 5.0, "high": 1.0}})])  # fmt: skip
    assert str(e.value).startswith("b.toml: bounds.high: expected low < high")


def test_read_toml_errors(tmp_path):
    with pytest.raises(runtime.ConfigError, match="--config: file .* does not exist"):
        runtime.read_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3")
    with pytest.raises(runtime.ConfigError, match="bad.toml is not valid TOML"):
        runtime.read_toml(bad)
    with pytest.raises(runtime.ConfigError, match="is not a file"):
        runtime.read_toml(tmp_path)


def _science(cfg, *, key, out, progress):
    """A toy job: ``steps`` checkpointed steps of a random walk."""
    ckpt = runtime.Checkpointer(out / "checkpoint", runtime.fingerprint(cfg, key))
    x = jnp.zeros(3)
    found = ckpt.restore(x)
    start = 0 if found is None else found.step
    x = x if found is None else found.state
    step = jax.jit(lambda x, i: x + jax.random.normal(jax.random.fold_in(key, i), x.shape))
    with runtime.Progress(cfg.steps, "toy", enabled=progress) as bar:
        bar.resumed(start)
        for i in range(start, cfg.steps):
            x = step(x, i)
            ckpt.save(i + 1, x)
            bar.update(1)
    return runtime.Summary(job="toy", results={"x": x, "resumed_from": start}, table="x done")


TOY = runtime.Job(
    name="toy",
    description="toy job",
    config=Cfg,
    science=_science,
    sizes={"tiny": {"steps": 4}},
    options=(runtime.Option(flag="--steps", key="steps", help="steps"),),
)


def test_job_run_writes_summary_and_resumes(tmp_path, capsys):
    cfg = TOY.load(size="tiny")
    s = TOY.run(cfg, key=jax.random.key(1), out=tmp_path / "a", progress=False)
    data = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert data["job"] == "toy" and data["config"]["steps"] == 4 and len(data["x"]) == 3
    assert data["files"] == ["summary.json"] and data["wall_seconds"] > 0
    np.testing.assert_allclose(data["x"], np.asarray(s["x"]), rtol=1e-6)
    # a rerun in the same folder resumes from the last checkpoint: nothing left to do
    again = TOY.run(cfg, key=jax.random.key(1), out=tmp_path / "a", progress=True)
    assert again["resumed_from"] == 4
    assert "toy: resumed from step 4" in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(again["x"]), np.asarray(s["x"]))
    # another seed in the same folder is refused, not silently resumed
    with pytest.raises(runtime.CheckpointError, match="belongs to a different run"):
        TOY.run(cfg, key=jax.random.key(2), out=tmp_path / "a", progress=False)


def test_job_argument_errors(tmp_path):
    cfg = TOY.load(size="tiny")
    with pytest.raises(ja.InputError, match="key: expected a JAX PRNG key"):
        TOY.run(cfg, key=jnp.zeros(3), out=tmp_path)
    with pytest.raises(ja.InputError, match="config: expected a Cfg"):
        TOY.run({"steps": 3}, key=jax.random.key(0), out=tmp_path)
    with pytest.raises(runtime.ConfigError, match="--size: expected one of tiny, small, full"):
        TOY.load(size="huge")
    with pytest.raises(runtime.ConfigError, match="overrides: steps: expected an integer >= 1"):
        TOY.load(size="tiny", overrides={"steps": 0})


def test_prepare_out(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ja.InputError, match="--out: .*file.txt is a file; expected a folder"):
        runtime.prepare_out(f)
    with pytest.raises(ja.InputError, match="--out: cannot create folder"):
        runtime.prepare_out(f / "sub")
    assert runtime.prepare_out(tmp_path / "new" / "deeper").is_dir()


def test_cli_job_errors_are_one_line_and_fast(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_cli, "_commands", lambda: {"toy": _EntryPoint(TOY)})
    toml = tmp_path / "run.toml"
    toml.write_text('steps = "abc"\n')
    t = time.perf_counter()
    assert _cli.main(["toy", "--config", str(toml), "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - t < 2.0
    err = capsys.readouterr().err
    assert err == f"jaxaccel toy: error: {toml}: steps: expected an integer >= 1, got 'abc'\n"
    assert _cli.main(["toy", "--steps", "0", "--out", str(tmp_path / "o")]) == 2
    assert "error: --steps: expected an integer >= 1, got 0" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert _cli.main(["toy", "--out", str(tmp_path / "f")]) == 2
    assert "--out: " in capsys.readouterr().err
    assert _cli.main(["toy", "--seed", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--seed: expected a non-negative integer" in capsys.readouterr().err
    with pytest.raises(runtime.ConfigError):  # --debug shows the traceback
        _cli.main(["toy", "--steps", "0", "--debug", "--out", str(tmp_path / "o")])
    assert _cli.main(["toy", "--size", "tiny", "--no-progress", "--out", str(tmp_path / "o")]) == 0
    assert "x done" in capsys.readouterr().out
    assert _cli.main(["toy", "--size", "tiny", "--show-config"]) == 0
    shown = capsys.readouterr().out
    assert "steps = 4    # an integer >= 1" in shown and "# n_events = (unset)" in shown
    assert "model = \"bbh\"    # one of 'bbh', 'bbh+nsbh'" in shown


class _EntryPoint:
    def __init__(self, obj):
        self.obj = obj

    def load(self):
        return self.obj


def test_checkpointer_roundtrip_and_atomicity(tmp_path):
    ck = runtime.Checkpointer(tmp_path, runtime.fingerprint({"a": 1}, jax.random.key(0)))
    assert ck.restore(jnp.zeros(2)) is None
    model = eqx.nn.Linear(3, 2, key=jax.random.key(0))
    ck.save(1, model, arrays={"samples": np.arange(6.0).reshape(3, 2)}, meta={"note": "one"})
    ck.save(3, eqx.tree_at(lambda m: m.bias, model, jnp.zeros(2)))
    # same parity as the last step: must not overwrite the files checkpoint.json names
    named = json.loads((tmp_path / "checkpoint.json").read_text())["state"]
    ck.save(2, eqx.tree_at(lambda m: m.bias, model, jnp.ones(2)))
    assert json.loads((tmp_path / "checkpoint.json").read_text())["state"] != named
    (tmp_path / ".state.1.eqx.tmp").write_bytes(b"garbage from a killed writer")
    r = ck.restore(model)
    assert r.step == 2 and r.arrays == {} and r.meta == {}
    np.testing.assert_array_equal(r.state.bias, np.ones(2))
    np.testing.assert_array_equal(r.state.weight, model.weight)
    with pytest.raises(runtime.CheckpointError, match="does not match this run's state"):
        ck.restore(jnp.zeros(5))
    other = runtime.Checkpointer(tmp_path, runtime.fingerprint({"a": 2}, jax.random.key(0)))
    with pytest.raises(runtime.CheckpointError, match="different run"):
        other.restore(model)
    assert runtime.Checkpointer(None, "x").restore(model) is None


def test_kill_after_saves_hook_really_kills_and_resume_matches(tmp_path):
    """SIGKILL right after the 2nd save (the hook the job resume tests use), then rerun."""
    code = textwrap.dedent(
        f"""
        import sys, jax
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_runtime import TOY
        cfg = TOY.load(size="tiny")
        s = TOY.run(cfg, key=jax.random.key(5), out=sys.argv[1], progress=False)
        print("resumed_from", s["resumed_from"])
        """
    )
    env = {**os.environ, "JAXACCEL_KILL_AFTER_SAVES": "2"}
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True)
    assert p.returncode == -9, p.stderr.decode()[-2000:]
    assert json.loads((out / "checkpoint" / "checkpoint.json").read_text())["step"] == 2
    assert not (out / "summary.json").exists()
    env.pop("JAXACCEL_KILL_AFTER_SAVES")
    p = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert "resumed_from 2" in p.stdout.decode()
    whole = TOY.run(
        TOY.load(size="tiny"), key=jax.random.key(5), out=tmp_path / "w", progress=False
    )
    resumed = json.loads((out / "summary.json").read_text())
    np.testing.assert_allclose(resumed["x"], np.asarray(whole["x"]), rtol=1e-6)


def test_progress_phases_tick_and_resume(capsys):
    bar = runtime.Progress(10, "demo", refresh=0.05)
    bar.resumed(3)
    with bar.compiling():
        assert "compiling" in str(bar._bar)
    f = jax.jit(lambda i: (bar.tick(i + 1, every=1), i)[1])
    for i in range(3, 6):
        f(jnp.int32(i))
    jax.effects_barrier()
    assert bar._bar.n == 6
    time.sleep(0.15)  # the refresh thread redraws while nothing happens
    bar.update(2, loss=0.5)
    assert bar._bar.n == 8 and "loss=0.5" in str(bar._bar)
    bar.close()
    assert "demo: resumed from step 3" in capsys.readouterr().err
    quiet = runtime.Progress(5, "q", enabled=False)
    quiet.update(1)
    quiet.resumed(2)
    quiet.close()


def test_figures_do_not_touch_the_backend(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    fig, axes = runtime.figure(1, 2, figsize=(4, 2))
    axes[0].plot([0, 1], [1, 0])
    path = runtime.save_figure(fig, tmp_path / "f.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == before


def test_write_json_handles_arrays_and_nan(tmp_path):
    p = runtime.write_json(
        tmp_path / "s.json",
        {
            "a": jnp.arange(3),
            "b": np.float32(2.5),
            "c": float("nan"),
            "d": Path("x"),
            "e": Inner(),
        },  # fmt: skip
    )
    assert json.loads(p.read_text()) == {
        "a": [0, 1, 2], "b": 2.5, "c": None, "d": "x", "e": {"low": 0.0, "high": 1.0}
    }  # fmt: skip
