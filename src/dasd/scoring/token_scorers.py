"""Token scorers: a model's log-prob of every token of a finished response, teacher-forced on the text
exactly as that model sees it — the one interface `dasd score` and `dasd provenance` use.

    scorer = make_token_scorer(BackendConfig(model="path/to/student"), system_prompt="You are a helpful assistant.")
    for scores in scorer.score(records):          # one TokenScores per record, in any order
        scores.parts    # {reasoning: {offsets, logprobs}, content: {...}} (dasd.data.records.PartLogprobs) or None
    scorer.close()

Two implementations behind `make_token_scorer(config)`:

* `hf` (`HFTokenScorer`): the model loaded locally (`dasd.models.loading`); the text is rendered with its chat
  template (`dasd.text.render.render_student`: system prompt, question, `<think>\\n{reasoning}\\n</think>\\n\\n
  {content}`) and scored by `ModelScorer` (below);
* `openai` (`ServerTokenScorer`): a server that returns prompt log-probs through `/v1/completions` with
  `echo` (vLLM does); the text is rendered locally — the model's chat template, or harmony for gpt-oss
  (`prompt_format=harmony`) — sent as token ids, and the server's echoed ids are checked against ours.

Either way the completion's token log-probs are mapped to the record's `reasoning` / `content` by
the same character rule (`dasd.text.render.completion_part_logprobs`). A response longer than the
scorer's `max_length` is not scored (`error: too_long: …`), never truncated.

`ModelScorer` computes a local model's log-prob of every completion token, teacher-forced, with:
* length-sorted batches under a token budget; with `pack=True` several samples share a row
  (first-fit decreasing), `position_ids` restarting per sample and `use_cache=False`: no attention
  across packed samples (checked against one-sample-at-a-time scoring in tests/test_score.py). Under
  SDPA transformers builds that as a dense block-diagonal mask (width² per row, measured slower than
  one sample per forward); under `dasd_packed` (`dasd.models.attention`: per-sample causal kernels, varlen
  flash on CUDA) or flash_attention_2 nothing between samples is computed — `batching=auto` packs rows
  under mask-free attention on a GPU and scores one sample per forward on CPU, where packing measured no
  faster (benchmarks/RESULTS.md);
* log-softmax only at the scored positions, in chunks, so a long response never materialises a
  length × vocabulary logits tensor (the prompt's positions never reach the LM head).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from ..backends import BackendConfig
from ..data.records import PartLogprobs, reasoning_in_answer
from ..errors import ConfigError
from ..models.attention import has_varlen_kernel, packed_attention
from ..models.loading import compute_context
from ..text.render import StudentText, completion_part_logprobs, render_student, with_system_prompt


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
        from ..models.loading import load_model

        self.model, self.tokenizer, self.device = load_model(config)
        self.system_prompt = system_prompt
        self.chat_template_kwargs = chat_template_kwargs
        self.batching = batching = resolve_batching(batching, str(self.device))
        if batching == "packed" and config.attn_implementation == "auto":
            # packed rows under SDPA get a dense block-diagonal mask (width² per row); this attention
            # computes nothing between samples (dasd.models.attention)
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
        self.scorer = ModelScorer(
            self.model,
            tokens_per_batch=1 if batching == "single" else tokens_per_batch,
            pack=batching == "packed",
            pad_id=int(pad),
        )
        self.max_length = max_length or getattr(self.model.config, "max_position_embeddings", None) or 1 << 30
        self.label = str(self.device)

    def score(self, records: list[dict[str, Any]]) -> Iterator[TokenScores]:
        rendered = [
            render_student(
                self.tokenizer,
                record["messages"],
                record["reasoning"],
                record["content"],
                system_prompt=self.system_prompt,
                chat_template_kwargs=self.chat_template_kwargs,
                answer_only=reasoning_in_answer(record),
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
        from ..backends.openai_compat import OpenAIBackend

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
            from ..text.harmony import render_harmony_response

            effort = str(self.chat_template_kwargs.get("reasoning_effort", "medium"))
            return render_harmony_response(messages, record["reasoning"], record["content"], reasoning_effort=effort)
        return render_student(
            self.backend.tokenizer,
            messages,
            record["reasoning"],
            record["content"],
            system_prompt=None,
            chat_template_kwargs=self.chat_template_kwargs,
            answer_only=reasoning_in_answer(record),
        )

    def score(self, records: list[dict[str, Any]]) -> Iterator[TokenScores]:
        from ..backends import ScoreRequest

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


# --- the local engine: a model's log-prob of every completion token, teacher-forced, fast ----------------------


@dataclass
class ScoringItem:
    key: int
    input_ids: list[int]  # prompt + completion
    first_scored: int  # index of the first completion token in input_ids

    @property
    def length(self) -> int:
        return len(self.input_ids)


def plan_batches(
    items: list[ScoringItem], tokens_per_batch: int, *, pack: bool = True
) -> list[list[list[ScoringItem]]]:
    """Batches of rows of items, items sorted longest first; rows × width stays within
    `tokens_per_batch` (a longer single item gets a batch of its own).

    Padded (`pack=False`): one item per row, the batch's width its longest item. Packed: one row as
    wide as the budget, filled first-fit — with mask-free attention a wide row costs no more than its
    samples, and the only padding is the row's unfilled tail.

    >>> items = [ScoringItem(key, [1] * n, 1) for key, n in enumerate([6, 5, 3, 2])]
    >>> [[[item.key for item in row] for row in rows] for rows in plan_batches(items, 12, pack=False)]
    [[[0], [1]], [[2], [3]]]
    >>> [[[item.key for item in row] for row in rows] for rows in plan_batches(items, 12)]
    [[[0, 1]], [[2, 3]]]
    """
    ordered = sorted(items, key=lambda item: -item.length)
    batches: list[list[list[ScoringItem]]] = []
    index = 0
    while index < len(ordered):
        width = max(ordered[index].length, tokens_per_batch) if pack else ordered[index].length
        rows: list[list[ScoringItem]] = []
        room: list[int] = []
        while index < len(ordered):
            item = ordered[index]
            placed = False
            if pack:
                for row_index, free in enumerate(room):
                    if item.length <= free:
                        rows[row_index].append(item)
                        room[row_index] -= item.length
                        placed = True
                        break
            if not placed:
                if rows and (len(rows) + 1) * width > tokens_per_batch:
                    break
                rows.append([item])
                room.append(width - item.length)
            index += 1
        batches.append(rows)
    return batches


def _logits_postprocessed(config) -> bool:
    """Architectures that change logits after the LM head (soft-capping, scaling) need the full forward."""
    return any(
        getattr(config, name, None) not in (None, 1.0, 0.0)
        for name in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    )


class ModelScorer:
    """Any causal LM's log-prob of every completion token of `ScoringItem`s, teacher-forced (`HFTokenScorer`'s
    engine; the module docstring says how it batches and why)."""

    def __init__(
        self, model, *, tokens_per_batch: int = 16384, pack: bool = True, pad_id: int = 0, logit_chunk: int = 2048
    ):
        self.model = model
        self.tokens_per_batch = tokens_per_batch
        self.pack = pack
        self.pad_id = pad_id
        self.logit_chunk = logit_chunk
        self.device = next(model.parameters()).device
        self.full_forward = _logits_postprocessed(model.config)
        self.tokens_scored = 0
        self.padding_tokens = 0
        self.forward_tokens = 0

    def score(self, items: list[ScoringItem]) -> dict[int, list[float]]:
        """key -> log-probs of input_ids[first_scored:] (each predicted from the tokens before it)."""
        out: dict[int, list[float]] = {}
        for rows in plan_batches(items, self.tokens_per_batch, pack=self.pack):
            out.update(self._score_rows(rows))
        return out

    def _score_rows(self, rows: list[list[ScoringItem]]) -> dict[int, list[float]]:
        import torch

        width = max(sum(item.length for item in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        targets = []  # (row, position, token, key, k)
        for row_index, row in enumerate(rows):
            cursor = 0
            for item in row:
                length = item.length
                input_ids[row_index, cursor : cursor + length] = torch.tensor(item.input_ids)
                position_ids[row_index, cursor : cursor + length] = torch.arange(length)
                for offset in range(item.first_scored, length):
                    targets.append((row_index, cursor + offset, item.input_ids[offset], item.key))
                cursor += length
            # padding is its own "sequence" (positions restart), so it attends to nothing real
            position_ids[row_index, cursor:] = torch.arange(width - cursor)
        self.forward_tokens += len(rows) * width
        self.padding_tokens += sum(width - sum(item.length for item in row) for row in rows)
        self.tokens_scored += len(targets)
        with torch.inference_mode(), compute_context(self.model):
            rows_t = torch.tensor([t[0] for t in targets], device=self.device)
            cols_t = torch.tensor([t[1] for t in targets], device=self.device)
            tokens_t = torch.tensor([t[2] for t in targets], device=self.device)
            if self.full_forward:
                logits = self.model(
                    input_ids=input_ids.to(self.device), position_ids=position_ids.to(self.device), use_cache=False
                ).logits
                picked = torch.log_softmax(logits[rows_t, cols_t - 1].float(), dim=-1).gather(1, tokens_t[:, None])[
                    :, 0
                ]
            else:
                base = getattr(self.model, self.model.base_model_prefix)
                hidden = base(
                    input_ids=input_ids.to(self.device), position_ids=position_ids.to(self.device), use_cache=False
                ).last_hidden_state
                head = self.model.get_output_embeddings()
                picked_chunks = []
                for start in range(0, len(targets), self.logit_chunk):
                    stop = start + self.logit_chunk
                    states = hidden[rows_t[start:stop], cols_t[start:stop] - 1]
                    logprobs = torch.log_softmax(head(states).float(), dim=-1)
                    picked_chunks.append(logprobs.gather(1, tokens_t[start:stop, None])[:, 0])
                picked = torch.cat(picked_chunks) if picked_chunks else torch.zeros(0)
        values = picked.float().cpu().tolist()
        out: dict[int, list[float]] = {}
        for (_, _, _, key), value in zip(targets, values):
            out.setdefault(key, []).append(value)
        for row in rows:
            for item in row:
                out.setdefault(item.key, [])
        return out


# --- scoring a response record ----------------------------------------------------------------------
