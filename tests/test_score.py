"""`dasd score`: same-model agreement, cross-tokenizer sentence alignment, packing, bad records, released data."""

from __future__ import annotations

import math

import pytest
import torch

from dasd.config import load_config
from dasd.scoring import sentence_scores
from dasd.scoring.sentence_scores import assign_tokens, classify, score_sentences
from dasd.scoring.token_scorers import ModelScorer, ScoringItem, plan_batches
from dasd.stages import sample, score
from dasd.text.render import completion_part_logprobs, render_student
from dasd.text.sentences import split_sentences

from .conftest import read_jsonl, write_jsonl

COT = (
    "We need $x.y$ where $x = 2.5$. So the product is $\\frac{1}{2}$, i.e. half.\n"
    "Steps:\n1. Expand the bracket.\n2. Collect terms: $3x + 2 = 11$.\n\n"
    "Wait, let me double-check 3.14 * 2 = 6.28. Yes!\n"
    "```python\nprint(round(6.283, 2))\n```\n"
    "Hmm... café résumé — 日本語 works too 🚀."
)


def _sample_then_score(tmp_path, model, *, sample_overrides, score_overrides=()):
    questions = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": f"q{a}{b}", "prompt": f"What is {a} + {b}?", "answer": str(a + b)}
            for a in range(2, 6)
            for b in range(3, 5)
        ],
    )
    sample.run(
        load_config(
            sample.SampleConfig,
            None,
            [
                f"input={questions}",
                f"output={tmp_path / 'responses.jsonl'}",
                f"backend.model={model}",
                "max_new_tokens=40",
                *sample_overrides,
            ],
        )
    )
    summary = score.run(
        load_config(
            score.ScoreConfig,
            None,
            [
                f"input={tmp_path / 'responses.jsonl'}",
                f"output={tmp_path / 'scored.jsonl'}",
                f"student.model={model}",
                *score_overrides,
            ],
        )
    )
    return read_jsonl(tmp_path / "scored.jsonl"), summary


def test_same_model_as_teacher_and_student_gives_only_shared_sentences(tmp_path, taught_teacher):
    # Sampled at temperatures 0.6 and 1.0 (top_k=1, so the text is the model's own canonical
    # tokenization): the recorded raw log-probs must equal the student's teacher-forced ones.
    # A temperature-scaled log-prob, a different prompt or an off-by-one shift would not.
    records, summary = _sample_then_score(
        tmp_path,
        taught_teacher,
        sample_overrides=["schedule=[{temperature: 0.6, n: 1}, {temperature: 1.0, n: 1}]", "top_k=1"],
        score_overrides=["system_prompt=null"],  # the prompt the teacher saw (the template's default)
    )
    assert len(records) == 16 and summary["records_failed"] == 0
    worst = 0.0
    for record in records:
        assert record["das"]["n"] == len(record["sentences"]) > 0
        for sentence in record["sentences"]:
            assert sentence["type"] == "shared"
            worst = max(worst, abs(math.exp(sentence["teacher_logprob"]) - math.exp(sentence["student_logprob"])))
    assert worst < 1e-3


def test_a_different_system_prompt_is_visible_in_the_student_probabilities(tmp_path, taught_teacher):
    records, _ = _sample_then_score(
        tmp_path,
        taught_teacher,
        sample_overrides=["schedule=[{temperature: 0.6, n: 1}]", "top_k=1"],
        score_overrides=["system_prompt=You are a pirate. Answer in riddles."],
    )
    differences = [abs(s["teacher_logprob"] - s["student_logprob"]) for r in records for s in r["sentences"]]
    assert max(differences) > 1e-3  # the check above is not vacuous


