"""The LM head restricted to the rows a model can produce — the same logits, for inference only.

    rows = restrict_output_vocab(model)   # 81 for the demo world's teacher; None when not worth it (a real model)

A model whose output embedding is mostly exactly-zero rows spends its LM head computing logits that are exactly
0. The demo world's teacher is one (`dasd.models.demo_world`): the real Qwen3 vocabulary, 151,669 rows, of which
the 81 tokens the world uses are non-zero — so 96% of its matmul work is the head. `RestrictedLMHead` keeps
the non-zero rows and their ids and writes their logits into a zero tensor of the full width: the caller still
gets the full vocabulary's logits, zero rows at exactly 0 as before, so the hf backend's sampler (inverse CDF
over the full vocabulary), the recorded log-probs and `ModelScorer`'s log-softmax see what the full head gives.

Exactness, measured on this project's CPU (float32, MKL; tests/test_restricted_head.py checks it): with two or more
positions through the head at once (a batch of generation rows, `ModelScorer`'s chunks) the kept logits are
bit-identical to the full head's, under bfloat16 autocast too — 1,895 sampled and 490 scored log-probs of the demo
teacher, all equal. A single position (a batch of one) goes through a matrix-vector kernel whose rounding depends on
the matrix's shape: logits differ by about a float32 ulp (measured up to 7.6e-6), sampled log-probs by up
to 2.2e-6 (457 of 490 equal), the same tokens — as the full head itself differs between one row and a batch.

`dasd.models.loading.load_model` applies it (`ModelConfig.restrict_vocab`, default auto) to the models it
loads for generation and scoring; training loads its model with `load_causal_lm` and never sees it. A model
with a bias on its head, with fewer than `MIN_ZERO_SHARE` zero rows, or whose head is not a plain
`nn.Linear` (a quantized one) keeps its head.
"""

from __future__ import annotations

import torch

MIN_ZERO_SHARE = 0.5  # below this share of zero rows the scatter into the full width costs about what it saves


class RestrictedLMHead(torch.nn.Module):
    """`nn.Linear(hidden, vocab, bias=False)` over a weight whose rows outside `ids` are zero, computing only `ids`.

    >>> weight = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    >>> head = RestrictedLMHead(weight, torch.tensor([1, 3]))
    >>> head(torch.tensor([[1.0, 1.0]])).tolist()
    [[0.0, 3.0, 0.0, 2.0]]
    """

    def __init__(self, weight: torch.Tensor, ids: torch.Tensor):
        super().__init__()
        self.out_features = weight.shape[0]
        self.in_features = weight.shape[1]
        # Buffers, not parameters: nothing trains this head, and `model.to(...)` still moves them.
        self.register_buffer("ids", ids.to(weight.device, torch.long), persistent=False)
        self.register_buffer("rows", weight.detach()[ids].contiguous(), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # F.linear as the full head does, so autocast casts the same way; the zero rows' logits stay 0.
        kept = torch.nn.functional.linear(hidden, self.rows)
        logits = kept.new_zeros(*kept.shape[:-1], self.out_features)
        return logits.index_copy_(-1, self.ids, kept)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kept_rows={self.ids.numel()}"


def nonzero_rows(weight: torch.Tensor) -> torch.Tensor:
    """Ids of the rows with any non-zero entry (NaN counts as non-zero).

    >>> nonzero_rows(torch.tensor([[0.0, 0.0], [0.0, -2.0], [0.0, 0.0]])).tolist()
    [1]
    """
    # in slices: a real model's head compared at once would allocate a vocabulary x hidden mask (GBs on a GPU)
    return torch.cat([(rows != 0).any(dim=1) for rows in weight.split(8192)]).nonzero()[:, 0]


def restrict_output_vocab(model, *, min_zero_share: float = MIN_ZERO_SHARE) -> int | None:
    """Replace `model`'s output projection by a `RestrictedLMHead` when at least `min_zero_share` of its rows are
    exactly zero and it has no bias; returns the rows kept, or None when the head is left as it was.

    The input embedding is not touched (tied weights share the parameter; the model's own `lm_head` is what its
    forward calls, with or without a KV cache, and what `get_output_embeddings()` returns)."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None or not head.weight.is_floating_point():
        return None
    with torch.no_grad():
        ids = nonzero_rows(head.weight)
    if head.weight.shape[0] - ids.numel() < min_zero_share * head.weight.shape[0]:
        return None
    model.set_output_embeddings(RestrictedLMHead(head.weight, ids))
    return int(ids.numel())
