"""The one model loader (`dasd.models.loading`): local folders, GGUF, assets, Hub ids — offline here."""

from __future__ import annotations

import pytest
import torch

from dasd.errors import DasdError
from dasd.models.assets import load_tokenizer
from dasd.models.loading import ModelConfig, load_causal_lm, load_model, resolve_dtype


def test_a_local_folder_loads_in_eval_mode_with_its_tokenizer(tiny_llama_smollm2):
    model, tokenizer, device = load_model(ModelConfig(model=str(tiny_llama_smollm2)))
    assert device == "cpu" and not model.training and next(model.parameters()).dtype == torch.float32
    assert tokenizer.eos_token == "<|im_end|>"  # the real SmolLM2 tokenizer the tiny model was built with


def test_a_hub_id_that_is_not_cached_is_a_one_line_error_offline(monkeypatch):
    """Hub ids go to transformers (cache, or download when online); offline and uncached, one clear line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DasdError, match=r"'no-such-org/no-such-model' is not a local folder.*HF_HUB_OFFLINE is set"):
        load_causal_lm("no-such-org/no-such-model", dtype=torch.float32, attention="sdpa")
    with pytest.raises(DasdError, match=r"tokenizer 'no-such-org/no-such-model' is not a local folder"):
        load_tokenizer("no-such-org/no-such-model")


def test_inference_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float16", "cuda") == torch.float16