@pytest.mark.parametrize("fixture", ["smollm2_tokenizer", "qwen3_tokenizer"])
def test_every_token_of_each_real_tokenizer_lands_in_exactly_one_sentence(fixture, request):
    tokenizer = request.getfixturevalue(fixture)
    spans = split_sentences(COT)
    encoded = tokenizer(COT, add_special_tokens=False, return_offsets_mapping=True)
    token_spans = [tuple(span) for span in encoded["offset_mapping"]]
    owners = assign_tokens(token_spans, spans, COT)
    assert len(owners) == len(token_spans) and all(0 <= owner < len(spans) for owner in owners)
    for (start, end), owner in zip(token_spans, owners):
        visible = [position for position in range(start, end) if not COT[position].isspace()]
        if visible:  # the token's first visible character is inside its sentence
            assert spans[owner][0] <= visible[0] < spans[owner][1]
    # every sentence gets at least one token
    assert set(owners) == set(range(len(spans)))


def test_sentence_spans_do_not_depend_on_the_tokenizer(smollm2_tokenizer, qwen3_tokenizer):
    by_tokenizer = {}
    for name, tokenizer in (("smollm2", smollm2_tokenizer), ("qwen3", qwen3_tokenizer)):
        text = render_student(tokenizer, [{"role": "user", "content": "Q"}], COT, "The answer is $\\boxed{6.28}$.")
        parts = completion_part_logprobs(text, COT, "The answer is $\\boxed{6.28}$.", [-0.5] * len(text.completion_ids))
        tokens = parts["reasoning"]["offsets"]
        # the reasoning's tokens cover it exactly, in order (tokens that split one multi-byte
        # character both cover that character)
        covered = {position for s, e in tokens for position in range(s, e)}
        assert covered == set(range(len(COT))) and tokens == sorted(tokens)
        by_tokenizer[name] = (split_sentences(COT), len(tokens))
    assert by_tokenizer["smollm2"][0] == by_tokenizer["qwen3"][0]
    assert by_tokenizer["smollm2"][1] != by_tokenizer["qwen3"][1]  # genuinely different tokenizations


def _offsets(text: str, pieces: list[str]) -> list[list[int]]:
    offsets, cursor = [], 0
    for piece in pieces:
        start = text.index(piece, cursor)
        offsets.append([start, start + len(piece)])
        cursor = start + len(piece)
    return offsets


def test_hand_built_classes():
    reasoning = "First step. Second step. Third step."
    record = {
        "id": "r",
        "reasoning": reasoning,
        "content": "Done.",
        "teacher_logprobs": {
            "reasoning": {
                "offsets": _offsets(reasoning, ["First", " step.", " Second", " step.", " Third", " step."]),
                "logprobs": [math.log(0.9), math.log(0.9), math.log(0.5), math.log(0.5), math.log(0.2), math.log(0.2)],
            },
            "content": {"offsets": [[0, 5]], "logprobs": [math.log(0.8)]},
        },
    }
    student = {
        "reasoning": {
            "offsets": _offsets(reasoning, ["First step", ".", " Second step.", " Third", " step", "."]),
            "logprobs": [math.log(0.3), math.log(0.3), math.log(0.45), math.log(0.6), math.log(0.6), math.log(0.6)],
        },
        "content": {"offsets": [[0, 4], [4, 5]], "logprobs": [math.log(0.75), math.log(0.75)]},
    }
    sentences, error = score_sentences(record, student, beta=0.1, space="prob")
    assert error is None
    assert [(s.part, reasoning[s.start : s.end] if s.part == "reasoning" else "Done.", s.type) for s in sentences] == [
        ("reasoning", "First step.", "teacher"),  # 0.9 vs 0.3
        ("reasoning", "Second step.", "shared"),  # 0.5 vs 0.45
        ("reasoning", "Third step.", "student"),  # 0.2 vs 0.6
        ("content", "Done.", "shared"),  # 0.8 vs 0.75
    ]
    # boundary values of beta, and the log-ratio space
    assert classify(math.log(0.6), math.log(0.5), beta=0.1) == "shared"  # 0.1 is not > 0.1
    assert classify(math.log(0.61), math.log(0.5), beta=0.1) == "teacher"
    assert classify(math.log(0.5), math.log(0.61), beta=0.1) == "student"
    assert classify(math.log(0.02), math.log(0.01), beta=0.1, space="logratio") == "teacher"  # log 2 > 0.1
    assert classify(math.log(0.02), math.log(0.01), beta=0.1, space="prob") == "shared"


