"""``jaxaccel generate`` (transformers_jax.JOB): bad input rejected before the model loads, the job
end to end on a tiny GGUF (fast), and with the real SmolLM2 (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jaxaccel
import transformers_jax as tj
from transformers_jax import JOB, GenerateConfig

from .test_gguf import TINY, TINY_TYPES, random_weights, write_gguf

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "tiny.gguf"
    write_gguf(path, TINY, random_weights(TINY), TINY_TYPES)  # context 128 tokens
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """Config errors must come before the model loads: loading fails the test."""

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the bad input was rejected")

    monkeypatch.setattr("transformers_jax._cli.load_gguf", boom)


def _reject(argv, match, out):
    t0 = time.perf_counter()
    with pytest.raises(jaxaccel.ConfigError, match=match):
        JOB.main([*argv, "--out", str(out)])
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"rejected after {elapsed:.1f} s"


def test_max_new_tokens_zero_is_rejected_before_the_model_loads(tmp_path, no_model_load):
    _reject(
        ["--prompt", "hi", "--max-new-tokens", "0"],
        r"^--max-new-tokens: expected an integer >= 1, got 0$",
        tmp_path,
    )
    assert not (tmp_path / "summary.json").exists()


def test_command_line_prints_one_line_and_exits_2(tmp_path):
    """The real ``jaxaccel`` command: exit status 2, one line naming the flag, no model load
    (a generous bound: the process start and the jax import take a few seconds here)."""
    exe = Path(sys.executable).with_name("jaxaccel")
    t0 = time.perf_counter()
    r = subprocess.run(
        [str(exe), "generate", "--prompt", "hi", "--max-new-tokens", "0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr == "jaxaccel generate: error: --max-new-tokens: expected an integer >= 1, got 0\n"
    )
    assert elapsed < 60, elapsed  # the model load alone took 17-100 s before this check existed


BAD_FLAGS = [
    (["--prompt", "hi", "--max-new-tokens", "-5"], r"--max-new-tokens: expected an integer >= 1"),
    (["--prompt", "hi", "--max-new-tokens", "abc"], r"--max-new-tokens: .* got 'abc'"),
    (["--prompt", "hi", "--max-new-tokens", "2.5"], r"--max-new-tokens: .* got '2.5'"),
    ([], r"prompt: expected a non-empty user message: pass --prompt"),
    (["--prompt", "  \n"], r"^--prompt: expected a non-empty user message"),
    (["--prompt", "hi", "--temperature", "-1"], r"--temperature: expected a number >= 0"),
    (["--prompt", "hi", "--temperature", "nan"], r"--temperature: expected a finite number"),
    (["--prompt", "hi", "--temperature", "1", "--top-k", "0"], r"--top-k: .* >= 1, got 0"),
    (["--prompt", "hi", "--temperature", "1", "--top-p", "0"], r"--top-p: .* > 0 and <= 1"),
    (["--prompt", "hi", "--temperature", "1", "--top-p", "1.5"], r"--top-p: .* got 1.5"),
    (["--prompt", "hi", "--top-k", "5"], r"--top-k: top_k only applies when sampling"),
    (["--prompt", "hi", "--top-p", "0.9"], r"--top-p: top_p only applies when sampling"),
    (["--prompt", "hi", "--no-chat", "--system", "x"], r"--system: .* needs the chat template"),
    (["--prompt", "hi", "--system", " "], r"--system: expected a non-empty system message"),
    (["--prompt", "hi", "--gguf", ""], r"--gguf: expected a path"),
]


@pytest.mark.parametrize(("argv", "match"), BAD_FLAGS)
def test_bad_flags(argv, match, tmp_path, no_model_load):
    _reject(argv, match, tmp_path)


@pytest.mark.parametrize("flag", ["--quantize", "--kv"])
def test_unknown_choice(flag, tmp_path, capsys, no_model_load):
    with pytest.raises(SystemExit) as e:  # argparse's own choice check, before any config
        JOB.main(["--prompt", "hi", flag, "int3", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: invalid choice: 'int3'" in err


def test_bad_model_files(tmp_path, tiny_gguf, no_model_load):
    base = ["--prompt", "hi", "--gguf"]
    _reject(
        [*base, str(tmp_path / "missing.gguf")], r"--gguf: GGUF file not found: .*missing", tmp_path
    )
    text = tmp_path / "notes.gguf"
    text.write_text("not a model\n" * 10)
    _reject([*base, str(text)], r"--gguf: not a valid GGUF file: .*notes.gguf", tmp_path)
    _reject([*base, str(tmp_path)], r"--gguf: not a GGUF file \(not a regular file\)", tmp_path)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:2000])
    _reject([*base, str(cut)], r"--gguf: not a valid GGUF file: .*cut.gguf \(truncated", tmp_path)
    falcon = tmp_path / "falcon.gguf"
    write_gguf(falcon, TINY, {}, TINY_TYPES, arch="falcon")
    _reject([*base, str(falcon)], r"--gguf: .*unsupported architecture 'falcon'", tmp_path)
    # the tiny model's context is 128 tokens: 8 new ones fit, 500 do not
    _reject(
        [*base, str(tiny_gguf), "--max-new-tokens", "500"],
        r"--max-new-tokens: expected at most 112 \(the model's context is 128",
        tmp_path,
    )


def test_smollm2_not_installed(tmp_path, monkeypatch, no_model_load):
    def missing():
        raise tj.ModelFileNotFoundError("SmolLM2-135M-Instruct.Q4_1.gguf not found: not installed")

    monkeypatch.setattr("transformers_jax._cli.find_smollm2_gguf", missing)
    _reject(
        ["--prompt", "hi"],
        r"gguf: .*not installed; or pass a model file with --gguf FILE",
        tmp_path,
    )


def test_bad_toml(tmp_path, no_model_load):
    cases = {
        'prompt = "hi"\nmax_tokens = 5\n': r"max_tokens: unknown key; did you mean 'max_new_tokens'",
        'prompt = "hi"\nmax_new_tokens = "many"\n': r"\.toml: max_new_tokens: expected an integer",
        'prompt = ["hi"]\n': r"\.toml: prompt: expected a string",
        'prompt = "hi"\nquantize = "int3"\n': r"quantize: expected one of 'none', .* got 'int3'",
    }
    for i, (text, match) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.toml"
        path.write_text(text)
        _reject(["--config", str(path)], match, tmp_path)


def test_config_from_python():
    cfg = JOB.load(size="tiny", overrides={"prompt": "hi"})
    assert isinstance(cfg, GenerateConfig) and cfg.max_new_tokens == 8
    assert JOB.load(size="full", overrides={"prompt": "hi"}).max_new_tokens == 256
    with pytest.raises(
        jaxaccel.ConfigError, match="overrides: max_new_tokens: expected an integer >= 1"
    ):
        JOB.load(overrides={"prompt": "hi", "max_new_tokens": 0})


def test_job_on_a_tiny_gguf(tiny_gguf, tmp_path, capsys):
    """The whole job on a 2-layer GGUF: streamed text == summary text; prompt tokens as the
    tokenizer counts them independently."""
    argv = ["--prompt", "the quick brown fox", "--size", "tiny", "--gguf", str(tiny_gguf)]
    assert JOB.main([*argv, "--out", str(tmp_path), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["job"] == "generate" and s["model"] == "tiny.gguf"
    assert s["config"]["max_new_tokens"] == 8 and s["config"]["gguf"] == str(tiny_gguf)
    assert 1 <= s["new_tokens"] <= 8 and s["tokens_per_second"] > 0
    assert out.startswith(s["text"])  # streamed from inside the loop, then the table
    assert f"{s['new_tokens']} tokens in" in out and "tok/s" in out
    tok = tj.load_gguf(tiny_gguf).tokenizer
    chat = tok.apply_chat_template([{"role": "user", "content": "the quick brown fox"}])
    assert s["prompt_tokens"] == len(tok.encode(chat))


# --------------------------------------------------------------------------- SmolLM2 (slow)


@pytest.mark.slow
def test_generate_answers_a_chat_prompt(tmp_path, capsys):
    try:
        tj.find_smollm2_gguf()  # locates the file without importing the plugin module
    except FileNotFoundError as e:
        pytest.skip(str(e))
    argv = ["--prompt", "What is the capital of France?", "--size", "small", "--kv", "int8"]
    assert JOB.main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "Paris" in summary["text"] and "Paris" in out  # streamed and returned
    assert summary["new_tokens"] > 0 and summary["tokens_per_second"] > 0
    assert summary["load_seconds"] < 60  # 17-100 s before the loader was rewritten; ~2 s now
    assert "tok/s" in out
