"""Token ids -> exact bytes -> text with a character span per token (any HF tokenizer).

Generation gives token ids; a response record (`dasd.data.records.TokenLogprobs`) wants each token's
character span in the stored text. A token of a byte-level BPE can end in the middle of a UTF-8
character, so spans are computed in bytes and mapped to characters: a token covers every character
any of its bytes belongs to (two tokens that split one character both cover it).
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte <-> unicode table, inverted (the alphabet of byte-level BPE vocabularies)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def decode_bytes_with_spans(pieces: list[bytes]) -> tuple[str, list[tuple[int, int]]]:
    """Join byte pieces into text; return the text and each piece's `(start, end)` character span.

    Invalid UTF-8 (a response cut inside a character) becomes U+FFFD, one per bad byte, so the
    mapping stays exact.
    """
    blob = b"".join(pieces)
    escaped = blob.decode("utf-8", errors="surrogateescape")
    # byte index -> character index
    char_of_byte = [0] * (len(blob) + 1)
    byte_position = 0
    chars = []
    for char_index, char in enumerate(escaped):
        if "\udc80" <= char <= "\udcff":
            width = 1
            chars.append("\ufffd")
        else:
            width = len(char.encode("utf-8"))
            chars.append(char)
        for offset in range(width):
            char_of_byte[byte_position + offset] = char_index
        byte_position += width
    char_of_byte[len(blob)] = len(escaped)
    text = "".join(chars)
    spans = []
    byte_start = 0
    for piece in pieces:
        byte_end = byte_start + len(piece)
        if byte_end == byte_start:
            position = char_of_byte[byte_start]
            spans.append((position, position))
        else:
            spans.append((char_of_byte[byte_start], char_of_byte[byte_end - 1] + 1))
        byte_start = byte_end
    return text, spans


class TokenBytes:
    """Exact bytes of each token id of an HF tokenizer (byte-level BPE or SentencePiece-style).

    Special/added tokens give the bytes of their content, so a decoded response shows `<think>`,
    `<|channel|>` and the like. `check` verifies the table against `tokenizer.decode`.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        size = max(max(vocab.values()) + 1, len(tokenizer))
        tokens: list[str | None] = [None] * size
        for token, index in vocab.items():
            tokens[index] = token
        added = {index: token.content for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        decoder = _byte_decoder()
        regular = [token for index, token in enumerate(tokens) if token is not None and index not in added]
        sample = regular[: min(len(regular), 5000)]
        self.byte_level = bool(sample) and all(all(char in decoder for char in token) for token in sample)
        self.table: list[bytes] = []
        for index, token in enumerate(tokens):
            if index in added:
                self.table.append(added[index].encode("utf-8"))
            elif token is None:
                self.table.append(b"")
            elif self.byte_level:
                self.table.append(bytes(decoder[char] for char in token))
            else:
                self.table.append(_sentencepiece_bytes(token))

    def pieces(self, ids) -> list[bytes]:
        table = self.table
        return [table[int(index)] if int(index) < len(table) else b"" for index in ids]

    def text_and_spans(self, ids) -> tuple[str, list[tuple[int, int]]]:
        return decode_bytes_with_spans(self.pieces(ids))

    def check(self, ids) -> bool:
        """True when our bytes decode to what the tokenizer itself decodes (special tokens kept)."""
        ours, _ = self.text_and_spans(ids)
        theirs = self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return ours == theirs


def _sentencepiece_bytes(token: str) -> bytes:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            pass
    return token.replace("\u2581", " ").encode("utf-8")
