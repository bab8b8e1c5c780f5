"""Sentence splitting for chain-of-thought: our rules vs pysbd — accuracy on labelled examples, speed.

    .venv/bin/python benchmarks/bench_sentences.py

Accuracy: the labelled reasoning examples of tests/test_sentences.py (LaTeX, decimals,
abbreviations, enumerations, code blocks, lists, paragraphs, "Wait," restarts); an example counts
as right when the sentence list is exactly the expected one. Speed: characters/s on a ~100 KB
chain of thought built from the same examples. Also prints segmentation + token alignment
throughput (tokens/s) for the two real tokenizers, to set against the student forward pass.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DASD_CACHE", str(REPO / ".cache" / "dasd"))


def pysbd_split(segmenter, text: str) -> list[str]:
    return [sentence.strip() for sentence in segmenter.segment(text) if sentence.strip()]


def main() -> None:
    import pysbd

    from dasd.models.assets import load_tokenizer
    from dasd.scoring.sentence_scores import assign_tokens
    from dasd.text.sentences import split_sentences
    from tests.test_sentences import LABELLED

    segmenter = pysbd.Segmenter(language="en", clean=False)
    ours_right = sum([text[s:e] for s, e in split_sentences(text)] == expected for text, expected in LABELLED)
    theirs_right = sum(pysbd_split(segmenter, text) == expected for text, expected in LABELLED)
    failures = [
        (text[:50], pysbd_split(segmenter, text))
        for text, expected in LABELLED
        if pysbd_split(segmenter, text) != expected
    ]

    long_text = "\n\n".join(text for text, _ in LABELLED) * 80
    started = time.perf_counter()
    spans = split_sentences(long_text)
    ours_seconds = time.perf_counter() - started
    sample = long_text[: len(long_text) // 8]  # pysbd is slow: time an eighth and scale
    started = time.perf_counter()
    pysbd_split(segmenter, sample)
    theirs_seconds = (time.perf_counter() - started) * len(long_text) / len(sample)

    print(f"labelled examples: {len(LABELLED)}")
    print(f"  ours   exact: {ours_right}/{len(LABELLED)}")
    print(f"  pysbd  exact: {theirs_right}/{len(LABELLED)}")
    for text, got in failures[:5]:
        print(f"    pysbd on {text!r}… -> {got[:3]}")
    print(f"speed on {len(long_text):,} characters ({len(spans):,} sentences):")
    print(f"  ours   {len(long_text) / ours_seconds:12,.0f} chars/s")
    print(f"  pysbd  {len(long_text) / theirs_seconds:12,.0f} chars/s (estimated from an eighth)")
    print(f"  ratio ours / pysbd: {theirs_seconds / ours_seconds:.1f}x")

    for name in ("smollm2", "qwen3"):
        tokenizer = load_tokenizer(name)
        encoded = tokenizer(long_text, add_special_tokens=False, return_offsets_mapping=True)
        token_spans = [tuple(span) for span in encoded["offset_mapping"]]
        started = time.perf_counter()
        sentence_spans = split_sentences(long_text)
        assign_tokens(token_spans, sentence_spans, long_text)
        seconds = time.perf_counter() - started
        print(
            f"segmentation + alignment, {name}: {len(token_spans) / seconds:,.0f} tokens/s "
            f"({len(token_spans):,} tokens)"
        )


if __name__ == "__main__":
    main()
