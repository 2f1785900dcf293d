"""Bad input to ``jaxaccel gw-population`` and to `science.samplers`: each is refused up front
(before any data is loaded or anything compiles), with a message naming the key or argument."""

import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from jaxaccel import ConfigError, InputError, _cli
from science import gw, samplers as ss


def cli(capsys, tmp_path, toml: str | None = None, *flags: str) -> str:
    """Run ``jaxaccel gw-population`` with ``toml`` as its config; returns stderr (exit 2)."""
    args = ["gw-population", "--size", "tiny", "--out", str(tmp_path / "out"), *flags]
    if toml is not None:
        path = tmp_path / "run.toml"
        path.write_text(toml)
        args += ["--config", str(path)]
    assert _cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxaccel gw-population: error: ") and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------- config, CLI
@pytest.mark.parametrize(
    "toml, message",
    [
        ("n_events = 0", r"run.toml: n_events: expected an integer >= 1, got 0"),
        ("n_events = -3", r"run.toml: n_events: expected an integer >= 1, got -3"),
        ("steps = 0", r"run.toml: steps: expected an integer >= 1, got 0"),
        ("steps = -5", r"run.toml: steps: expected an integer >= 1, got -5"),
        ('steps = "abc"', r"run.toml: steps: expected an integer >= 1, got 'abc'"),
        ("steps = 2.5", r"steps: expected an integer >= 1, got 2.5 \(a whole number"),
        ("n_draws = 0", r"run.toml: n_draws: expected an integer >= 1, got 0"),
        ("chunk = 0", r"run.toml: chunk: expected an integer >= 1, got 0"),
        ('refine = "yes"', r"refine: expected true or false, got 'yes'"),
        (
            'free = "alpha"',
            r"run.toml: free: expected a list of strings, got 'alpha' \(a list is needed: "
            r"write \[\"alpha\"\]\)",
        ),
        (
            'free = ["alpha", "kappa"]',
            r"free: unknown hyperparameter 'kappa' of model 'bbh'; .*known: alpha, beta",
        ),
        ('free = ["alpah"]', r"free: .*'alpah' of model 'bbh'; did you mean 'alpha'\?"),
        ("free = []", r"free: expected at least one hyperparameter name"),
        ('free = ["alpha", "alpha"]', r"free: \['alpha'\] listed more than once"),
        (
            'free = ["log10_rate_bbh"]',
            r"free: unknown hyperparameter 'log10_rate_bbh' of model 'bbh'",
        ),
        ('free = ["NSBH.m2max"]\nmodel = "bbh+nsbh"', r"free: 'NSBH.m2max' has no prior bounds"),
        ("[priors]\nalpha = [3.0, 1.0]", r"priors.alpha: expected \[low, high\] with low < high"),
        ("[priors]\nalpha = [2.0, 2.0]", r"priors.alpha: expected \[low, high\] with low < high"),
        ("[priors]\nkappa = [0.0, 1.0]", r"priors.kappa: unknown hyperparameter 'kappa'"),
        ("[priors]\nalpha = [1.0]", r"priors.alpha: expected a list of 2 values .*\(1 values\)"),
        ('[priors]\nalpha = [0.0, "x"]', r"priors.alpha\[1\]: expected a number, got 'x'"),
        ('model = "bns"', r"model: expected one of 'bbh', 'bbh\+nsbh', got 'bns'"),
        ('sampler = "nuts"', r"sampler: unknown key; known keys: model, catalogue, free"),
        ("stesp = 100", r"stesp: unknown key; did you mean 'steps'\?"),
        (
            'model = "bbh+nsbh"\nn_events = 20',
            r"n_events: model 'bbh\+nsbh' samples the rates.*remove n_events",
        ),
        ("n_events = 500", r"n_events: expected at most the catalogue's 69 events, got 500"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(capsys, tmp_path, toml, message):
    err = cli(capsys, tmp_path, toml)
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "checkpoint").exists()  # nothing ran


def test_config_errors_come_before_any_work(capsys, tmp_path):
    # Imports are done; the error itself costs milliseconds, not a compile or a data load.
    t0 = time.perf_counter()
    err = cli(capsys, tmp_path, "n_events = 0\nsteps = 100")
    assert time.perf_counter() - t0 < 2.0
    assert "n_events" in err


def test_catalogue_path_problems_name_the_key(capsys, tmp_path):
    missing = tmp_path / "nope.npz"
    err = cli(capsys, tmp_path, f'catalogue = "{missing}"')
    assert "catalogue: " in err and f"{missing}: no such file" in err
    text = tmp_path / "notes.npz"
    text.write_text("this is not an archive\n")
    err = cli(capsys, tmp_path, None, "--catalogue", str(text))
    assert "--catalogue: " in err and "not a zip archive (is it a text file?)" in err
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3), pe_prior=np.ones((2, 20)))
    err = cli(capsys, tmp_path, f'catalogue = "{other}"')
    assert "catalogue: " in err
    assert "missing arrays ['p_draw', 'n_draw', 'snr', 'post_<name>', 'inj_<name>'" in err
    assert "(it holds ['a', 'pe_prior'])" in err
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(3))
    err = cli(capsys, tmp_path, None, "--catalogue", str(npy))
    assert "an .npy array; expected the .npz archive" in err


