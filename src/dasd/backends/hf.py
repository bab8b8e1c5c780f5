"""Local generation with transformers: batched, left-padded, raw log-probs, per-sample seeds.

Sampling happens in `SeededSampler`, a logits processor that sees the model's raw logits (the only
processor: the model's own generation defaults are replaced by a neutral config at load time), so:

* the log-prob recorded for each sampled token is `log_softmax(raw logits)` — temperature 1, no
  top-k/top-p — even when sampling at 0.6 (`dasd.data.records.TokenLogprobs`), and no `output_logits` tensor of
  steps × batch × vocab is kept in memory;
* each row draws with a uniform keyed by its own seed (from the response id) and the step,
  so a sample does not depend on which other samples shared its batch (resume and batch size do
  not change it, up to floating-point differences in padded batches), and all rows are drawn in
  one vectorised pass;
* temperature, top-p and top-k are applied to a copy for the draw; `top_k=0` means off (HF would
  otherwise apply a default top-k of 50).

The processor returns a one-hot mask of the drawn token, and `generate` runs greedy on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ..models.loading import compute_context, load_model
from ..text.prompts import render_chat_prompt
from ..text.tokens import TokenBytes
from .base import Backend, BackendConfig, GenerationRequest, GenerationResult, sampling_params


def stop_token_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None and value not in ids:
            ids.append(int(value))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


# splitmix64 constants, as signed 64-bit integers (torch has no unsigned 64-bit arithmetic).
_MIX1, _MIX2, _GOLDEN = -0x40A7B892E31B1A47, -0x6B2FB644ECCEEE15, -0x61C8864680B583EB


def _splitmix(z):
    """splitmix64's finaliser on int64 tensors (logical shifts via masks; products wrap)."""
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * _MIX1
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * _MIX2
    return z ^ ((z >> 31) & ((1 << 33) - 1))


def seeded_uniform(seeds, step: int):
    """One uniform in (0, 1) per row that depends only on (row seed, step): a counter-based generator,
    so a row draws the same numbers whatever batch it is in, and all rows are drawn in one pass."""
    import torch

    golden = torch.tensor(_GOLDEN, dtype=torch.int64, device=seeds.device)
    z = _splitmix(_splitmix(seeds + golden * step) + golden)
    return ((z >> 11) & ((1 << 53) - 1)).double().add_(0.5).mul_(2.0**-53)


class SeededSampler:
    """Logits processor: record the raw log-prob of the drawn token; draw with per-row seeds.

    Each row's token is an exact draw from the softmax of its warped logits (temperature, top-k,
    top-p per row) by inverse CDF with `seeded_uniform` (keyed by the row's seed and the step).
    Temperature 0 rows take the argmax of the raw logits.
    """

    def __init__(self, requests: list[GenerationRequest], device, end_id: int | None = None):
        import torch

        self.step = 0
        self.seeds = torch.tensor(
            [request.seed & ((1 << 63) - 1) for request in requests], dtype=torch.int64, device=device
        )
        self.temperatures = torch.tensor(
            [request.temperature for request in requests], dtype=torch.float32, device=device
        )[:, None]
        self.top_p = torch.tensor([request.top_p for request in requests], dtype=torch.float32, device=device)[:, None]
        self.top_k = torch.tensor([max(request.top_k, 0) for request in requests], dtype=torch.long, device=device)[
            :, None
        ]
        self.greedy = self.temperatures[:, 0] <= 0
        # A row that reached its own max_new_tokens is ended with `end_id` (the batch may allow more);
        # the backend cuts the row at its budget, so the forced token never shows.
        self.limits = torch.tensor([request.max_new_tokens for request in requests], dtype=torch.long, device=device)
        self.end_id = end_id
        self.any_top_p = bool((self.top_p < 1.0).any())
        self.any_top_k = bool((self.top_k > 0).any())
        self.step_logprobs: list[Any] = []
        self.step_tokens: list[Any] = []

    def warp(self, raw):
        """Temperature, then top-k and top-p (both per row), as masked logits."""
        import torch

        logits = raw / torch.where(self.greedy[:, None], torch.ones_like(self.temperatures), self.temperatures)
        if self.any_top_k or self.any_top_p:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            remove = torch.zeros_like(sorted_logits, dtype=torch.bool)
            if self.any_top_k:
                ranks = torch.arange(logits.shape[-1], device=logits.device)[None, :]
                remove |= (self.top_k > 0) & (ranks >= self.top_k)
            if self.any_top_p:
                probs = torch.softmax(sorted_logits.masked_fill(remove, float("-inf")), dim=-1)
                mass_before = torch.cumsum(probs, dim=-1) - probs
                remove |= mass_before > self.top_p
            sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        return logits

    def __call__(self, input_ids, scores):
        import torch

        raw = scores.float()
        logprobs = torch.log_softmax(raw, dim=-1)
        # Inverse-CDF draw: one seeded uniform per row against the cumulative warped distribution
        # (float64, so the 150k-entry sum does not lose the tail).
        cumulative = torch.cumsum(torch.softmax(self.warp(raw), dim=-1).double(), dim=-1)
        target = seeded_uniform(self.seeds, self.step)[:, None] * cumulative[:, -1:]
        drawn = torch.searchsorted(cumulative, target).clamp_(max=raw.shape[-1] - 1)[:, 0]
        chosen = torch.where(self.greedy, torch.argmax(raw, dim=-1), drawn)
        if self.end_id is not None:
            chosen = torch.where(self.step >= self.limits, torch.full_like(chosen, self.end_id), chosen)
        self.step += 1
        self.step_logprobs.append(logprobs.gather(1, chosen[:, None])[:, 0])
        self.step_tokens.append(chosen)
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, chosen[:, None], 0.0)
        return forced


