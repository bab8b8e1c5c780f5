"""GPU paths (skipped without a CUDA GPU): sampling fidelity on the GPU, bf16 training with Liger.

The numbers these paths gave on an H100 are in benchmarks/RESULTS.md (benchmarks/gpu_sample.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from dasd.backends.base import BackendConfig, GenerationRequest
from dasd.backends.hf import HFBackend
from dasd.config import load_config
from dasd.stages import train

from .conftest import write_jsonl
from .test_train import sft_records

pytestmark = pytest.mark.gpu


def test_sampling_logprobs_on_the_gpu_match_a_teacher_forced_pass(tiny_qwen3):
    backend = HFBackend(BackendConfig(model=str(tiny_qwen3), device="cuda", dtype="float32"), chat_template_kwargs={})
    requests = [
        GenerationRequest(
            id=f"r{i}", messages=[{"role": "user", "content": f"Say {i}."}], temperature=0.6, max_new_tokens=32, seed=i
        )
        for i in range(4)
    ]
    for result, request in zip(sorted(backend.generate(requests), key=lambda r: r.id), requests):
        prompt, _ = backend.render(request)
        with torch.no_grad():
            logits = backend.model(
                input_ids=torch.tensor([prompt + result.token_ids], device="cuda"), use_cache=False
            ).logits.float()
        reference = torch.log_softmax(logits, -1)[0, len(prompt) - 1 : -1].gather(
            1, torch.tensor(result.token_ids, device="cuda")[:, None]
        )[:, 0]
        assert (reference.cpu() - torch.tensor(result.token_logprobs)).abs().max().item() < 1e-4


@pytest.mark.parametrize("liger", [False, True])
def test_bf16_training_step_on_the_gpu(tmp_path, tiny_qwen3, liger):
    if liger:
        pytest.importorskip("liger_kernel")
    data = write_jsonl(tmp_path / "sft.jsonl", sft_records(8))
    config = load_config(
        train.TrainConfig,
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"student.model={tiny_qwen3}",
            f"stages=[{{name: s, data: {data}}}]",
            "global_batch_size=2",
            "max_length=512",
            "max_steps=2",
            f"liger={str(liger).lower()}",
        ],
    )
    metrics = train.run(config)["stages"][0]
    assert metrics["bf16"] is True and metrics["optimizer_steps"] == 2
    assert json.loads((tmp_path / "run" / "s" / "metrics.json").read_text())["liger"] is liger
