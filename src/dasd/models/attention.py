"""Attention for packed rows that skips the blocks between samples instead of masking them.

    from dasd.models.attention import packed_attention
    name = packed_attention("cuda")      # flash_attention_2 when installed, else "dasd_packed"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=name)
    model(input_ids=rows, position_ids=positions_restarting_per_sample, use_cache=False)

Several samples share a row when scoring (`dasd score`, `batching=packed`) and training (`packing=true`);
`position_ids` restart at 0 where each sample starts. With SDPA, transformers turns that into a dense
block-diagonal mask of width² per row — any mask moves SDPA off its causal kernel, and a 16K row of
ten samples computes ten times the attention it needs (benchmarks/RESULTS.md: packed rows were slower
than one sample per forward on CPU and on an H100).

`dasd_packed` is registered with transformers' `AttentionInterface`; it reads the sample boundaries from
`position_ids` (once per forward, shared by all layers) and runs every sample's causal attention on its
own, with no mask:
* on CUDA, through PyTorch's variable-length flash kernel (`torch.nn.attention.varlen.varlen_attn`)
  when the installed torch has it — one call for all samples of all rows;
* elsewhere (CPU, or a torch without it), through SDPA's causal kernel per sample (a Python loop over
  samples; each call is large, so the loop's overhead is small next to the matmuls).
The projections, MLPs and LM head still see whole packed rows, which is where packing pays.

FlexAttention (transformers' `flex_attention`, a document BlockMask from the same `position_ids`) was
tried first: on this CPU with torch 2.13, inductor fails to compile its kernel for a packed row
(`CppCompileError`), and it compiles per new row width. It stays available as
`attn_implementation=flex_attention` for GPUs, not chosen by `auto`.

Only packed, unpadded rows without a KV cache are accepted (what scoring and padding-free training
pass); anything else is a clear error rather than silently wrong attention. So are the attention features
transformers passes as keyword arguments that this kernel does not compute: attention sinks (`s_aux`, gpt-oss),
logit soft-capping (`softcap`, Gemma 2), a sliding window (`sliding_window`, Mistral, Gemma, Qwen's sliding
layers) over a sample longer than the window (shorter ones attend to every earlier token either way, so they
are exact), and non-causal attention. `auto` never picks `dasd_packed` for a model whose config has them
(`unsupported_features`).
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

PACKED = "dasd_packed"

_last_bounds: tuple[Any, Any] = (None, None)  # (weakref to position_ids, its boundaries)


def sample_bounds(position_ids) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each sample: a sample starts where the position is 0 (or row start).

    >>> import torch
    >>> sample_bounds(torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]))
    [[(0, 3), (3, 5), (5, 6)], [(0, 6)]]
    """
    rows = []
    width = position_ids.shape[-1]
    starts_by_row = [[] for _ in range(position_ids.shape[0])]
    for row, column in (position_ids == 0).nonzero().tolist():
        starts_by_row[row].append(column)
    for starts in starts_by_row:
        if not starts or starts[0] != 0:
            starts = [0, *starts]
        rows.append([(start, end) for start, end in zip(starts, [*starts[1:], width])])
    return rows


def _bounds_for(position_ids):
    """`sample_bounds`, computed once per forward: every layer gets the same `position_ids` tensor."""
    global _last_bounds
    reference, bounds = _last_bounds
    if reference is not None and reference() is position_ids:
        return bounds
    bounds = sample_bounds(position_ids)
    _last_bounds = (weakref.ref(position_ids), bounds)
    return bounds


@functools.cache
def _varlen_kernel(device_type: str):
    """(PyTorch's variable-length flash attention, the names of its parameters) on CUDA, else None.

    Its signature changed between releases: the first (torch 2.10) takes `is_causal` and no `scale`, later
    ones `window_size=(-1, 0)` for causal, `scale` and `enable_gqa`; both are handled.

    >>> _varlen_kernel("cpu") is None
    True
    """
    if device_type != "cuda":
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    import inspect

    return varlen_attn, set(inspect.signature(varlen_attn).parameters)


