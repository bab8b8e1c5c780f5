"""gpt-oss harmony prompts through `openai-harmony`, offline (its o200k vocabulary comes from quicktok).

Used by completions-mode generation against a gpt-oss server: the prompt is rendered locally as
token ids, exactly as the model was trained to see it, and sent to `/v1/completions`.
"""

from __future__ import annotations

from functools import lru_cache

from .errors import DasdError


@lru_cache(maxsize=1)
def encoding():
    from .assets import harmony_encodings_dir

    harmony_encodings_dir()
    try:
        from openai_harmony import HarmonyEncodingName, load_harmony_encoding
    except ImportError as exc:  # optional extra
        raise DasdError("prompt_format=harmony needs openai-harmony: pip install 'dasd[harmony]'") from exc
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def conversation(messages: list[dict[str, str]], *, reasoning_effort: str = "medium", assistant_prefix: str | None = None):
    """A harmony Conversation: system (reasoning effort), developer (our system prompt), turns.

    `assistant_prefix` becomes an unfinished analysis message, so the model continues its reasoning.
    """
    from openai_harmony import Conversation, DeveloperContent, Message, ReasoningEffort, Role, SystemContent

    effort = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM, "high": ReasoningEffort.HIGH}[reasoning_effort.lower()]
    turns = [Message.from_role_and_content(Role.SYSTEM, SystemContent.new().with_reasoning_effort(effort))]
    for message in messages:
        role, content = message["role"], message["content"]
        if role in ("system", "developer"):
            turns.append(Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new().with_instructions(content)))
        elif role == "user":
            turns.append(Message.from_role_and_content(Role.USER, content))
        elif role == "assistant":
            turns.append(Message.from_role_and_content(Role.ASSISTANT, content).with_channel("final"))
    return Conversation.from_messages(turns)


def render_prompt_ids(messages: list[dict[str, str]], *, reasoning_effort: str = "medium", assistant_prefix: str | None = None) -> list[int]:
    """Token ids of the prompt, ending where the assistant's next message starts (or inside the
    analysis message that `assistant_prefix` begins)."""
    from openai_harmony import Role

    enc = encoding()
    ids = list(enc.render_conversation_for_completion(conversation(messages, reasoning_effort=reasoning_effort), Role.ASSISTANT))
    if assistant_prefix is not None:
        ids += list(enc.encode("<|channel|>analysis<|message|>", allowed_special="all")) + list(enc.encode(assistant_prefix))
    return ids


def decode(ids: list[int]) -> str:
    return encoding().decode_utf8(list(ids))
