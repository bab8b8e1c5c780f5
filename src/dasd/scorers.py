"""Token scorers: a model's log-prob of every token of a finished response, teacher-forced on the text
exactly as that model sees it — the one interface `dasd score` and `dasd provenance` use.

    scorer = make_token_scorer(BackendConfig(model="path/to/student"), system_prompt="You are a helpful assistant.")
    for scores in scorer.score(records):          # one TokenScores per record, in any order
        scores.parts    # {reasoning: {offsets, logprobs}, content: {...}} (dasd.records.PartLogprobs) or None
    scorer.close()

Two implementations behind `make_token_scorer(config)`:

* `hf` (`HFTokenScorer`): the model loaded locally (`dasd.models`); the text is rendered with its chat
  template (`dasd.render.render_student`: system prompt, question, `<think>\\n{reasoning}\\n</think>\\n\\n
  {content}`) and scored by `dasd.scoring.StudentScorer` (chunked LM head; `batching=auto`: packed rows
  under mask-free attention on a GPU — `dasd.attention` — and one sample per forward on CPU, where packing
  measured no faster, benchmarks/RESULTS.md);
* `openai` (`ServerTokenScorer`): a server that returns prompt log-probs through `/v1/completions` with
  `echo` (vLLM does); the text is rendered locally — the model's chat template, or harmony for gpt-oss
  (`prompt_format=harmony`) — sent as token ids, and the server's echoed ids are checked against ours.

Either way the completion's token log-probs are mapped to the record's `reasoning` / `content` by
the same character rule (`dasd.render.completion_part_logprobs`). A response longer than the
scorer's `max_length` is not scored (`error: too_long: …`), never truncated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from .attention import has_varlen_kernel, packed_attention
from .backends import BackendConfig
from .errors import ConfigError
from .records import PartLogprobs
from .render import StudentText, completion_part_logprobs, render_student, with_system_prompt


class ScorerConfig(BackendConfig):
    """A model that scores text (`hf` or `openai`), and how it sees a conversation."""

    system_prompt: str | None = Field(
        None,
        description='system prompt this model sees: null keeps the records\' own messages, "" removes theirs, '
        "text replaces it",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra variables for this model's chat template (harmony: reasoning_effort)"
    )
    prompt_format: Literal["chat_template", "harmony"] = Field(
        "chat_template",
        description="chat_template: `<think>` text in the model's template; harmony: gpt-oss analysis/final channels "
        "(openai backend)",
    )


@dataclass
class TokenScores:
    record: dict[str, Any]
    parts: PartLogprobs | None  # None when the record could not be scored
    error: str | None  # why not: too_long: …, token_mismatch: …, http_500: …
    tokens: int  # completion tokens scored (the rendered length when too long)


class TokenScorer:
    """Interface: `score(records)` yields one `TokenScores` per record; `stats()`; `close()`."""

    label = "scorer"

    def score(self, records: list[dict[str, Any]]) -> Iterator[TokenScores]:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def resolve_batching(batching: str, device: str) -> str:
    """`auto` -> packed rows on a GPU with a varlen kernel (flash-attn's, or PyTorch's `varlen_attn`: no
    mask, one call for all samples, bigger matmuls); else one sample per forward — on CPU the forward is
    compute-bound and packing measured no faster (benchmarks/RESULTS.md, student scoring).

    >>> resolve_batching("auto", "cpu"), resolve_batching("padded", "cpu")
    ('single', 'padded')
    """
    if batching != "auto":
        return batching
    return "packed" if device.startswith("cuda") and has_varlen_kernel() else "single"


def _too_long(record: dict[str, Any], length: int, max_length: int) -> TokenScores:
    return TokenScores(record, None, f"too_long: {length} tokens > max_length {max_length}", length)


class HFTokenScorer(TokenScorer):
    def __init__(
        self,
        config: BackendConfig,
        *,
        system_prompt: str | None,
        chat_template_kwargs: dict[str, Any],
        batching: str = "auto",
        tokens_per_batch: int = 16384,
        max_length: int | None = None,
    ):
        from .models import load_model
        from .scoring import StudentScorer

        self.model, self.tokenizer, self.device = load_model(config)
        self.system_prompt = system_prompt
        self.chat_template_kwargs = chat_template_kwargs
        self.batching = batching = resolve_batching(batching, str(self.device))
        if batching == "packed" and config.attn_implementation == "auto":
            # packed rows under SDPA get a dense block-diagonal mask (width² per row); this attention
            # computes nothing between samples (dasd.attention)
            # (not for a model whose attention has what that does not compute: it keeps sdpa's exact mask)
            chosen = packed_attention(str(self.device), self.model.config)
            if chosen:
                self.model.set_attn_implementation(chosen)
        self.attention = self.model.config._attn_implementation
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else (self.tokenizer.eos_token_id or 0)
        )
        self.scorer = StudentScorer(
            self.model,
            tokens_per_batch=1 if batching == "single" else tokens_per_batch,
            pack=batching == "packed",
            pad_id=int(pad),
        )
        self.max_length = max_length or getattr(self.model.config, "max_position_embeddings", None) or 1 << 30
        self.label = str(self.device)

    def score(self, records: list[dict[str, Any]]) -> Iterator[TokenScores]:
        from .scoring import ScoringItem

        rendered = [
            render_student(
                self.tokenizer,
                record["messages"],
                record["reasoning"],
                record["content"],
                system_prompt=self.system_prompt,
                chat_template_kwargs=self.chat_template_kwargs,
            )
            for record in records
        ]
        logprobs = self.scorer.score(
            [
                ScoringItem(key=key, input_ids=text.prompt_ids + text.completion_ids, first_scored=len(text.prompt_ids))
                for key, text in enumerate(rendered)
                if text.length <= self.max_length
            ]
        )
        for key, (record, text) in enumerate(zip(records, rendered)):
            if text.length > self.max_length:
                yield _too_long(record, text.length, self.max_length)
                continue
            parts = completion_part_logprobs(text, record["reasoning"], record["content"], logprobs[key])
            yield TokenScores(record, parts, None, len(text.completion_ids))

    def stats(self) -> dict[str, Any]:
        scorer = self.scorer
        padding = scorer.padding_tokens / scorer.forward_tokens if scorer.forward_tokens else 0.0
        return {
            "tokens_scored": scorer.tokens_scored,
            "batching": self.batching,
            "attention": self.attention,
            "padding_fraction": round(padding, 4),
        }

    def close(self) -> None:
        del self.model, self.scorer


class ServerTokenScorer(TokenScorer):
    def __init__(
        self,
        config: BackendConfig,
        *,
        system_prompt: str | None,
        chat_template_kwargs: dict[str, Any],
        prompt_format: str = "chat_template",
        max_length: int | None = None,
    ):
        from .backends.openai_compat import OpenAIBackend

        if prompt_format == "chat_template" and not config.tokenizer:
            raise ConfigError("a server scorer renders the text locally: set its tokenizer (or prompt_format=harmony)")
        self.backend = OpenAIBackend(config, chat_template_kwargs=chat_template_kwargs, prompt_format=prompt_format)
        self.system_prompt = system_prompt
        self.chat_template_kwargs = chat_template_kwargs
        self.prompt_format = prompt_format
        self.max_length = max_length or 1 << 30
        self.tokens_scored = 0
        self.label = config.name

    def render(self, record: dict[str, Any]) -> StudentText:
        messages = with_system_prompt(record["messages"], self.system_prompt)
        if self.prompt_format == "harmony":
            from .harmony import render_harmony_response

            effort = str(self.chat_template_kwargs.get("reasoning_effort", "medium"))
            return render_harmony_response(messages, record["reasoning"], record["content"], reasoning_effort=effort)
        return render_student(
            self.backend.tokenizer,
            messages,
            record["reasoning"],
            record["content"],
            system_prompt=None,
            chat_template_kwargs=self.chat_template_kwargs,
        )

    def score(self, records: list[dict[str, Any]]) -> Iterator[TokenScores]:
        from .backends import ScoreRequest

        texts, requests = {}, []
        for record in records:
            text = self.render(record)
            if text.length > self.max_length:
                yield _too_long(record, text.length, self.max_length)
                continue
            texts[str(record["id"])] = (record, text)
            requests.append(ScoreRequest(id=str(record["id"]), token_ids=text.prompt_ids + text.completion_ids))
        for result in self.backend.score(requests):
            record, text = texts[result.id]
            if result.error:
                yield TokenScores(record, None, result.error, 0)
                continue
            logprobs = result.token_logprobs[len(text.prompt_ids) :]
            self.tokens_scored += len(text.completion_ids)
            yield TokenScores(
                record,
                completion_part_logprobs(text, record["reasoning"], record["content"], logprobs),
                None,
                len(text.completion_ids),
            )

    def stats(self) -> dict[str, Any]:
        return {
            "tokens_scored": self.tokens_scored,
            "batching": "server",
            "padding_fraction": 0.0,
            **self.backend.stats(),
        }

    def close(self) -> None:
        self.backend.close()


def make_token_scorer(
    config: BackendConfig,
    *,
    system_prompt: str | None,
    chat_template_kwargs: dict[str, Any] | None = None,
    prompt_format: str = "chat_template",
    batching: str = "auto",
    tokens_per_batch: int = 16384,
    max_length: int | None = None,
    role: str = "model",
) -> TokenScorer:
    """The scorer for `config.name` (hf or openai); `role` names the config section in errors."""
    kwargs = chat_template_kwargs or {}
    if config.name == "hf":
        if prompt_format == "harmony":
            raise ConfigError(f"{role}: prompt_format=harmony is for gpt-oss behind a server: use name=openai")
        return HFTokenScorer(
            config,
            system_prompt=system_prompt,
            chat_template_kwargs=kwargs,
            batching=batching,
            tokens_per_batch=tokens_per_batch,
            max_length=max_length,
        )
    if config.name == "openai":
        return ServerTokenScorer(
            config,
            system_prompt=system_prompt,
            chat_template_kwargs=kwargs,
            prompt_format=prompt_format,
            max_length=max_length,
        )
    raise ConfigError(f"{role}.name={config.name}: score with hf, or through a vLLM server with name=openai")
