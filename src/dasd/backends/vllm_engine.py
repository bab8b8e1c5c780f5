"""Offline generation with the vLLM engine (optional extra `dasd[vllm]`, for GPU machines).

The prompt is rendered with the same chat template code as the `hf` backend and passed as token
ids. The engine runs with `logprobs_mode="raw_logprobs"`, so the log-prob of each sampled token is
the raw model distribution's, as with `hf`.

Requests go to the engine through a rolling queue (`LLMEngine.add_request` and `step`, the loop `LLM.generate`
runs inside): a few times the scheduler's `max_num_seqs` are queued, topped up as answers finish, and each
answer is yielded the step it finishes — so it reaches the output file (and the resume log) at once, and the
engine never idles at the tail of a chunk, waiting for its longest answer, as a loop over `LLM.generate` calls
does. A consumer that stops early aborts what is still queued.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from ..errors import DasdError
from ..text.prompts import render_chat_prompt
from ..text.tokens import TokenBytes
from .base import NEUTRAL_SAMPLING, Backend, BackendConfig, GenerationRequest, GenerationResult, sampling_params

# Requests queued in the engine: this many times its max_num_seqs (and at least QUEUED_MIN), topped up when half
# have finished — enough that the scheduler always has the next ones waiting, without rendering every prompt of a
# run up front
QUEUED_PER_SEQ = 2
QUEUED_MIN = 512


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, config: BackendConfig, *, chat_template_kwargs: dict[str, Any]):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise DasdError("backend.name=vllm needs the vLLM engine: pip install 'dasd[vllm]' (GPU machine)") from exc
        dtype = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[config.dtype]
        kwargs: dict[str, Any] = dict(
            model=config.model,
            tokenizer=config.tokenizer or config.model,
            dtype=dtype,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            logprobs_mode="raw_logprobs",
        )
        if config.max_model_len:
            kwargs["max_model_len"] = config.max_model_len
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.token_bytes = TokenBytes(self.tokenizer)
        self.chat_template_kwargs = chat_template_kwargs
        # The engine keeps the end token in `token_ids` (not in the text); it is not part of the answer.
        self.end_ids = set(self.tokenizer.all_special_ids) | {self.tokenizer.eos_token_id}
        self._keys = itertools.count()

    def generate(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        """One result per request, in the order they finish."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        scheduler = getattr(getattr(engine, "vllm_config", None), "scheduler_config", None)
        queued = max(QUEUED_MIN, QUEUED_PER_SEQ * int(getattr(scheduler, "max_num_seqs", 256) or 256))
        pending = iter(requests)
        running: dict[str, tuple[GenerationRequest, int, bool]] = {}

        def top_up() -> None:
            for request in itertools.islice(pending, queued - len(running)):
                prompt_ids, prefilled = render_chat_prompt(
                    self.tokenizer,
                    request.messages,
                    assistant_prefix=request.assistant_prefix,
                    chat_template_kwargs=self.chat_template_kwargs,
                )
                key = f"dasd-{next(self._keys)}"  # the engine gives outputs back under the id it was given
                # only the finished answer comes back: cumulative outputs would copy every answer's log-probs
                # at every step
                params = self._params(request, output_kind=RequestOutputKind.FINAL_ONLY)
                engine.add_request(key, {"prompt_token_ids": prompt_ids}, params)
                running[key] = (request, len(prompt_ids), prefilled)

        top_up()
        try:
            while running:
                for output in engine.step():
                    if output.finished and output.request_id in running:
                        request, prompt_tokens, prefilled = running.pop(output.request_id)
                        yield self._result(request, output.outputs[0], prompt_tokens, prefilled)
                if len(running) <= queued // 2:
                    top_up()
        finally:
            if running:  # the consumer stopped early (an error, a closed generator): leave no work in the engine
                engine.abort_request(list(running))

    def _params(self, request: GenerationRequest, **extra: Any):
        from vllm import SamplingParams

        return SamplingParams(
            n=1,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k if request.top_k > 0 else -1,
            **NEUTRAL_SAMPLING,  # stated, not left to the model's generation_config
            max_tokens=request.max_new_tokens,
            seed=request.seed % (2**63),
            logprobs=0,
            skip_special_tokens=False,
            **extra,
        )

    def _result(self, request: GenerationRequest, completion, prompt_tokens: int, prefilled: bool) -> GenerationResult:
        ids = list(completion.token_ids)
        logprobs = [completion.logprobs[k][token].logprob for k, token in enumerate(ids)] if completion.logprobs else []
        finish = "length" if completion.finish_reason == "length" else "stop"
        if finish == "stop" and ids and (ids[-1] in self.end_ids or ids[-1] == completion.stop_reason):
            ids, logprobs = ids[:-1], logprobs[:-1]
        text, spans = self.token_bytes.text_and_spans(ids)
        return GenerationResult(
            id=request.id,
            raw_text=text,
            token_spans=spans,
            token_logprobs=logprobs,
            token_ids=ids,
            finish_reason=finish,
            completion_tokens=len(completion.token_ids),
            prompt_tokens=prompt_tokens,
            prefilled_open=prefilled,
            logprob_mode="raw",
            sampling=sampling_params(request),
        )
