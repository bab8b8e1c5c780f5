"""gpt-oss harmony prompts through `openai-harmony`, offline (its o200k vocabulary comes from quicktok).

Used by completions-mode generation against a gpt-oss server: the prompt is rendered locally as
token ids, exactly as the model was trained to see it, and sent to `/v1/completions`; and by server
scoring (`dasd.scoring.token_scorers`), which renders a finished answer (`render_harmony_response`) to get gpt-oss's
prompt log-probs of it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from ..errors import DasdError

if TYPE_CHECKING:
    from .render import StudentText

# Opens the analysis (reasoning) message of an assistant turn.
ANALYSIS_OPEN = "<|channel|>analysis<|message|>"
# Between a finished analysis message and the final answer.
HARMONY_FINAL = "<|end|><|start|>assistant<|channel|>final<|message|>"


@lru_cache(maxsize=1)
def encoding():
    from ..models.assets import harmony_encodings_dir

    harmony_encodings_dir()
    try:
        from openai_harmony import HarmonyEncodingName, load_harmony_encoding
    except ImportError as exc:  # optional extra
        raise DasdError("prompt_format=harmony needs openai-harmony: pip install 'dasd[harmony]'") from exc
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def conversation(
    messages: list[dict[str, str]], *, reasoning_effort: str = "medium", assistant_prefix: str | None = None
):
    """A harmony Conversation: system (reasoning effort), developer (our system prompt), turns.

    `assistant_prefix` becomes an unfinished analysis message, so the model continues its reasoning.
    """
    from openai_harmony import Conversation, DeveloperContent, Message, ReasoningEffort, Role, SystemContent

    effort = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}[
        reasoning_effort.lower()
    ]
    turns = [Message.from_role_and_content(Role.SYSTEM, SystemContent.new().with_reasoning_effort(effort))]
    for message in messages:
        role, content = message["role"], message["content"]
        if role in ("system", "developer"):
            turns.append(
                Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_instructions(content))
            )
        elif role == "user":
            turns.append(Message.from_role_and_content(Role.USER, content))
        elif role == "assistant":
            turns.append(Message.from_role_and_content(Role.ASSISTANT, content).with_channel("final"))
    return Conversation.from_messages(turns)


def render_prompt_ids(
    messages: list[dict[str, str]], *, reasoning_effort: str = "medium", assistant_prefix: str | None = None
) -> list[int]:
    """Token ids of the prompt, ending where the assistant's next message starts (or inside the
    analysis message that `assistant_prefix` begins)."""
    from openai_harmony import Role

    enc = encoding()
    ids = list(
        enc.render_conversation_for_completion(
            conversation(messages, reasoning_effort=reasoning_effort), Role.ASSISTANT
        )
    )
    if assistant_prefix is not None:
        ids += list(enc.encode(ANALYSIS_OPEN, allowed_special="all")) + list(enc.encode(assistant_prefix))
    return ids


def decode(ids: list[int]) -> str:
    return encoding().decode_utf8(list(ids))


def render_harmony_response(
    messages: list[dict[str, str]], reasoning: str, content: str, *, reasoning_effort: str = "medium"
) -> StudentText:
    """A finished gpt-oss answer as token ids: the harmony prompt, the analysis message holding the
    reasoning, then the final message holding the answer — with each text token's span in
    `reasoning + HARMONY_FINAL + content` (the form `completion_part_logprobs` reads)."""
    from ..models.assets import load_tokenizer
    from .render import StudentText

    harmony = encoding()
    tokenizer = load_tokenizer("o200k_harmony")
    prompt_ids = render_prompt_ids(messages, reasoning_effort=reasoning_effort) + list(
        harmony.encode(ANALYSIS_OPEN, allowed_special="all")
    )
    ids: list[int] = []
    spans: list[tuple[int, int]] = []

    def text_tokens(text: str, offset: int) -> None:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids.extend(encoded["input_ids"])
        spans.extend((offset + start, offset + end) for start, end in encoded["offset_mapping"])

    text_tokens(reasoning, 0)
    position = len(reasoning)
    for token in harmony.encode(HARMONY_FINAL, allowed_special="all"):
        piece = harmony.decode([token])
        ids.append(token)
        spans.append((position, position + len(piece)))
        position += len(piece)
    text_tokens(content, position)
    completion = reasoning + HARMONY_FINAL + content
    return StudentText(prompt_ids, ids, spans, completion, 0, len(reasoning) + len(HARMONY_FINAL), False)
