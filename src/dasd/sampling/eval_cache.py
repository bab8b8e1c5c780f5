"""The evaluation cache: what `dasd eval` already generated with the same model and settings, in any workdir, is
read back instead of generated again (`cache=auto`, the default: `$DASD_CACHE/eval`, local `hf` backend only).

    settings, reason = cache_settings(config.backend, chat_template_kwargs={})   # None + why, for other backends
    cache = EvalCache(default_root(), settings)
    generator = FixedBatches(fixed_batches(requests, config.backend.batch_size), lambda: make_backend(...), cache)
    generate_records(generator, missing, context, writer, errors, ...)          # as with any backend

What is exact. Each sample is drawn with its own seed (from the question id, temperature and sample index:
`dasd.backends.hf.SeededSampler`), so the other questions of a run do not choose its tokens — but they change its
floating point: the demo world's teacher gives the same request log-probs that differ by up to 1.7e-5 when its
batch holds other requests (and when torch runs on another number of threads), and a draw that falls that close
to a boundary between two tokens changes the text: the teacher's 240 demo samples, batched as `hf` sorts a whole
run (by prompt length) and batched in fixed batches, differ in one token of one sample. So the unit of reuse is the
batch, not the sample: `dasd eval` on `hf` generates a benchmark in fixed batches — `backend.batch_size` consecutive
samples in question order (question, sample index), whatever the limit, each one `generate` call — and a batch is
read back only when the cache holds every sample of exactly that batch (the same requests in the same order), made
with the same model weights (a content hash of the model's files), the same runtime (device, dtype, attention,
threads, the code that renders, samples and decodes, torch/transformers/tokenizers versions) and the same
chat-template variables. A larger limit therefore reuses every whole batch of a smaller one and generates the rest,
and the records a run writes are the bytes it writes without the cache.

What it keeps: per sample the generated text and how it ended — not token log-probs, which an evaluation does not
record — one JSON line each in `<folder>/<settings key>/records.jsonl` (`settings.json` beside it says what the
key covers), appended under a file lock (`RecordWriter(shared=True)`): runs at the same time never interleave
lines, and a crash leaves at most a torn last line, which is skipped and then cut. Two runs that generate the same
batch at once both append it; readers keep the first copy.

Not cached: the openai backend (a server's weights cannot be hashed from here) and vllm (its continuous batching
mixes requests differently from run to run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..backends import Backend, BackendConfig, GenerationRequest, GenerationResult
from ..cache.keys import digest, file_sha256
from ..data.io import RecordWriter, read_shared_records, write_json_atomic
from ..errors import DasdError
from ..models.identity import model_identity

# Bump when the meaning of a cached line changes.
CACHE_VERSION = 1

# The code between a request and its result on the hf backend: an edit to any of these files (even a comment)
# gives a new settings key, so a sampler or decoder change never reads results the old code made.
GENERATION_CODE = (
    "backends/hf.py",
    "backends/base.py",
    "models/loading.py",
    "models/restricted_head.py",
    "text/prompts.py",
    "text/tokens.py",
)

# What the result of a request is kept as: the fields `dasd.sampling.generation.response_record` reads without
# log-probs.
RESULT_FIELDS = (
    "raw_text",
    "finish_reason",
    "completion_tokens",
    "prompt_tokens",
    "prefilled_open",
    "logprob_mode",
    "server_reasoning",
    "server_content",
    "sampling",
)


def default_root() -> Path:
    """`$DASD_EVAL_CACHE`, else `$DASD_CACHE/eval` (the tests give each test its own)."""
    from ..models.assets import cache_dir

    return Path(os.environ.get("DASD_EVAL_CACHE") or cache_dir() / "eval")


def runtime(backend: BackendConfig) -> dict[str, Any]:
    """What decides the floating point of a local generation besides the weights: the resolved device, dtype and
    attention, the thread count on CPU, the libraries' versions and the code of dasd's generation path."""
    import tokenizers
    import torch
    import transformers

    from ..models.loading import resolve_attention, resolve_device, resolve_dtype

    device = resolve_device(backend.device)
    package = Path(__file__).resolve().parents[1]
    return {
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "threads": None if device.startswith("cuda") else torch.get_num_threads(),
        "dtype": str(resolve_dtype(backend.dtype, device)).replace("torch.", ""),
        "compute_dtype": backend.compute_dtype,
        "attention": resolve_attention(backend.attn_implementation, device),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "code": digest({name: file_sha256(package / name) for name in GENERATION_CODE}),
    }


def cache_settings(
    backend: BackendConfig, *, chat_template_kwargs: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """Everything besides the requests themselves that decides what `backend` generates, as a JSON-able dict —
    or None and the reason when its outputs cannot be pinned down (then nothing is cached)."""
    if backend.name != "hf":
        return None, f"the {backend.name} backend is not cached (only hf: local weights, fixed batches)"
    try:
        model = model_identity(backend.model, backend.revision)
        tokenizer = None
        if backend.tokenizer is not None:
            tokenizer = model_identity(backend.tokenizer, None)
    except DasdError as exc:
        return None, str(exc)
    settings = {
        "version": CACHE_VERSION,
        "backend": backend.name,
        "model": model,
        "tokenizer": tokenizer,
        "chat_template_kwargs": chat_template_kwargs,
        **runtime(backend),
    }
    return settings, None


def request_key(request: GenerationRequest) -> dict[str, Any]:
    """What a request asks for: everything but its id (the seed already derives from it)."""
    fields = asdict(request)
    del fields["id"]
    return fields


def fixed_batches(requests: list[GenerationRequest], size: int) -> list[list[GenerationRequest]]:
    """A benchmark's requests (all of them, in question order) in consecutive batches of `size`: the same batches
    for every limit, except the last one of the shorter run.

    >>> [len(batch) for batch in fixed_batches([GenerationRequest(id=str(i), messages=[], temperature=1.0)
    ...     for i in range(10)], 4)]
    [4, 4, 2]
    """
    return [requests[start : start + size] for start in range(0, len(requests), size)]


class EvalCache:
    """The cached results of one settings key: `lookup` a batch (all of it or nothing), `store` a generated one."""

    def __init__(self, root: str | os.PathLike, settings: dict[str, Any]):
        self.settings = settings
        self.folder = Path(root) / digest(settings)
        self.records_file = self.folder / "records.jsonl"
        self._writer: RecordWriter | None = None
        self._batches: dict[str, dict[int, dict[str, Any]]] = {}
        for record in read_shared_records(self.records_file):
            batch, _, position = str(record.get("id", "")).rpartition(":")
            if batch and position.isdigit():
                self._batches.setdefault(batch, {}).setdefault(int(position), record)  # the first copy

    def batch_key(self, batch: list[GenerationRequest]) -> str:
        return digest([self.folder.name, [request_key(request) for request in batch]])

    def lookup(self, batch: list[GenerationRequest]) -> list[GenerationResult] | None:
        """The results of `batch` in the order its generation gave them, when every one is cached; else None."""
        lines = self._batches.get(self.batch_key(batch), {})
        if any(position not in lines for position in range(len(batch))):
            return None
        ordered = sorted(range(len(batch)), key=lambda position: lines[position]["order"])
        return [GenerationResult(id=batch[position].id, **lines[position]["result"]) for position in ordered]

    def store(self, batch: list[GenerationRequest], results: list[GenerationResult]) -> None:
        """Append a generated batch (its results in the order they came), unless a result failed: a failed request
        is retried by the next run, so its batch is generated again then."""
        if any(result.error for result in results) or len(results) != len(batch):
            return
        if self._writer is None:
            if not (self.folder / "settings.json").exists():
                write_json_atomic(self.folder / "settings.json", self.settings)
            self._writer = RecordWriter(self.records_file, shared=True)
        key = self.batch_key(batch)
        position_of = {request.id: position for position, request in enumerate(batch)}
        lines = self._batches.setdefault(key, {})
        for order, result in enumerate(results):
            position = position_of[result.id]
            line = {
                "id": f"{key}:{position}",
                "order": order,
                "result": {name: getattr(result, name) for name in RESULT_FIELDS},
            }
            if line["id"] not in self._writer.done:
                self._writer.write(line)
            lines.setdefault(position, line)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class FixedBatches(Backend):
    """Generation in fixed batches (`fixed_batches`), each read from `cache` when it holds the whole batch, else
    generated by the backend `open_backend` gives (opened at the first batch the cache lacks) and stored.

    `generate(requests)` yields the results of `requests` only; a batch that holds one of them is generated whole,
    so a resumed run makes each sample in the batch an uninterrupted run makes it in. `reused` and `generated`
    count the results yielded from the cache and from generation."""

    name = "hf"

    def __init__(
        self, batches: list[list[GenerationRequest]], open_backend: Callable[[], Backend], cache: EvalCache | None
    ):
        self.batches = batches
        self.open_backend = open_backend
        self.cache = cache
        self.reused = 0
        self.generated = 0

    def generate(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        wanted = {request.id for request in requests}
        for batch in self.batches:
            if not any(request.id in wanted for request in batch):
                continue
            results = self.cache.lookup(batch) if self.cache is not None else None
            from_cache = results is not None
            if results is None:
                results = list(self.open_backend().generate(batch))  # one batch: batch_size requests at most
                if self.cache is not None:
                    self.cache.store(batch, results)
            for result in results:
                if result.id in wanted:
                    if from_cache:
                        self.reused += 1
                    else:
                        self.generated += 1
                    yield result