def test_catalogue_contents_are_checked_against_the_model(capsys, tmp_path):
    bbh = gw.default_catalogue("bbh")
    err = cli(capsys, tmp_path, None, "--model", "bbh+nsbh", "--catalogue", str(bbh_path()))
    assert "catalogue" in err and "needs an observing_time" in err
    # a catalogue whose posteriors lack a parameter the model needs
    cut = gw.Catalogue(**{**vars(bbh), "posteriors": {"mass_1": bbh.posteriors["mass_1"]}})
    path = cut.save(tmp_path / "cut.npz")
    err = cli(capsys, tmp_path, f'catalogue = "{path}"')
    assert "catalogue: " in err and "missing arrays ['post_mass_ratio', 'post_redshift']" in err
    # one without the truths the job fixes the other hyperparameters at
    blind = gw.Catalogue(**{**vars(bbh), "truths": {"alpha": 3.4}})
    path = blind.save(tmp_path / "blind.npz")
    err = cli(capsys, tmp_path, f'catalogue = "{path}"')
    assert "catalogue: the catalogue has no truths for ['beta'," in err


def bbh_path():
    from importlib.resources import files

    return files("science.gw") / "data" / "gwtc3_plp_mock.npz"


def test_bad_flags(capsys, tmp_path):
    # argparse's own refusals (exit status 2, usage on stderr)
    with pytest.raises(SystemExit) as e:
        _cli.main(["gw-population", "--model", "bns"])
    assert e.value.code == 2 and "--model: invalid choice: 'bns'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        _cli.main(["gw-population", "--size", "huge"])
    assert e.value.code == 2 and "--size: invalid choice" in capsys.readouterr().err
    a_file = tmp_path / "f"
    a_file.write_text("")
    assert _cli.main(["gw-population", "--size", "tiny", "--out", str(a_file)]) == 2
    assert "--out: " in capsys.readouterr().err
    assert _cli.main(["gw-population", "--seed", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--seed: expected a non-negative integer" in capsys.readouterr().err


# ------------------------------------------------------------------------- config, API
def test_api_config_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"overrides: n_events: expected an integer >= 1"):
        gw.JOB.load(size="tiny", overrides={"n_events": -3})
    with pytest.raises(ConfigError, match=r"free: expected a list of strings"):
        gw.JOB.load(overrides={"free": "alpha"})
    # built directly, the config checks its fields too
    with pytest.raises(ConfigError, match=r"steps: expected an integer >= 1, got 0"):
        gw.GWConfig(steps=0)
    with pytest.raises(ConfigError, match=r"priors.alpha: expected \[low, high\] with low < high"):
        gw.GWConfig(priors={"alpha": (5.0, 1.0)})
    with pytest.raises(ConfigError, match=r"catalogue: .*no such file"):
        gw.load_catalogue(gw.GWConfig(catalogue="/nonexistent/c.npz"))
    with pytest.raises(InputError, match=r"config: expected a GWConfig"):
        gw.JOB.run({"steps": 10}, key=jax.random.key(0), out=tmp_path / "o")


def test_catalogue_load_names_the_file(tmp_path):
    with pytest.raises(gw.GWDataError, match="no such file"):
        gw.Catalogue.load(tmp_path / "x.npz")
    np.savez(
        tmp_path / "w.npz",
        pe_prior=np.ones((3, 20)),
        p_draw=np.ones(4),
        n_draw=10,
        snr=np.ones(3),
        post_mass_1=np.ones((3, 21)),
        inj_mass_1=np.ones(4),
        truth_alpha=1,
    )
    with pytest.raises(
        gw.GWDataError, match=r"post_mass_1 has shape \(3, 21\); expected pe_prior's"
    ):
        gw.Catalogue.load(tmp_path / "w.npz")
    assert issubclass(gw.GWDataError, ValueError)


# ------------------------------------------------------------------------- samplers
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ss.FlowVI(steps=0), r"FlowVI.steps: expected a positive integer, got 0"),
        (lambda: ss.FlowVI(steps=-5), r"FlowVI.steps: expected a positive integer, got -5"),
        (lambda: ss.FlowVI(steps="abc"), r"FlowVI.steps: expected a positive integer, got 'abc'"),
        (lambda: ss.FlowVI(steps=True), r"FlowVI.steps: expected a positive integer, got True"),
        (lambda: ss.FlowVI(n_draws=0), r"FlowVI.n_draws: expected a positive integer, got 0"),
        (
            lambda: ss.FlowVI(learning_rate=math.nan),
            r"FlowVI.learning_rate: expected a finite number > 0, got nan",
        ),
        (
            lambda: ss.FlowVI(learning_rate=-1e-3),
            r"FlowVI.learning_rate: expected a finite number > 0, got -0.001",
        ),
        (lambda: ss.FlowVI(anneal=1.0), r"FlowVI.anneal: expected a finite number >= 0 and < 1"),
        (lambda: ss.FlowVI(max_refine=-1), r"FlowVI.max_refine: expected an integer >= 0"),
        (lambda: ss.FlowVI(flow={"layers": 2}), r"FlowVI.flow: expected a science.samplers"),
        (lambda: ss.FlowConfig(layers=0), r"FlowConfig.layers: expected a positive integer"),
        (
            lambda: ss.FlowConfig(learning_rate=math.inf),
            r"FlowConfig.learning_rate: expected a finite number > 0, got inf",
        ),
        (lambda: ss.FlowMCMC(n_chains=0), r"FlowMCMC.n_chains: expected a positive integer"),
        (lambda: ss.FlowMCMC(target_accept=1.5), r"FlowMCMC.target_accept: expected a finite"),
        (lambda: ss.NUTS(n_warmup=-1), r"NUTS.n_warmup: expected an integer >= 0, got -1"),
        (lambda: ss.NUTS(n_samples="10"), r"NUTS.n_samples: expected a positive integer"),
        (
            lambda: ss.NUTS(n_warmup=151, chunk=100),
            r"NUTS.n_warmup: expected a count that splits into equal chunks of at most chunk "
            r"\(100\) steps, got 151",
        ),
    ],
)
def test_sampler_settings_are_checked_at_construction(make, message):
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=message):
        make()
    assert time.perf_counter() - t0 < 0.5


