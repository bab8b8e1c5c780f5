"""Cards are published: they must carry every fact of a run and none of its credentials (issue 26, item 8).

The card text is made by the real card code (`provenance_section`, as `dasd push` writes it) from a sample stage's
config and summary that hold each kind of credential next to facts whose names look like credentials."""

from __future__ import annotations

from dasd.reporting.cards import provenance_section, redacted

HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123"
OPENAI_KEY = "sk-" + "proj-abcdefghijklmnopqrstuvwx"


def _sample_step() -> dict:
    return {
        "stage": "sample",
        "file": "runs/x/responses.jsonl",
        "config": {
            "backend": {
                "name": "openai",
                "model": "openai/gpt-oss-120b",
                "mode": "completions",
                "api_key": "EMPTY-but-secret",
                "base_urls": ["http://alice:s3cret@node1:8000/v1", "http://node2:8000/v1"],
                "launch": f"vllm serve {{model}} --port {{port}} --api-key {OPENAI_KEY} --max-model-len 131072",
                "tokenizer": "o200k_harmony",
                "extra_body": {"Authorization": "Bearer abcdefghijklmnop", "reasoning_effort": "high"},
                "headers": {"X-Api-Key": "another-secret", "user-agent": "dasd"},
            },
            "hub": {"HF-Token": HF_TOKEN, "note": f"pushed with {HF_TOKEN}"},
            "schedule": [{"temperature": 0.6, "n": 4}, {"temperature": 1.0, "n": 8}],
            "top_p": 1.0,
            "top_k": -1,
            "max_new_tokens": 102400,
            "seed": 7,
        },
        "summary": {"records": 12, "completion_tokens": 34567, "prompt_tokens": 890, "token_budget": 5},
    }


def test_a_card_keeps_every_fact_and_no_credential():
    text = provenance_section([_sample_step()])
    for secret in ("EMPTY-but-secret", "alice", "s3cret", OPENAI_KEY, "abcdefghijklmnop", "another-secret", HF_TOKEN):
        assert secret not in text, secret
    # facts whose keys contain "token" or "key" are facts, not secrets
    for fact in (
        "max_new_tokens: 102400",
        "tokenizer: o200k_harmony",
        '"completion_tokens": 34567',
        '"prompt_tokens": 890',
        '"token_budget": 5',
        "max_new_tokens 102400",
        "reasoning_effort",
        "user-agent: dasd",
    ):
        assert fact in text, fact
    # what replaced the credentials keeps the text readable: the command, the hosts, the keys
    assert "--api-key <redacted> --max-model-len 131072" in text
    assert "http://<redacted>@node1:8000/v1" in text and "http://node2:8000/v1" in text
    assert "pushed with <redacted>" in text


def test_redaction_leaves_everything_else_as_it_was():
    config = _sample_step()["config"]
    clean = redacted(config)
    assert clean["backend"]["api_key"] == "<redacted>" and clean["hub"]["HF-Token"] == "<redacted>"
    assert clean["max_new_tokens"] == 102400 and clean["schedule"] == config["schedule"]
    assert clean["backend"]["model"] == config["backend"]["model"] and clean["backend"]["tokenizer"] == "o200k_harmony"
    assert redacted({"api_key": None, "token": ""}) == {"api_key": None, "token": ""}  # nothing to hide, nothing hidden