def test_packed_scoring_equals_one_sample_at_a_time(tiny_qwen3):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_qwen3), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 37, 12, 64, 3, 90, 21, 48, 7, 30]
    items = [
        ScoringItem(
            key=i, input_ids=torch.randint(10, 5000, (n,), generator=generator).tolist(), first_scored=max(1, n // 3)
        )
        for i, n in enumerate(lengths)
    ]
    batches = plan_batches(items, tokens_per_batch=200)
    assert any(len(row) > 1 for rows in batches for row in rows), "the plan must actually pack"
    packed = ModelScorer(model, tokens_per_batch=200, pack=True).score(items)
    single = ModelScorer(model, tokens_per_batch=1, pack=False).score(items)
    worst = max(abs(a - b) for key in single for a, b in zip(packed[key], single[key]))
    assert all(len(packed[item.key]) == item.length - item.first_scored for item in items)
    assert worst < 1e-4
    # a packed sample's scores do not move when its neighbours change
    neighbours = [
        ScoringItem(key=100 + i, input_ids=torch.randint(10, 5000, (20,), generator=generator).tolist(), first_scored=1)
        for i in range(4)
    ]
    again = ModelScorer(model, tokens_per_batch=200, pack=True).score([items[0], items[4], *neighbours])
    assert max(abs(a - b) for a, b in zip(again[0], single[0])) < 1e-4


def _scorable(record_id: str) -> dict:
    """A response with raw teacher log-probs that `dasd score` can score (two sentences, one answer token)."""
    return {
        "id": record_id,
        "messages": [{"role": "user", "content": "Q?"}],
        "reasoning": "Fine. Really.",
        "content": "A.",
        "logprob_mode": "raw",
        "teacher_logprobs": {
            "reasoning": {"offsets": [[0, 5], [5, 13]], "logprobs": [-0.1, -0.2]},
            "content": {"offsets": [[0, 2]], "logprobs": [-0.3]},
        },
    }


def test_bad_records_get_reasons_and_the_rest_is_scored(tmp_path, tiny_llama_smollm2):
    good = _scorable("good")
    records = [
        good,
        {**good, "id": "no_logprobs", "teacher_logprobs": None},
        {
            **good,
            "id": "bad_offsets",
            "teacher_logprobs": {
                "reasoning": {"offsets": [[0, 50]], "logprobs": [-0.1]},
                "content": good["teacher_logprobs"]["content"],
            },
        },
        {**good, "id": "empty_reasoning", "reasoning": "  "},
        {
            **good,
            "id": "hole",
            "teacher_logprobs": {
                "reasoning": {"offsets": [[0, 5]], "logprobs": [-0.1]},
                "content": good["teacher_logprobs"]["content"],
            },
        },
    ]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    output = tmp_path / "scored.jsonl"
    summary = score.run(
        load_config(
            score.ScoreConfig, None, [f"input={path}", f"output={output}", f"student.model={tiny_llama_smollm2}"]
        )
    )
    assert [r["id"] for r in read_jsonl(output)] == ["good"]
    errors = {e["id"]: e["error"] for e in read_jsonl(tmp_path / "scored.errors.jsonl")}
    assert errors["no_logprobs"] == "missing_teacher_logprobs"
    assert errors["bad_offsets"].startswith("teacher_offsets_mismatch: reasoning token 0 span [0, 50]")
    assert errors["empty_reasoning"].startswith("empty_reasoning: the teacher wrote no reasoning")
    assert errors["hole"].startswith("sentence_without_teacher_tokens: reasoning[6:13]")
    assert summary["records_scored"] == 1 and summary["records_failed"] == 4


def test_too_long_is_skipped_with_a_reason_and_resume_skips_done(tmp_path, tiny_llama_smollm2):
    long_reasoning = "Step. " * 400
    records = [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": "Q?"}],
            "reasoning": text.strip(),
            "content": "A.",
            "logprob_mode": "raw",
            "teacher_logprobs": {
                "reasoning": {"offsets": [[0, len(text.strip())]], "logprobs": [-0.5]},
                "content": {"offsets": [[0, 2]], "logprobs": [-0.1]},
            },
        }
        for i, text in enumerate(["Short one.", long_reasoning, "Another short."])
    ]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    args = [f"input={path}", f"output={tmp_path / 's.jsonl'}", f"student.model={tiny_llama_smollm2}", "max_length=200"]
    first = score.run(load_config(score.ScoreConfig, None, args))
    assert first["records_scored"] == 2 and first["failure_reasons"] == {"too_long": 1}
    assert "too_long" in read_jsonl(tmp_path / "s.errors.jsonl")[0]["error"]
    second = score.run(load_config(score.ScoreConfig, None, args))
    assert second["records_already_done"] == 2 and second["records_scored"] == 0