def gauss_target():
    return ss.Target(lambda p: -0.5 * p["x"] ** 2, {"x": dist.Normal(0.0, 1.0)})


def test_sampler_given_as_a_string():
    t = gauss_target()
    with pytest.raises(
        InputError,
        match=r"sampler: expected a sampler object .* got 'nuts'; "
        r"write science.samplers.NUTS\(\)",
    ):
        ss.sample(jax.random.key(0), t, "nuts")
    with pytest.raises(InputError, match=r"write science.samplers.FlowVI\(\)"):
        ss.sample(jax.random.key(0), t, "flow-vi")
    with pytest.raises(InputError, match=r"sampler: expected a sampler object .*got None"):
        ss.sample(jax.random.key(0), t, None)
    with pytest.raises(InputError, match=r"target: expected a science.samplers.Target"):
        ss.sample(jax.random.key(0), lambda x: x, ss.FlowVI())
    with pytest.raises(InputError, match=r"key: expected a JAX PRNG key"):
        ss.sample(0, t, ss.FlowVI(steps=10, n_draws=10, draw_batch=10))


def test_vi_chunks_of_uneven_steps():
    from science.samplers._vi import _phases

    assert [(p.n_chunks, p.chunk_len) for p in _phases(0, 31, 20)] == [(1, 20), (1, 11)]
    assert [(p.n_chunks, p.chunk_len) for p in _phases(0, 30, 20)] == [(2, 15)]
    assert [(p.n_chunks, p.chunk_len) for p in _phases(0, 300, 250)] == [(2, 150)]  # as before
    assert [(p.n_chunks, p.chunk_len) for p in _phases(1, 1001, 250)] == [(4, 250), (1, 1)]
    assert [(p.n_chunks, p.chunk_len) for p in _phases(0, 40, 250)] == [(1, 40)]


@pytest.mark.slow
def test_vi_steps_need_not_divide_into_chunks():
    # 31 steps in chunks of 20: one chunk of 20 and one of 11 (was a ValueError after init).
    t = gauss_target()
    vi = ss.FlowVI(steps=31, chunk=20, n_draws=200, draw_batch=200, max_refine=0)
    r = ss.sample(jax.random.key(0), t, vi, progress=False)
    assert r.samples.shape == (1, 200, 1)
    assert len(r.diagnostics["stages"]) == 1 and r.diagnostics["stages"][0]["steps"] == 31


def test_errors_derive_from_the_root():
    from jaxaccel import Error

    for cls in (ss.SamplerError, ss.TargetError, gw.GWDataError):
        assert issubclass(cls, Error)
    assert issubclass(ss.SamplerError, FloatingPointError)
    assert issubclass(ss.TargetError, ValueError) and issubclass(gw.GWDataError, ValueError)
    with pytest.raises(ss.TargetError, match="prior: expected a non-empty dict"):
        ss.Target(lambda p: jnp.zeros(()), {})
