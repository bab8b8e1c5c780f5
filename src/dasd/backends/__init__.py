"""Generation backends: hf (transformers), openai (OpenAI-compatible servers), vllm (offline engine).

`make_backend(config)` picks one by `config.name`; each backend module imports only `base`, so the
heavy dependencies of the others (torch, the openai client, vLLM) load only when used.
"""

from __future__ import annotations

from typing import Any

from .base import (
    Backend,
    BackendConfig,
    GenerationRequest,
    GenerationResult,
    ScoreRequest,
    ScoreResult,
    server_log,
    with_launch_log,
)

__all__ = [
    "server_log",
    "with_launch_log",
    "Backend",
    "BackendConfig",
    "GenerationRequest",
    "GenerationResult",
    "ScoreRequest",
    "ScoreResult",
    "make_backend",
]


def make_backend(
    config: BackendConfig,
    *,
    chat_template_kwargs: dict[str, Any] | None = None,
    prompt_format: str = "chat_template",
) -> Backend:
    if config.name == "hf":
        from .hf import HFBackend

        return HFBackend(config, chat_template_kwargs=chat_template_kwargs or {})
    if config.name == "openai":
        from .openai_compat import OpenAIBackend

        return OpenAIBackend(config, chat_template_kwargs=chat_template_kwargs or {}, prompt_format=prompt_format)
    if config.name == "vllm":
        from .vllm_engine import VLLMBackend

        return VLLMBackend(config, chat_template_kwargs=chat_template_kwargs or {})
    raise ValueError(config.name)