def test_released_data_with_logprobs_is_joined_and_decoded(tmp_path, tiny_llama_smollm2):
    """Rows shaped like the release: harmony-rendered gpt-oss token ids + the think-tagged text."""
    from openai_harmony import Conversation, Message, RenderConversationConfig, Role

    from dasd.text.harmony import encoding

    harmony = encoding()
    texts, logprob_rows = [], []
    for index, (analysis, final) in enumerate(
        [("User asks 2+3. Sum is 5.", "The answer is **5**."), ("Compute 7*6. It is 42. Check: 6*7=42.", "42")]
    ):
        conversation = Conversation.from_messages(
            [
                Message.from_role_and_content(Role.USER, f"Question {index}"),
                Message.from_role_and_content(Role.ASSISTANT, analysis).with_channel("analysis"),
                Message.from_role_and_content(Role.ASSISTANT, final).with_channel("final"),
            ]
        )
        full = harmony.render_conversation(conversation, config=RenderConversationConfig(auto_drop_analysis=False))
        prompt = harmony.render_conversation_for_completion(
            Conversation.from_messages(conversation.messages[:1]), Role.ASSISTANT
        )
        completion = list(full[len(prompt) :])
        logprob_rows.append(
            {
                "sample_uuid": f"u{index}",
                "token_ids": completion,
                "logprobs": [-0.01 * (k + 1) for k in range(len(completion))],
            }
        )
        texts.append(
            {
                "uuid": f"u{index}",
                "input": f"Question {index}",
                "output": f"<think>\n{analysis}\n</think>\n\n{final}",
                "domain": "math",
                "meta": {},
            }
        )
    texts.append(
        {"uuid": "u-missing", "input": "Q", "output": "<think>\nx.\n</think>\n\ny", "domain": "math", "meta": {}}
    )
    text_path = write_jsonl(tmp_path / "release.jsonl", texts)
    logprob_path = write_jsonl(tmp_path / "release-logprob.jsonl", logprob_rows)
    output = tmp_path / "scored.jsonl"
    summary = score.run(
        load_config(
            score.ScoreConfig,
            None,
            [
                f"input={text_path}",
                f"released_logprobs={logprob_path}",
                f"output={output}",
                f"student.model={tiny_llama_smollm2}",
            ],
        )
    )
    records = {r["id"]: r for r in read_jsonl(output)}
    assert set(records) == {"u0", "u1"} and summary["failure_reasons"] == {"no_logprobs": 1}
    first = records["u0"]
    assert first["reasoning"] == "User asks 2+3. Sum is 5." and first["content"] == "The answer is **5**."
    for part in ("reasoning", "content"):
        entry = first["teacher_logprobs"][part]
        assert "".join(first[part][s:e] for s, e in entry["offsets"]) == first[part]
    # the log-probs kept are the ones of the tokens inside the parts, in order
    assert first["teacher_logprobs"]["reasoning"]["logprobs"] == sorted(
        first["teacher_logprobs"]["reasoning"]["logprobs"], reverse=True
    )
    assert [s["part"] for s in first["sentences"]].count("reasoning") == 2


