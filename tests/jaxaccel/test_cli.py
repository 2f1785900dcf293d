"""The command line: the quantize demo at tiny size, explain, and argument errors."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import jaxaccel as ja
from jaxaccel import _cli


def test_quantize_demo_tiny(tmp_path, capsys):
    rc = _cli.main(
        [
            "quantize-demo",
            "--size",
            "tiny",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--recipes",
            "int4 g128,w8a8 smoothquant,gptq int4 g128",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "int4 g128" in out and "w8a8 smoothquant" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["recipe"]: r for r in summary["rows"]}
    assert set(rows) == {"fp32", "int4 g128", "w8a8 smoothquant", "gptq int4 g128"}
    assert rows["int4 g128"]["ratio_bytes"] > 7.0  # d=128: a few f32 biases dilute the 7.5x
    assert 0 < rows["w8a8 smoothquant"]["rel_err"] < 0.02
    assert 0 < rows["int4 g128"]["rel_err"] < 0.1
    # Calibrated GPTQ is no worse than round-to-nearest on held-out inputs of the same kind.
    assert rows["gptq int4 g128"]["rel_err"] <= rows["int4 g128"]["rel_err"] * 1.05


def test_cli_errors(tmp_path, capsys):
    assert _cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert _cli.main(["quantize-demo", "--recipes", "int3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--recipes[0]: expected one of 'int8 weight-only'" in err and "got 'int3'" in err
    assert err.count("\n") == 1  # one line, no traceback
    missing = tmp_path / "missing.toml"
    assert _cli.main(["quantize-demo", "--config", str(missing), "--out", str(tmp_path)]) == 2
    assert f"--config: file {missing} does not exist" in capsys.readouterr().err
    assert _cli.main(["--help"]) == 0
    assert "quantize-demo" in capsys.readouterr().out


def test_explain_reports_bytes_and_kernels(getkey):
    mlp = eqx.nn.Sequential([eqx.nn.Linear(256, 128, key=getkey()), eqx.nn.Lambda(jax.nn.relu)])
    q = ja.quantize(mlp, ja.RTN(fmt=ja.Int4(), granularity=ja.Group(128)))
    rep = ja.explain(q, batch=jnp.zeros((8, 256), jnp.float32), measure=False)
    assert rep.tokens == 8
    (layer,) = rep.layers
    assert layer.path == "layers.0.weight" and layer.shape == (128, 256)
    assert layer.bits_per_weight == pytest.approx(4.25, abs=0.01)
    assert layer.kernel.startswith("quant_matmul[int4]/")
    assert rep.total_float_bytes == (128 * 256 + 128) * 4
    assert rep.total_bytes == 128 * 256 // 2 + 2 * 128 * 4 + 128 * 4
    assert layer.bound_ms > 0 and layer.float_bound_ms >= layer.bound_ms
    text = str(rep)
    assert "layers.0.weight" in text and "smaller" in text
    w8 = ja.quantize(mlp, ja.RTN(activations=ja.ActQuant()))
    assert ja.explain(w8, batch=8, measure=False).layers[0].kernel.startswith("int8_matmul/")
    measured = ja.explain(q, batch=8).layers[0]
    assert measured.measured_ms > 0 and measured.measured_float_ms > 0
    slower = measured.measured_ms > measured.measured_float_ms
    assert (measured.warning is not None) == slower