class HFBackend(Backend):
    name = "hf"

    def __init__(self, config: BackendConfig, *, chat_template_kwargs: dict[str, Any], model=None, tokenizer=None):
        """Load `config.model`, or wrap an already loaded `model` + `tokenizer` (e.g. a student in training)."""
        import torch
        from transformers import GenerationConfig

        self.config = config
        self.chat_template_kwargs = chat_template_kwargs
        if model is not None:
            self.model, self.tokenizer = model, tokenizer
            self.device = str(next(model.parameters()).device)
            self.dtype = next(model.parameters()).dtype
            self.attn = getattr(model.config, "_attn_implementation", "unknown")
        else:
            self.model, self.tokenizer, self.device = load_model(config)
            self.dtype = next(self.model.parameters()).dtype
            self.attn = self.model.config._attn_implementation
        if str(self.device).startswith("cuda"):
            torch.backends.cuda.enable_cudnn_sdp(False)  # see dasd.models.loading.load_model
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.pad_id = int(pad)
        # Replace the checkpoint's generation defaults (repetition penalty, top-k, …) with neutral
        # ones: SeededSampler must be the only thing that touches the logits.
        self.model.generation_config = GenerationConfig(eos_token_id=self.stop_ids, pad_token_id=self.pad_id)
        self.token_bytes = TokenBytes(self.tokenizer)
        self.torch = torch
        self.generated_tokens = 0
        self.generate_seconds = 0.0

    # -- prompts --------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> tuple[list[int], bool]:
        """Prompt token ids for a request, and whether the rendered prompt already opened `<think>`."""
        return render_chat_prompt(
            self.tokenizer,
            request.messages,
            assistant_prefix=request.assistant_prefix,
            chat_template_kwargs=self.chat_template_kwargs,
        )

    # -- generation -----------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> Iterator[GenerationResult]:
        rendered = [(request, *self.render(request)) for request in requests]
        # Similar budgets, then longest prompts first, share a batch: little padding, little waste on
        # rows that reached their own budget (the sampler ends those rows there), and an out-of-memory
        # shows up in the first batch rather than at the end.
        rendered.sort(key=lambda item: (item[0].max_new_tokens, -len(item[1])))
        for start in range(0, len(rendered), self.config.batch_size):
            batch = rendered[start : start + self.config.batch_size]
            yield from self._generate_batch(batch, max(item[0].max_new_tokens for item in batch))

    def _generate_batch(self, items, max_new_tokens: int) -> Iterator[GenerationResult]:
        torch = self.torch
        from transformers import LogitsProcessorList

        requests = [item[0] for item in items]
        width = max(len(item[1]) for item in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (_, ids, _) in enumerate(items):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        sampler = SeededSampler(requests, self.device, end_id=self.stop_ids[0])
        started = time.perf_counter()
        with torch.inference_mode(), compute_context(self.model):
            sequences = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                logits_processor=LogitsProcessorList([sampler]),
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
            )
        self.generate_seconds += time.perf_counter() - started
        generated = sequences[:, width:].cpu()
        step_logprobs = torch.stack(sampler.step_logprobs, dim=1).cpu() if sampler.step_logprobs else None
        step_tokens = torch.stack(sampler.step_tokens, dim=1).cpu() if sampler.step_tokens else None
        stop = set(self.stop_ids)
        for row, (request, prompt_ids, prefilled) in enumerate(items):
            tokens = generated[row].tolist()[: request.max_new_tokens]
            end, finish = len(tokens), "length"
            for position, token in enumerate(tokens):
                if token in stop:
                    end, finish = position, "stop"
                    break
            tokens = tokens[:end]
            if step_tokens is not None and tokens and step_tokens[row, : len(tokens)].tolist() != tokens:
                raise RuntimeError("generate() did not follow the sampler: another logits processor is active")
            logprobs = step_logprobs[row, : len(tokens)].tolist() if tokens else []
            text, spans = self.token_bytes.text_and_spans(tokens)
            completion_tokens = len(tokens) + (1 if finish == "stop" else 0)
            self.generated_tokens += completion_tokens
            yield GenerationResult(
                id=request.id,
                raw_text=text,
                token_spans=spans,
                token_logprobs=logprobs,
                token_ids=tokens,
                finish_reason=finish,
                completion_tokens=completion_tokens,
                prompt_tokens=len(prompt_ids),
                prefilled_open=prefilled,
                logprob_mode="raw",
                sampling=sampling_params(request),
            )

    def stats(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": str(self.dtype).replace("torch.", ""), "attention": self.attn}