def _scorable_records(count: int) -> list[dict]:
    """Responses with reasoning, an answer and raw teacher log-probs over two reasoning tokens."""
    return [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": f"Q{i}?"}],
            "reasoning": f"Step {i:02d}. Then more.",
            "content": "A.",
            "logprob_mode": "raw",
            "teacher_logprobs": {
                "reasoning": {"offsets": [[0, 8], [8, 19]], "logprobs": [-0.5, -0.25]},
                "content": {"offsets": [[0, 2]], "logprobs": [-0.1]},
            },
        }
        for i in range(count)
    ]


def test_shards_under_a_launcher_cover_every_record_once(tmp_path, tiny_llama_smollm2, monkeypatch):
    """RANK/WORLD_SIZE (set by accelerate launch / torchrun) split the records into shard files."""
    path = write_jsonl(tmp_path / "in.jsonl", _scorable_records(12))
    monkeypatch.setenv("WORLD_SIZE", "3")
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        score.run(
            load_config(
                score.ScoreConfig,
                None,
                [f"input={path}", f"output={tmp_path / 'scored.jsonl'}", f"student.model={tiny_llama_smollm2}"],
            )
        )
    shards = sorted(tmp_path.glob("scored.shard-*-of-3.jsonl"))
    assert len(shards) == 3
    from dasd.data.io import read_records

    ids = [record["id"] for _, record in read_records(str(tmp_path / "scored.shard-*-of-3.jsonl"))]
    assert sorted(ids) == sorted(f"r{i}" for i in range(12))


def test_log_probs_not_verified_raw_are_refused_unless_allowed(tmp_path, tiny_llama_smollm2):
    """Sentence probabilities need the teacher's raw log-probs: records from a server whose log-probs were
    not probed (logprob_mode=unverified, or no mode at all) are not scored unless the user says so."""
    good = _scorable("raw")
    unlabelled = {key: value for key, value in good.items() if key != "logprob_mode"}
    records = [good, {**good, "id": "unverified", "logprob_mode": "unverified"}, {**unlabelled, "id": "unlabelled"}]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    base = [f"input={path}", f"student.model={tiny_llama_smollm2}"]
    refused = score.run(load_config(score.ScoreConfig, None, [*base, f"output={tmp_path / 'a.jsonl'}"]))
    assert [r["id"] for r in read_jsonl(tmp_path / "a.jsonl")] == ["raw"]
    assert refused["failure_reasons"] == {"logprobs_not_raw": 2} and refused["unverified_logprobs_scored"] == 0
    allowed = score.run(
        load_config(
            score.ScoreConfig, None, [*base, f"output={tmp_path / 'b.jsonl'}", "allow_unverified_logprobs=true"]
        )
    )
    assert allowed["records_scored"] == 3 and allowed["unverified_logprobs_scored"] == 2


