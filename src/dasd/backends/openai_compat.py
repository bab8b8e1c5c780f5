"""Generation through any OpenAI-compatible server (vLLM, SGLang, llama.cpp) with the async `openai` client.

* streamed answers (`stream`, on by default): chat and completions requests stream, with
  `stream_options.include_usage`, and the answer is assembled from its chunks — text, log-probs, token ids, bytes,
  reasoning, tool calls, finish reason and usage, exactly as from a whole answer (which is assembled by the same
  code as a one-chunk stream). Answers are read as plain dicts through the client's own request path and event
  reader (`client.post(..., cast_to=object)`), not as `openai` model objects, whose construction per event was ~40%
  of the client's CPU per streamed token (benchmarks/RESULTS.md). `request_timeout_s` then bounds the silence
  between two reads of the connection (httpx applies its read timeout to every read), not the whole answer: a
  40K-token answer at ~50 tok/s takes ~13 minutes and finishes, where a whole-answer timeout would restart it from
  scratch on every retry. There is no whole-answer limit: a server that keeps sending tokens is making progress and
  stops at `max_tokens`, and any floor on tokens/s would abort sound answers on a loaded server (vLLM slows every
  sequence when it batches more of them). A stream that is cut, falls silent for `request_timeout_s`, reports an
  error event or ends without a finish reason is retried like any failed request; a partial answer is never
  returned. Prompt scoring (`echo`, one generated token) is not streamed;
* bounded concurrency per server: `concurrency` requests in flight on each base URL (so
  `concurrency x len(base_urls)` in all); a request starts on the least busy server (ties in turn), and a
  failed attempt moves to the next URL;
* retries with exponential backoff and full jitter on 429, 5xx, timeouts, dropped connections and
  unreadable responses (the client's own retries are off, so every retry is counted here); an answer that
  arrives whole but cannot be used (`invalid_response`: a ValueError while reading it) is not retried;
  a server's `Retry-After` is honoured;
* every sampling parameter that shapes the distribution is sent with the value dasd intends (top_k -1
  for off, min_p 0, neutral penalties), so a server's defaults (`vllm serve --generation-config auto`
  applies the model's generation_config.json) never apply; the values sent are recorded per sample;
* `chat` mode sends messages; `completions` mode renders the prompt locally — the teacher's chat
  template, or harmony for gpt-oss — and sends its token ids, so the server sees exactly the
  prompt we mean;
* tokens come back as ids (`return_tokens_as_token_ids`, vLLM) and are decoded with the local
  tokenizer when one is configured; otherwise from the chat `bytes` field or token strings. The
  generated text is rebuilt from the tokens, so every token has an exact character span.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DasdError
from ..text.prompts import check_chat_continuation, render_chat_prompt
from ..text.tokens import TokenBytes, decode_bytes_with_spans
from .base import (
    Backend,
    BackendConfig,
    GenerationRequest,
    GenerationResult,
    ScoreRequest,
    ScoreResult,
    sampling_params,
)

FINISH_MAP = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "eos": "stop",
}


class RetryableResponse(Exception):
    """The server answered, but with something unusable (e.g. no choices); try again."""


class IncompleteStream(RetryableResponse):
    """A stream that ended cleanly before its answer did (no finish reason): the rest never came; ask again."""


class _Answer:
    """One answer read from its parts: the chunks of a stream, or a whole answer as its only part, each as the plain
    dict of its JSON (no `openai` model objects: building one per server-sent event was ~40% of the client's CPU).
    A chat chunk's `delta` carries the fields of a whole answer's `message`, and a completions chunk's choice has
    the shape of a whole answer's, so streamed and whole answers are assembled by the same code."""

    def __init__(self, *, chat: bool):
        self.chat = chat
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.entries: list[dict[str, Any]] = []  # chat: the log-prob entry of every token
        self.tokens: list[str] = []  # completions: every token and its log-prob
        self.token_logprobs: list[float | None] = []
        self.tool_calls = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.parts = 0

    def add(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise RetryableResponse(f"an answer that is not a JSON object ({type(data).__name__})")
        usage = data.get("usage")
        if usage is not None:  # a stream's last chunk (include_usage), with no choices
            self.usage = usage
        for choice in data.get("choices") or ():
            if choice.get("index", 0) != 0:  # n=1: there is no other
                continue
            self.parts += 1
            finish_reason = choice.get("finish_reason")
            if finish_reason:
                self.finish_reason = finish_reason
            logprobs = choice.get("logprobs")
            if self.chat:
                part = choice["delta"] if "delta" in choice else choice.get("message")
                if part is not None:
                    content = part.get("content")
                    if content:
                        self.text.append(content)
                    reasoning = part.get("reasoning_content") or part.get("reasoning")
                    if reasoning:
                        self.reasoning.append(reasoning)
                    if part.get("tool_calls"):
                        self.tool_calls = True
                if logprobs is not None and logprobs.get("content"):
                    self.entries.extend(logprobs["content"])
            else:
                text = choice.get("text")
                if text:
                    self.text.append(text)
                if logprobs is not None and logprobs.get("tokens"):
                    tokens = logprobs["tokens"]
                    self.tokens.extend(tokens)
                    self.token_logprobs.extend(logprobs.get("token_logprobs") or [None] * len(tokens))

    def finish(self, *, streamed: bool) -> None:
        """Raise unless the answer is whole: a whole answer without choices, or a stream that ended without a
        finish reason (the server or the network stopped it half-way) — both are asked again."""
        if not self.parts:
            raise RetryableResponse("stream without choices" if streamed else "response without choices")
        if streamed and self.finish_reason is None:
            raise IncompleteStream("the stream ended before the answer did (no finish reason)")


def _token_piece(token: str, entry_bytes: Any, token_bytes: TokenBytes | None) -> bytes:
    if token.startswith("token_id:") and token_bytes is not None:
        return token_bytes.pieces([int(token[len("token_id:") :])])[0]
    if entry_bytes is not None:
        return bytes(entry_bytes)
    if token.startswith("bytes:"):
        # vLLM's spelling of a token that is not valid UTF-8 on its own: "bytes:\\xe2\\x80"
        return token[len("bytes:") :].encode("latin-1").decode("unicode_escape").encode("latin-1")
    return token.encode("utf-8")


def drop_end_token(result: GenerationResult, special_ids: set[int] | None) -> None:
    """Servers (vLLM) list the end-of-turn token among the log-probs of a stopped response; it is not
    part of the answer (the server's own text leaves it out), so it is dropped here as the hf backend
    does. With token ids we know it by id; otherwise by the server's text not containing it."""
    if result.finish_reason != "stop" or not result.token_spans or result.raw_text is None:
        return
    if result.token_ids and special_ids is not None:
        is_end = result.token_ids[-1] in special_ids
    else:
        last_start = result.token_spans[-1][0]
        content = (result.server_content or "").rstrip()
        is_end = (
            bool(content)
            and not result.raw_text.rstrip().endswith(content)
            and result.raw_text[:last_start].rstrip().endswith(content)
        )
    if is_end:
        last_start = result.token_spans[-1][0]
        result.raw_text = result.raw_text[:last_start]
        result.token_spans = result.token_spans[:-1]
        result.token_logprobs = result.token_logprobs[:-1]
        if result.token_ids:
            result.token_ids = result.token_ids[:-1]


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(
        self, config: BackendConfig, *, chat_template_kwargs: dict[str, Any], prompt_format: str = "chat_template"
    ):
        self.config = config
        self.chat_template_kwargs = chat_template_kwargs
        self.prompt_format = prompt_format
        self.tokenizer = None
        self.token_bytes: TokenBytes | None = None
        if config.tokenizer:
            from ..models.assets import load_tokenizer

            self.tokenizer = load_tokenizer(config.tokenizer)
            self.token_bytes = TokenBytes(self.tokenizer)
        self.special_ids = set(self.tokenizer.all_special_ids) if self.tokenizer is not None else None
        if config.mode == "completions" and self.tokenizer is None and prompt_format != "harmony":
            raise DasdError(
                "backend.mode=completions renders the prompt locally: set backend.tokenizer (or prompt_format=harmony)"
            )
        self.server = None
        if config.launch:  # a server of its own on this node, stopped by close()
            from .launch import LaunchedServer

            self.server = LaunchedServer(
                config.launch,
                model=config.model,
                log_path=Path(config.launch_log or f"dasd-server-{os.getpid()}.log"),
                timeout_s=config.launch_timeout_s,
            )
            self.config = config = config.model_copy(update={"base_urls": [self.server.start()]})
        if not config.base_urls:
            raise DasdError("backend.base_urls is empty")
        self.api_key = config.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.retries = 0
        # what the log-probs of this server were checked to be: raw after a passing probe
        self.logprob_mode = "unverified"
        self.retry_reasons: dict[str, int] = {}
        self.requests_sent = 0
        self.failures = 0
        self._lock = threading.Lock()

    # -- prompts --------------------------------------------------------------------------------
    def render_prompt_ids(self, request: GenerationRequest) -> tuple[list[int], bool]:
        if self.prompt_format == "harmony":
            from ..text.harmony import render_prompt_ids

            effort = str(self.chat_template_kwargs.get("reasoning_effort", "medium"))
            return render_prompt_ids(
                request.messages, reasoning_effort=effort, assistant_prefix=request.assistant_prefix
            ), False
        return render_chat_prompt(
            self.tokenizer,
            request.messages,
            assistant_prefix=request.assistant_prefix,
            chat_template_kwargs=self.chat_template_kwargs,
        )

    def check_continuation(self, request: GenerationRequest) -> None:
        """Before continuing prefixes (`dasd mix`): chat mode leaves the rendering to the server's template,
        which must then turn the prefix into exactly generation prompt + prefix — checked with the same
        template locally; completions mode and harmony render that text here, so they need no check."""
        if self.config.mode != "chat" or request.assistant_prefix is None:
            return
        if self.tokenizer is None:
            raise DasdError(
                "mode=chat: set the model's tokenizer so that dasd can check how its template continues a prefix "
                "(or use mode=completions)"
            )
        check_chat_continuation(self.tokenizer, request.messages, request.assistant_prefix, **self.chat_template_kwargs)

    # -- one request ----------------------------------------------------------------------------
    def _sampling(self, request: GenerationRequest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(OpenAI arguments, extra body, the sampling parameters as sent). Every parameter that shapes the
        distribution is stated — none is left to the server's defaults; `extra_body` may override them."""
        sampling = {**sampling_params(request), "seed": request.seed % (2**31)}  # the API takes a 32-bit seed
        for key in sampling:
            if key in self.config.extra_body:
                sampling[key] = self.config.extra_body[key]
        standard = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "max_tokens")
        arguments = {key: sampling[key] for key in standard}
        body = {**{key: value for key, value in sampling.items() if key not in standard}, **self.config.extra_body}
        for key in standard:
            body.pop(key, None)
        if self.config.token_ids_in_logprobs and self.token_bytes is not None:
            body["return_tokens_as_token_ids"] = True
        return arguments, body, sampling

    async def _chat(self, client, request: GenerationRequest) -> GenerationResult:
        arguments, body, sampling = self._sampling(request)
        messages = list(request.messages)
        if request.assistant_prefix is not None:
            messages.append({"role": "assistant", "content": request.assistant_prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        if self.chat_template_kwargs:
            body["chat_template_kwargs"] = self.chat_template_kwargs
        answer = _Answer(chat=True)
        payload = {"model": self.config.model, "messages": messages, **arguments, "logprobs": True, "n": 1, **body}
        await self._receive(client, "/chat/completions", payload, answer)
        finish = FINISH_MAP.get(answer.finish_reason or "stop", "stop")
        if answer.tool_calls:
            finish = "tool_call"
        result = GenerationResult(
            id=request.id,
            finish_reason=finish,
            logprob_mode=self.logprob_mode,
            server_reasoning="".join(answer.reasoning) if answer.reasoning else None,
            server_content="".join(answer.text),
            sampling=sampling,
        )
        if self.tokenizer is not None and request.assistant_prefix is None:
            # The server renders the prompt; with the same template locally we still learn whether
            # it opened <think> itself (then a truncated response has no tags at all).
            result.prefilled_open = self.render_prompt_ids(request)[1]
        entries = answer.entries
        if entries:
            pieces = [_token_piece(entry["token"], entry.get("bytes"), self.token_bytes) for entry in entries]
            result.raw_text, result.token_spans = decode_bytes_with_spans(pieces)
            result.token_logprobs = [float(entry["logprob"]) for entry in entries]
            if all(entry["token"].startswith("token_id:") for entry in entries):
                result.token_ids = [int(entry["token"][len("token_id:") :]) for entry in entries]
        else:
            result.raw_text = None
        drop_end_token(result, self.special_ids)
        usage = answer.usage
        result.completion_tokens = usage["completion_tokens"] if usage else len(entries)
        result.prompt_tokens = usage["prompt_tokens"] if usage else 0
        return result

    async def _completion(self, client, request: GenerationRequest) -> GenerationResult:
        prompt_ids, prefilled = self.render_prompt_ids(request)
        arguments, body, sampling = self._sampling(request)
        answer = _Answer(chat=False)
        payload = {
            "model": self.config.model,
            "prompt": prompt_ids,
            **arguments,
            "logprobs": 1,
            "n": 1,
            "echo": False,
            **body,
        }
        await self._receive(client, "/completions", payload, answer)
        result = GenerationResult(
            id=request.id,
            finish_reason=FINISH_MAP.get(answer.finish_reason or "stop", "stop"),
            prefilled_open=prefilled,
            logprob_mode=self.logprob_mode,
            server_content="".join(answer.text),
            sampling=sampling,
        )
        tokens = answer.tokens
        if tokens:
            pieces = [_token_piece(token, None, self.token_bytes) for token in tokens]
            result.raw_text, result.token_spans = decode_bytes_with_spans(pieces)
            result.token_logprobs = [
                float(value) if value is not None else float("nan") for value in answer.token_logprobs
            ]
            if all(token.startswith("token_id:") for token in tokens):
                result.token_ids = [int(token[len("token_id:") :]) for token in tokens]
        else:
            result.raw_text = result.server_content
        drop_end_token(result, self.special_ids)
        usage = answer.usage
        result.completion_tokens = usage["completion_tokens"] if usage else len(tokens)
        result.prompt_tokens = usage["prompt_tokens"] if usage else len(prompt_ids)
        return result

    async def _receive(self, client, path: str, payload: dict[str, Any], answer: _Answer) -> None:
        """Send one generation request (`payload`, the JSON body: what `create(..., extra_body=...)` would send) and
        read its answer into `answer`: streamed, event by event (the timeout then bounds each wait for the next
        bytes), or whole as a single part. Both go through the client's own request path — its timeouts, its
        `APIStatusError` for an HTTP error (with the response, for `Retry-After`), its server-sent-event reader, which
        raises `APIError` for an error event and `APITimeoutError`/`APIConnectionError` for a silent or cut stream —
        but come back as plain dicts (`cast_to=object`), not `openai` models."""
        import openai

        if not self.config.stream:
            data = await client.post(path, body=payload, cast_to=object)
            if isinstance(data, str):  # a body not labelled JSON comes back as text: it should still be JSON
                data = json.loads(data)
            answer.add(data)
            answer.finish(streamed=False)
            return
        stream = await client.post(
            path,
            body={**payload, "stream": True, "stream_options": {"include_usage": True}},
            cast_to=object,
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )
        async with stream:  # closed also when reading fails: the server then stops generating for nobody
            async for chunk in stream:
                answer.add(chunk)
        answer.finish(streamed=True)

    async def _score(self, client, request: ScoreRequest) -> ScoreResult:
        """Teacher-forced log-probs of a given token sequence: `/v1/completions` with the ids as the
        prompt, `echo` and `logprobs` (vLLM returns the prompt's log-probs, raw), one token generated."""
        ids = list(request.token_ids)
        body = dict(self.config.extra_body)
        body["return_tokens_as_token_ids"] = True
        response = await client.completions.create(
            model=self.config.model,
            prompt=ids,
            # T=1 and no truncation: even a server that returns temperature-processed log-probs gives raw ones
            temperature=1.0,
            top_p=1.0,
            max_tokens=1,
            logprobs=1,
            echo=True,
            n=1,
            extra_body=body,
        )
        if not response.choices or response.choices[0].logprobs is None:
            raise RetryableResponse("response without prompt log-probs (does the server support echo with logprobs?)")
        logprobs = response.choices[0].logprobs
        values = [float("nan") if value is None else float(value) for value in (logprobs.token_logprobs or [])][
            : len(ids)
        ]
        tokens = list(logprobs.tokens or [])[: len(ids)]
        if len(values) < len(ids):
            raise ValueError(f"the server returned {len(values)} prompt log-probs for {len(ids)} tokens")
        if tokens and all(token.startswith("token_id:") for token in tokens):
            returned = [int(token[len("token_id:") :]) for token in tokens]
            if returned != ids:
                first = next(index for index, (a, b) in enumerate(zip(returned, ids)) if a != b)
                return ScoreResult(
                    id=request.id, error=f"token_mismatch: the server tokenized the prompt differently at token {first}"
                )
        return ScoreResult(id=request.id, token_logprobs=values)

    async def _generate_one(self, client, request: GenerationRequest) -> GenerationResult:
        if self.config.mode == "chat":
            return await self._chat(client, request)
        return await self._completion(client, request)

    async def _with_retries(self, servers: list[_Server], call, request, index: int):
        import openai

        attempt, server = 0, _least_busy(servers, index)
        while True:
            current = servers[server]
            try:
                current.load += 1  # counted while waiting for a slot too, so that requests spread at once
                try:
                    async with current.slots:
                        with self._lock:
                            self.requests_sent += 1
                        result = await call(current.client, request)
                finally:
                    current.load -= 1
                result.retries = attempt
                return result
            except openai.APIStatusError as exc:
                retryable = exc.status_code == 429 or exc.status_code >= 500 or exc.status_code == 408
                reason, error, retry_after = f"http_{exc.status_code}", exc, _retry_after(exc)
            except (openai.APIConnectionError, openai.APIResponseValidationError, RetryableResponse) as exc:
                retryable = True
                reason = "timeout" if isinstance(exc, openai.APITimeoutError) else type(exc).__name__
                error, retry_after = exc, None
            except openai.APIError as exc:  # an error event inside a stream: the server failed half-way
                retryable, reason, error, retry_after = True, "stream_error", exc, None
            except json.JSONDecodeError as exc:  # a body garbled in transit: the network's fault, try again
                retryable, reason, error, retry_after = True, "unreadable_response", exc, None
            except ValueError as exc:
                # a well-formed answer that dasd cannot use (or a bug in reading it): asking again gets the same
                # answer, so it fails now, once, into the errors file — retries are for the network
                retryable, reason, error, retry_after = False, "invalid_response", exc, None
            if not retryable or attempt >= self.config.max_retries:
                with self._lock:
                    self.failures += 1
                message = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
                return _failed(request, f"{reason}: {message}", retries=attempt)
            attempt += 1
            with self._lock:
                self.retries += 1
                self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1
            delay = random.uniform(
                0, min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (attempt - 1))
            )
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.config.backoff_max_s))
            server = (server + 1) % len(servers)
            await asyncio.sleep(delay)

    async def _run(self, call, requests: list, results: queue.Queue, stop: threading.Event) -> None:
        import openai

        # The timeout is httpx's, per operation: with a stream, each read waits at most request_timeout_s for the
        # next bytes, however long the whole answer takes.
        servers = [
            _Server(
                openai.AsyncOpenAI(
                    base_url=url, api_key=self.api_key, max_retries=0, timeout=self.config.request_timeout_s
                ),
                self.config.concurrency,
            )
            for url in self.config.base_urls
        ]
        pending: asyncio.Queue = asyncio.Queue()
        for index, request in enumerate(requests):
            pending.put_nowait((index, request))

        async def worker() -> None:
            while not stop.is_set():
                try:
                    index, request = pending.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    result = await self._with_retries(servers, call, request, index)
                except Exception as exc:  # a bug in parsing must not hang the consumer
                    result = _failed(request, f"{type(exc).__name__}: {exc}")
                results.put(result)

        workers = min(self.config.concurrency * len(servers), max(1, len(requests)))
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            for server in servers:
                await server.client.close()

    def probe_logprobs(
        self, requests: list[GenerationRequest], *, probes: int = 3, max_new_tokens: int = 32
    ) -> dict | None:
        """Check that the server's sampled-token log-probs are the raw distribution's (temperature 1, no
        top-k/top-p), as dasd's sentence probabilities need, before a run commits to the server.

        A few of `requests` (those at a temperature other than 1 first) are sampled through
        `/v1/completions` with the prompt rendered here; the same token ids are then rescored teacher-forced
        at T=1 (prompt log-probs via `echo`). Raw log-probs agree up to the server's numerics; log-probs of the
        temperature-scaled or truncated distribution do not. Raises `DasdError` naming the cause and the fix.
        """
        if self.config.logprob_check == "skip" or not requests:
            return None
        if self.tokenizer is None and self.prompt_format != "harmony":
            raise DasdError(
                "backend.logprob_check=probe renders and rescores samples locally: set backend.tokenizer "
                "(or backend.logprob_check=skip, and the records say logprob_mode=unverified)"
            )
        chosen = sorted(requests, key=lambda request: abs(request.temperature - 1.0) < 1e-6)[:probes]
        probe_requests = [
            GenerationRequest(
                id=f"logprob-probe-{index}",
                messages=request.messages,
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=request.top_k,
                seed=request.seed,
                max_new_tokens=min(request.max_new_tokens, max_new_tokens),
            )
            for index, request in enumerate(chosen)
        ]
        sampled = {result.id: result for result in self._stream(self._completion, probe_requests)}
        rescore = []
        for request in probe_requests:
            result = sampled[request.id]
            if result.error or not result.token_ids:
                raise DasdError(
                    f"the log-prob probe could not sample from the server ({result.error or 'no token ids'})"
                )
            rescore.append(ScoreRequest(id=request.id, token_ids=self.render_prompt_ids(request)[0] + result.token_ids))
        differences = []
        for scores in self._stream(self._score, rescore):
            if scores.error:
                raise DasdError(f"the log-prob probe could not rescore through echo ({scores.error})")
            result = sampled[scores.id]
            teacher_forced = scores.token_logprobs[len(scores.token_logprobs) - len(result.token_ids) :]
            differences += [abs(a - b) for a, b in zip(result.token_logprobs, teacher_forced)]
        mean = sum(differences) / len(differences)
        report = {
            "samples": len(probe_requests),
            "tokens": len(differences),
            "mean_abs_difference": round(mean, 5),
            "max_abs_difference": round(max(differences), 5),
            "temperatures": sorted({request.temperature for request in probe_requests}),
        }
        if mean > self.config.logprob_tolerance:
            raise DasdError(
                f"the server's log-probs are not the raw distribution's: sampled at T={report['temperatures']}, they "
                f"differ from a T=1 teacher-forced rescoring of the same tokens by {mean:.3f} per token on average "
                f"(tolerance {self.config.logprob_tolerance}). vLLM: serve with --logprobs-mode raw_logprobs (the "
                "default since 0.10); SGLang: set SGLANG_RETURN_ORIGINAL_LOGPROB=1"
            )
        self.logprob_mode = "raw"
        return report

    def generate(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        """One result per request, in completion order (failures as results with `error`)."""
        yield from self._stream(self._generate_one, requests)

    def score(self, requests: list[ScoreRequest]) -> Iterator[ScoreResult]:
        """The server's prompt log-probs of each token sequence, in completion order (`dasd.scoring.token_scorers`)."""
        yield from self._stream(self._score, requests)

    def _stream(self, call, requests: list) -> Iterator:
        """Run `call(client, request)` for every request on the event-loop thread, with bounded
        concurrency and retries, and yield the results here as they complete."""
        if not requests:
            return
        results: queue.Queue = queue.Queue()
        stop = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._run(call, requests, results, stop))
            except BaseException as exc:  # surface event-loop failures in the caller
                failure.append(exc)
            finally:
                results.put(None)

        thread = threading.Thread(target=run, name="dasd-openai", daemon=True)
        thread.start()
        try:
            while True:
                item = results.get()
                if item is None:
                    break
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)
        if failure:
            raise failure[0]

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "requests_sent": self.requests_sent,
            "retries": self.retries,
            "retry_reasons": dict(self.retry_reasons),
            "failed_requests": self.failures,
            "servers": len(self.config.base_urls),
        }


class _Server:
    """One base URL: its client, and `concurrency` slots for the requests in flight on it."""

    def __init__(self, client: Any, concurrency: int):
        self.client = client
        self.slots = asyncio.Semaphore(concurrency)
        self.load = 0  # requests on it or waiting for one of its slots


def _least_busy(servers: list[_Server], index: int) -> int:
    """The server a request starts on: the least loaded, ties broken in turn from request `index`, so that
    equal servers take requests round-robin and a slow one (long answers) gets fewer."""
    count = len(servers)
    return min(range(count), key=lambda server: (servers[server].load, (server - index) % count))


def _failed(request, error: str, *, retries: int = 0):
    """The result of a request that failed for good: it goes to the errors file, never the output."""
    if isinstance(request, ScoreRequest):
        return ScoreResult(id=request.id, retries=retries, error=error)
    return GenerationResult(id=request.id, finish_reason="error", retries=retries, error=error)


def _retry_after(exc) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