def _varlen_call(kernel, query, key, value, bounds, scaling):
    """All samples of all rows in one varlen call, or None where this kernel cannot do it exactly."""
    import torch

    varlen, parameters = kernel
    batch, heads, width, head_dim = query.shape
    low = query.dtype
    if low not in (torch.float16, torch.bfloat16):  # flash kernels are 16-bit: the autocast dtype, if any
        if not torch.is_autocast_enabled(query.device.type):
            return None
        low = torch.get_autocast_dtype(query.device.type)
    options: dict[str, Any] = {}
    if "window_size" in parameters:
        options["window_size"] = (-1, 0)
    elif "is_causal" in parameters:
        options["is_causal"] = True
    else:
        return None
    if "scale" in parameters:
        options["scale"] = scaling
    elif scaling is not None and abs(scaling - head_dim**-0.5) > 1e-12:
        return None
    groups = heads // key.shape[1]
    lengths = [end - start for row in bounds for start, end in row]
    cumulative = torch.tensor([0, *lengths], device=query.device, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    q = query.transpose(1, 2).reshape(batch * width, heads, head_dim).to(low)
    k = key.transpose(1, 2).reshape(batch * width, key.shape[1], head_dim).to(low)
    v = value.transpose(1, 2).reshape(batch * width, value.shape[1], head_dim).to(low)
    if groups > 1:
        if "enable_gqa" in parameters:
            options["enable_gqa"] = True
        else:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    longest = max(lengths)
    out = varlen(q, k, v, cumulative, cumulative, longest, longest, **options)
    return out.reshape(batch, width, heads, head_dim)


def unsupported_features(config) -> list[str]:
    """The attention features of a model config that `dasd_packed` does not compute (empty: it can run the model).

    >>> from transformers import Qwen3Config, Gemma2Config
    >>> unsupported_features(Qwen3Config()), unsupported_features(Gemma2Config())
    ([], ['logit soft-capping (attn_logit_softcapping)', 'a sliding window (sliding_window)'])
    """
    features = []
    if getattr(config, "model_type", None) == "gpt_oss" or getattr(config, "sinks", None) is not None:
        features.append("attention sinks (gpt-oss)")
    if getattr(config, "attn_logit_softcapping", None):
        features.append("logit soft-capping (attn_logit_softcapping)")
    layer_types = getattr(config, "layer_types", None)
    sliding = (
        any(kind == "sliding_attention" for kind in layer_types)
        if layer_types
        else getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    )
    if sliding:
        features.append("a sliding window (sliding_window)")
    return features


def _refuse_what_it_cannot_compute(kwargs: dict, bounds) -> None:
    """One line for each attention feature transformers passed that this kernel would silently drop."""
    if kwargs.get("s_aux") is not None:
        raise ValueError("dasd_packed attention has no attention sinks (s_aux, gpt-oss): use sdpa or eager")
    if kwargs.get("softcap"):
        raise ValueError("dasd_packed attention has no logit soft-capping (softcap): use eager attention")
    if kwargs.get("is_causal") is False:
        raise ValueError("dasd_packed attention is causal only (this layer asked for bidirectional attention)")
    window = kwargs.get("sliding_window")
    if window is not None:
        longest = max(end - start for row in bounds for start, end in row)
        if longest > window:  # shorter samples see every earlier token under the window too: exact
            raise ValueError(
                f"dasd_packed attention has no sliding window: a {longest}-token sample is longer than this "
                f"model's {window}-token window (use sdpa)"
            )


def packed_attention_forward(
    module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs
):
    """transformers attention interface: query [b, heads, s, d], key/value [b, kv_heads, s, d] ->
    ([b, s, heads, d], None), each sample attending causally to itself only."""
    import torch

    if attention_mask is not None:
        raise ValueError(
            "dasd_packed attention takes packed rows without padding masks (position_ids restarting per sample)"
        )
    if query.shape[2] != key.shape[2]:
        raise ValueError("dasd_packed attention does not decode with a KV cache: pass use_cache=False")
    if dropout:
        raise ValueError("dasd_packed attention has no dropout")
    position_ids = kwargs.get("position_ids")
    batch, heads, width, _ = query.shape
    if position_ids is None:
        bounds = [[(0, width)] for _ in range(batch)]
    else:
        bounds = _bounds_for(position_ids.expand(batch, width) if position_ids.shape[0] != batch else position_ids)
    _refuse_what_it_cannot_compute(kwargs, bounds)
    kernel = _varlen_kernel(query.device.type)
    if kernel is not None:
        out = _varlen_call(kernel, query, key, value, bounds, scaling)
        if out is not None:
            return out, None
    groups = heads // key.shape[1]
    outputs = []
    for row, samples in enumerate(bounds):
        pieces = []
        for start, end in samples:
            q = query[row : row + 1, :, start:end]
            k = key[row : row + 1, :, start:end]
            v = value[row : row + 1, :, start:end]
            pieces.append(
                torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=end - start > 1, scale=scaling, enable_gqa=groups > 1
                )
            )
        outputs.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    out = torch.cat(outputs, dim=0) if len(outputs) > 1 else outputs[0]
    return out.transpose(1, 2).contiguous(), None


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def flash_attn_installed() -> bool:
    """Whether flash-attn imports here (what transformers' `flash_attention_2` needs, on a GPU)."""
    return _importable("flash_attn")


def has_varlen_kernel() -> bool:
    """Whether a varlen attention kernel is installed: flash-attn, or PyTorch's `varlen_attn` (torch >= 2.10)."""
    return flash_attn_installed() or _importable("torch.nn.attention.varlen")


def register() -> str:
    """Register `dasd_packed` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(PACKED, packed_attention_forward)
    # the mask it gets is flash's: None for packed rows, the 2D padding mask otherwise (refused above)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED, flash_attention_mask)
    return PACKED


def packed_attention(device: str, config=None) -> str | None:
    """The attention for packed rows on `device`: flash_attention_2 on a GPU when flash-attn is installed,
    else dasd_packed (registered on first use) — or None when the model (`config`) has attention features
    dasd_packed does not compute: the caller keeps its own choice (sdpa's block-diagonal mask, exact but slower)."""
    if device.startswith("cuda") and flash_attn_installed():
        return "flash_attention_2"
    if config is not None and unsupported_features(config):
        return None
    return register()