def test_parquet_outputs_hold_exactly_what_jsonl_holds_and_shards_merge(tmp_path, tiny_llama_smollm2):
    """`output=*.parquet` (a folder of parts, log-probs as list columns): two sample shards and the merging
    run give the same records as one JSONL run, every id once; score reads that folder and writes Parquet
    equal to its JSONL output."""
    from dasd.data.io import read_records

    questions = write_jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "prompt": f"Say {i}."} for i in range(6)])

    def sampled(output, *extra):
        settings = ["max_new_tokens=6", "schedule=[{temperature: 1.0, n: 2}]", f"backend.model={tiny_llama_smollm2}"]
        return sample.run(
            load_config(sample.SampleConfig, None, [f"input={questions}", f"output={output}", *settings, *extra])
        )

    sampled(tmp_path / "responses.jsonl")
    for index in (0, 1):
        sampled(tmp_path / "responses.parquet", f"shard={index}/2")
    assert (tmp_path / "responses.shard-1-of-2.parquet" / "part-000000.parquet").exists()
    assert sampled(tmp_path / "responses.parquet")["responses_written"] == 0  # merges, generates nothing
    as_jsonl = sorted((record for _, record in read_records(tmp_path / "responses.jsonl")), key=lambda r: r["id"])
    as_parquet = sorted((record for _, record in read_records(tmp_path / "responses.parquet")), key=lambda r: r["id"])
    assert len(as_parquet) == 12 and as_parquet == as_jsonl
    assert not list(tmp_path.glob("responses.shard-*.parquet"))

    # score: records with reasoning and teacher log-probs, given as JSONL and as Parquet
    from dasd.data.io import ParquetRecordWriter

    records = _scorable_records(5)
    write_jsonl(tmp_path / "in.jsonl", records)
    with ParquetRecordWriter(tmp_path / "in.parquet", rows_per_part=2) as writer:  # three parts
        for record in records:
            writer.write(record)
    scored = {}
    for kind in ("jsonl", "parquet"):
        settings = [f"input={tmp_path / f'in.{kind}'}", f"output={tmp_path / f'scored.{kind}'}"]
        score.run(load_config(score.ScoreConfig, None, [*settings, f"student.model={tiny_llama_smollm2}"]))
        scored[kind] = sorted((r for _, r in read_records(tmp_path / f"scored.{kind}")), key=lambda r: r["id"])
    # Parquet keeps log-probs as float32 (what servers and torch compute them in: exact for real samples, as the
    # sampled records above show); these hand-written ones (-0.1) are not float32 values, so compare them as such
    import numpy as np

    def as_float32(record):
        for part in record["teacher_logprobs"].values():
            part["logprobs"] = [float(np.float32(value)) for value in part["logprobs"]]
        return record

    assert len(scored["parquet"]) == 5
    assert [as_float32(r) for r in scored["jsonl"]] == [
        {**r, "sentences": s["sentences"]} for r, s in zip(scored["parquet"], scored["jsonl"])
    ]
    assert all(
        abs(a["teacher_logprob"] - b["teacher_logprob"]) < 1e-7
        for r, s in zip(scored["parquet"], scored["jsonl"])
        for a, b in zip(r["sentences"], s["sentences"])
    )


def test_two_students_scorings_of_the_same_responses_match_sentence_for_sentence(
    tmp_path, taught_teacher, tiny_llama_smollm2
):
    """`dasd select compare_with=` (DAS transfer across students): the same responses scored by the teacher itself
    (every sentence shared) and by a random-init student with another tokenizer; every sentence of one scoring is
    found in the other (the spans come from the text, not the tokenizer), and the classes disagree where they must."""
    from dasd.stages import select

    records, _ = _sample_then_score(
        tmp_path,
        taught_teacher,
        sample_overrides=["schedule=[{temperature: 0.6, n: 1}, {temperature: 1.0, n: 1}]", "top_k=1"],
        score_overrides=["system_prompt=null"],  # as in the test above: the teacher as student finds all shared
    )
    score.run(
        load_config(
            score.ScoreConfig,
            None,
            [
                f"input={tmp_path / 'responses.jsonl'}",
                f"output={tmp_path / 'scored_by_other.jsonl'}",
                f"student.model={tiny_llama_smollm2}",
            ],
        )
    )
    summary = select.run(
        load_config(
            select.SelectConfig,
            None,
            [
                f"input={tmp_path / 'scored.jsonl'}",
                f"output={tmp_path / 'selected.jsonl'}",
                f"compare_with={tmp_path / 'scored_by_other.jsonl'}",
                "per_temperature=false",  # one of each question's two responses
            ],
        )
    )
    overlap = summary["overlap"]
    total = sum(len(record["sentences"]) for record in records)
    assert overlap["candidates_in_both"] == len(records) == 16
    assert overlap["sentences"]["compared"] == total > 16
    confusion = overlap["sentences"]["confusion"]
    assert sum(confusion["shared"].values()) == total  # the teacher scoring itself: all shared
    assert confusion["shared"]["teacher"] > 0  # the random student finds the teacher's sentences unlikely
    assert overlap["selected_here"] == overlap["selected_there"] == 8 and 0 <= overlap["jaccard"] <= 1


