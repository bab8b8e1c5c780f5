"""Offline generation with the vLLM engine (optional extra `dasd[vllm]`, for GPU machines).

The prompt is rendered with the same chat template code as the `hf` backend and passed as token
ids. The engine runs with `logprobs_mode="raw_logprobs"`, so the log-prob of each sampled token is
the raw model distribution's, as with `hf`. Requests go to the engine in chunks so that results
reach the output file (and the resume log) while the job runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import DasdError
from ..text.prompts import render_chat_prompt
from ..text.tokens import TokenBytes
from .base import NEUTRAL_SAMPLING, Backend, BackendConfig, GenerationRequest, GenerationResult, sampling_params

CHUNK = 512


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

    def generate(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        from vllm import SamplingParams

        for start in range(0, len(requests), CHUNK):
            chunk = requests[start : start + CHUNK]
            rendered = [
                render_chat_prompt(
                    self.tokenizer,
                    r.messages,
                    assistant_prefix=r.assistant_prefix,
                    chat_template_kwargs=self.chat_template_kwargs,
                )
                for r in chunk
            ]
            prompts = [{"prompt_token_ids": ids} for ids, _ in rendered]
            params = [
                SamplingParams(
                    n=1,
                    temperature=r.temperature,
                    top_p=r.top_p,
                    top_k=r.top_k if r.top_k > 0 else -1,
                    **NEUTRAL_SAMPLING,  # stated, not left to the model's generation_config
                    max_tokens=r.max_new_tokens,
                    seed=r.seed % (2**63),
                    logprobs=0,
                    skip_special_tokens=False,
                )
                for r in chunk
            ]
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            for request, (prompt_ids, prefilled), output in zip(chunk, rendered, outputs):
                completion = output.outputs[0]
                ids = list(completion.token_ids)
                logprobs = (
                    [completion.logprobs[k][token].logprob for k, token in enumerate(ids)]
                    if completion.logprobs
                    else []
                )
                finish = "length" if completion.finish_reason == "length" else "stop"
                if finish == "stop" and ids and (ids[-1] in self.end_ids or ids[-1] == completion.stop_reason):
                    ids, logprobs = ids[:-1], logprobs[:-1]
                text, spans = self.token_bytes.text_and_spans(ids)
                yield GenerationResult(
                    id=request.id,
                    raw_text=text,
                    token_spans=spans,
                    token_logprobs=logprobs,
                    token_ids=ids,
                    finish_reason=finish,
                    completion_tokens=len(completion.token_ids),
                    prompt_tokens=len(prompt_ids),
                    prefilled_open=prefilled,
                    logprob_mode="raw",
                    sampling=sampling_params(request),
                )
