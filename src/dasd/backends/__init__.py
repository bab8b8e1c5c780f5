"""Generation backends: hf (transformers), openai (OpenAI-compatible servers), vllm (offline engine)."""

from .base import Backend, BackendConfig, GenerationRequest, GenerationResult, make_backend

__all__ = ["Backend", "BackendConfig", "GenerationRequest", "GenerationResult", "make_backend"]