def test_boosted_sentences_found_before_training_leave_their_candidates_out(
    tmp_path, taught_teacher, tiny_llama_smollm2
):
    """`dasd select boosted_scores=… max_boosted_share=…` (open question 4): the teacher and the original student
    agree on every sentence (both the taught teacher); where the "distilled" scoring comes from a random-init model,
    that model moved away from both — boosted sentences — and those candidates are left out; where it comes from the
    teacher itself, nothing moved and they stay."""
    from dasd.stages import select

    records, _ = _sample_then_score(
        tmp_path,
        taught_teacher,
        sample_overrides=["schedule=[{temperature: 0.6, n: 1}, {temperature: 1.0, n: 1}]", "top_k=1"],
        score_overrides=["system_prompt=null"],
    )
    score.run(
        load_config(
            score.ScoreConfig,
            None,
            [
                f"input={tmp_path / 'responses.jsonl'}",
                f"output={tmp_path / 'by_random.jsonl'}",
                f"student.model={tiny_llama_smollm2}",
                "system_prompt=null",
            ],
        )
    )
    moved = {record["id"]: record for record in read_jsonl(tmp_path / "by_random.jsonl")}
    distilled = [moved[r["id"]] if r["question_id"].startswith("q2") else r for r in records]
    write_jsonl(tmp_path / "by_distilled.jsonl", distilled)
    expected_out = {r["id"] for r in records if r["question_id"].startswith("q2")}

    def run_select(*extra):
        return select.run(
            load_config(
                select.SelectConfig,
                None,
                [
                    f"input={tmp_path / 'scored.jsonl'}",
                    f"output={tmp_path / 'selected.jsonl'}",
                    f"boosted_scores={tmp_path / 'by_distilled.jsonl'}",
                    *extra,
                ],
            )
        )

    described = run_select()  # no cap: the shares are reported, nothing is left out
    assert described["boosted"]["excluded"] == 0 and described["selected"] == 16
    capped = run_select("max_boosted_share=0.5")
    kept = {record["id"] for record in read_jsonl(tmp_path / "selected.jsonl")}
    assert capped["boosted"]["excluded"] == len(expected_out) == 4
    assert kept == {r["id"] for r in records} - expected_out
    assert capped["boosted"]["mean_share"]["kept"] == 0.0 and capped["boosted"]["unscored"] == 0
    emptied = {r["question_id"] for r in records if r["question_id"].startswith("q2")}
    assert (
        capped["boosted"]["questions_emptied"] == len(emptied) >= 1 and described["boosted"]["questions_emptied"] == 0
    )
    # the dataset card says the filter made the data
    from dasd.reporting.cards import stage_facts

    facts = "\n".join(stage_facts({"stage": "select", "config": {"strategy": "count", "k": 1}, "summary": capped}))
    assert "- boosted sentences: mean share kept 0.0, not kept " in facts and "; excluded above 0.5: 4 (0 " in facts
    assert f"  - questions left without a candidate: {len(emptied)}" in facts


def test_unfinished_responses_pass_through_unscored_and_filter_keeps_the_same_records(tmp_path, tiny_llama_smollm2):
    """score skip_unfinished (what `dasd run` sets): a truncated response or a tool call is written unscored, and
    `dasd filter` then drops it by its finish reason before reading anything scoring writes — the kept file is the
    same records as when everything is scored, and the rejected one gives every record the same reason."""
    from dasd.data.io import read_records
    from dasd.stages import filter as filter_stage

    records = [{**record, "question_id": record["id"], "finish_reason": "stop"} for record in _scorable_records(6)]
    records[1]["finish_reason"], records[4]["finish_reason"] = "length", "tool_call"
    source = write_jsonl(tmp_path / "in.jsonl", records)
    results = {}
    for skip in ("false", "true"):
        scored = tmp_path / skip / "scored.jsonl"
        summary = score.run(
            load_config(
                score.ScoreConfig,
                None,
                [
                    f"input={source}",
                    f"output={scored}",
                    f"student.model={tiny_llama_smollm2}",
                    f"skip_unfinished={skip}",
                ],
            )
        )
        filtered = tmp_path / skip / "filtered.jsonl"
        filter_stage.run(
            load_config(
                filter_stage.FilterConfig,
                None,
                [f"input={scored}", f"output={filtered}", "length.enabled=false", "repetition.enabled=false"],
            )
        )
        rejected = {
            r["id"]: r["filter"]["reason"] for _, r in read_records(tmp_path / skip / "filtered.rejected.jsonl")
        }
        results[skip] = (summary, [r for _, r in read_records(filtered)], rejected, read_jsonl(scored))
    assert results["true"][0]["unscored_unfinished"] == 2 and results["true"][0]["records_scored"] == 4
    assert results["false"][0]["records_scored"] == 6
    assert {r["id"]: r.get("unscored") for r in results["true"][3] if r.get("unscored")} == {
        "r1": "finish_length",
        "r4": "finish_tool_call",
    }
    assert results["true"][1] == results["false"][1] and len(results["true"][1]) == 4  # the kept records
    assert results["true"][2] == results["false"][2] == {"r1": "finish_length", "r4": "tool_call"}


