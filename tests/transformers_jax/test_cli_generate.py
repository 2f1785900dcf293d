"""``jaxaccel generate`` with the real SmolLM2 (slow: loads the 98 MB GGUF)."""

import json

import pytest

from jaxaccel import _cli
from transformers_jax._gguf import find_smollm2_gguf

pytestmark = pytest.mark.slow


def test_generate_answers_a_chat_prompt(tmp_path, capsys):
    try:
        find_smollm2_gguf()  # locates the file without importing the plugin module
    except FileNotFoundError as e:
        pytest.skip(str(e))
    rc = _cli.main(
        [
            "generate",
            "--prompt",
            "What is the capital of France?",
            "--size",
            "small",
            "--out",
            str(tmp_path),
            "--kv",
            "int8",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "Paris" in summary["text"] and "Paris" in out  # streamed and returned
    assert summary["new_tokens"] > 0 and summary["tokens_per_second"] > 0
    assert "tok/s" in out


def test_generate_argument_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _cli.main(["generate", "--prompt", "  ", "--out", str(tmp_path)])
    assert "--prompt is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli.main(["generate", "--prompt", "hi", "--temperature", "-1", "--out", str(tmp_path)])
    assert "--temperature" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        _cli.main(
            [
                "generate",
                "--prompt",
                "hi",
                "--gguf",
                str(tmp_path / "missing.gguf"),
                "--out",
                str(tmp_path),
            ]
        )
