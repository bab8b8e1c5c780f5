"""Tiny causal LMs built from configs (random init, seeded) with real tokenizers, for tests and demos.

    python -m dasd.models.tiny --arch qwen3 --tokenizer qwen3 --out /tmp/tiny-qwen3

The model folders are ordinary HF checkpoints (config, safetensors, tokenizer, generation config),
so every backend — transformers, vLLM, the training stack — loads them like a real model.
`teach_tiny_model` fits one for a few hundred steps on a handful of texts, so that it really
generates think-tagged answers and stops (a random model almost never emits its EOS).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ARCHITECTURES = ("qwen3", "llama")


def tiny_config(
    arch: str,
    vocab_size: int,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int = 1,
    intermediate_size: int = 128,
    max_position: int = 8192,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
):
    """A small config of a real architecture (head_dim = hidden_size / heads; 32+ keeps vLLM's CPU kernels happy)."""
    from transformers import LlamaConfig, Qwen3Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position,
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
    )
    if arch == "qwen3":
        return Qwen3Config(head_dim=hidden_size // heads, **common)
    if arch == "llama":
        return LlamaConfig(head_dim=hidden_size // heads, **common)
    raise ValueError(f"unknown architecture {arch!r}: choose {', '.join(ARCHITECTURES)}")


def build_tiny_model(arch: str, tokenizer_name: str, out_dir: str | Path, *, seed: int = 0, **config_kwargs) -> Path:
    """Random-init model of `arch` sized for the tokenizer, saved with it to `out_dir` (returned)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from .assets import load_tokenizer

    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(tokenizer_name)
    eos_ids = _stop_ids(tokenizer)
    config = tiny_config(
        arch,
        vocab_size=len(tokenizer),
        eos_token_id=eos_ids[0],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **config_kwargs,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def _stop_ids(tokenizer) -> list[int]:
    """End-of-turn ids: the tokenizer's EOS first, then the other end tokens the vocabulary has."""
    ids = [tokenizer.eos_token_id]
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|return|>", "<|call|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids and token_id >= 0:
            if tokenizer.convert_ids_to_tokens(token_id) == token:
                ids.append(token_id)
    return ids


def teach_tiny_model(
    model_dir: str | Path, conversations: list[list[dict]], *, steps: int = 300, lr: float = 3e-3, seed: int = 0
) -> Path:
    """Fit the model in `model_dir` on whole chat transcripts (prompt + answer + end token), in place.

    A fixture helper, not a trainer: full-batch AdamW on a few short texts so a tiny model learns to
    answer in a fixed format and stop. Real training is `dasd train` on TRL.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    texts = [tokenizer.apply_chat_template(conversation, tokenize=False) for conversation in conversations]
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encoded])
    labels = torch.tensor([ids + [-100] * (width - len(ids)) for ids in encoded])
    attention = (labels != -100).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels, use_cache=False).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(str(model_dir))
    return Path(model_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a tiny random-init causal LM with a real tokenizer.")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="qwen3", help="model architecture")
    parser.add_argument(
        "--tokenizer", default="qwen3", help="smollm2, qwen3, llama3, o200k_harmony, or a tokenizer folder"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="init seed")
    parser.add_argument("--hidden-size", type=int, default=64, help="hidden size")
    parser.add_argument("--layers", type=int, default=2, help="number of layers")
    args = parser.parse_args(argv)
    path = build_tiny_model(
        args.arch, args.tokenizer, args.out, seed=args.seed, hidden_size=args.hidden_size, layers=args.layers
    )
    print(path)


if __name__ == "__main__":
    main()