def _answer_only(record_id: str, reasoning_format: str | None = "none") -> dict:
    """A response of a teacher that writes no think block: its chain of thought is its answer (two sentences)."""
    record = {
        "id": record_id,
        "messages": [{"role": "user", "content": "Q?"}],
        "reasoning": "",
        "content": "Fine. Really.",
        "logprob_mode": "raw",
        "teacher_logprobs": {
            "reasoning": {"offsets": [], "logprobs": []},
            "content": {"offsets": [[0, 5], [5, 13]], "logprobs": [-0.1, -0.2]},
        },
    }
    if reasoning_format is not None:
        record["reasoning_format"] = reasoning_format
    return record


def test_a_none_format_response_is_scored_on_its_answer_and_a_think_one_without_reasoning_is_not(
    tmp_path, tiny_llama_smollm2, capsys
):
    records = [
        _answer_only("none"),
        _answer_only("think", "think"),
        _answer_only("unlabelled", None),  # older records carry no format: think
        {**_answer_only("empty"), "content": " "},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    output = tmp_path / "scored.jsonl"
    summary = score.run(
        load_config(
            score.ScoreConfig, None, [f"input={path}", f"output={output}", f"student.model={tiny_llama_smollm2}"]
        )
    )
    [scored] = read_jsonl(output)
    assert scored["id"] == "none" and scored["das"]["n"] == 2
    assert [(s["part"], s["start"], s["end"]) for s in scored["sentences"]] == [("content", 0, 5), ("content", 6, 13)]
    assert summary["answer_only_scored"] == 1
    assert summary["failure_reasons"] == {"empty_reasoning": 2, "empty_response": 1}
    errors = {e["id"]: e["error"] for e in read_jsonl(tmp_path / "scored.errors.jsonl")}
    assert errors["think"] == errors["unlabelled"] == sentence_scores.EMPTY_REASONING
    assert "reasoning_format=none" in errors["think"]
    out, err = capsys.readouterr()
    assert "answer only             1 (reasoning_format none: the answer's sentences scored)" in out
    assert "warning: 2 of 4 records have no reasoning: the teacher wrote no think block" in err
    # the progress bar counts every record, failed ones too, against the input's size (not `0rec`)
    assert "4/4" in err


def test_the_progress_bar_total_is_the_inputs_size_where_it_is_known(tmp_path, monkeypatch):
    from dasd.data.records import record_count

    path = write_jsonl(tmp_path / "in.jsonl", [_answer_only(f"r{i}") for i in range(5)])
    assert record_count(str(path)) == 5
    config = load_config(score.ScoreConfig, None, [f"input={path}", "output=x.jsonl", "student.model=s"])
    assert score._input_size(config, None) == 5
    assert score._input_size(config.model_copy(update={"limit": 3}), None) == 3
    assert score._input_size(config, (0, 2)) is None  # a shard's share is not known before reading
    assert record_count(str(tmp_path / "in*.jsonl")) is None
    # a JSONL file over the scan's limit gets no total rather than a second full read of it
    monkeypatch.setattr("dasd.data.records.COUNTED_JSONL_BYTES", path.stat().st_size - 1)
    assert record_count(str(path)) is None
