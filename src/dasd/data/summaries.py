"""The summaries the stages write — the other half of the data contract (`dasd.data.records` has the records).

Every stage writes one beside its output (`<name>.summary.json`; where: `dasd.naming.summary_file`) through
`dasd.data.io.write_summary`, and the cards (`dasd.reporting.cards`), `dasd run`'s table
(`dasd.pipeline.summary.headline`) and
`dasd report` read it back through `dasd.data.io.read_summary`: one TypedDict per stage, told apart by `stage`. As with
the records, plain JSON objects: a summary written by an older dasd may lack a field, so readers that publish
(cards, report) use `.get`. Each summary type is put into words once, as labelled rows
(`dasd.reporting.summary_rows`): what the stage prints, the cards list and the report shows — a new field is written
by its stage, typed here and given its row there.

    summary: SelectSummary = {"stage": "select", "output": "runs/x/das.jsonl", …}
    write_summary(output, summary)                       # runs/x/das.summary.json
    read_summary("runs/x/das.summary.json")["selected"]
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] from evaluated annotations only
# (as strings every key would count as required at runtime, and `__optional_keys__` would be empty).
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict  # typing's own lacks NotRequired before 3.11


class SampleSummary(TypedDict):
    stage: Literal["sample"]
    output: str
    questions: int
    responses_expected: int
    responses_already_done: int
    responses_written: int
    failed: int
    finish_reasons: dict[str, int]
    completion_tokens: int
    seconds: float
    responses_per_s: float
    tokens_per_s: float
    torn_bytes_repaired: int
    backend: dict[str, Any]  # its name and its stats (requests, retries, …)
    logprob_probe: dict[str, Any] | None  # the teacher-forced rescoring that verified raw log-probs; None: not probed
    temperature_suggestion: NotRequired[dict[str, Any]]  # suggest_temperatures: low, high, reasons
    cache: NotRequired[dict[str, Any]]  # the sampling cache: folder (or the reason it is off), reused, stored
    questions_defaulted: NotRequired[dict[str, int]]  # input questions given an id / a domain they lacked
    reasoning_format: NotRequired[str]  # think | harmony | none: also on each response record
    # this run's responses (`checked`) and how many lack a part: empty, no_reasoning, unclosed (reasoning, no answer),
    # unclosed_at_length, no_extractable_answer (dasd.sampling.response_checks.missing_parts)
    missing_parts: NotRequired[dict[str, int]]
    warnings: NotRequired[list[str]]  # one per part most of them lack, with the likely fix (printed too)


class ScoreSummary(TypedDict):
    stage: Literal["score"]
    output: str
    records_scored: int
    records_already_done: int
    records_failed: int
    failure_reasons: dict[str, int]
    sentences: dict[str, int]  # by SENTENCE_TYPES
    student_tokens_scored: int
    batching: str
    attention: str | None
    padding_fraction: float
    seconds: float
    student_tokens_per_s: float
    beta: float
    space: str
    unverified_logprobs_scored: int
    unscored_unfinished: NotRequired[int]  # skip_unfinished: passed through unscored (finish_reason != stop)
    # records scored on their answer's sentences: no reasoning, sampled with reasoning_format none (only when some)
    answer_only_scored: NotRequired[int]


class FilterSummary(TypedDict):
    stage: Literal["filter"]
    output: str
    records: int
    kept: int
    rejected: int
    already_done: int
    reasons: dict[str, int]  # rejections by reason, most first
    verify_timeouts: int
    student_tokens: dict[str, float] | None  # max, mean of the kept records (length filter on)
    seconds: float
    records_per_s: float
    # kept records without reasoning, sampled with reasoning_format none (their answer is the chain of thought)
    answer_only_kept: NotRequired[int]


class SelectedSide(TypedDict):
    count: int
    mean_teacher_sentences: float | None
    histogram: dict[str, int]  # teacher sentences per response, binned ("0-4", …, "40+")


class SelectSummary(TypedDict):
    stage: Literal["select"]
    output: str
    strategy: str  # count (DAS), random (RS), …
    k: int
    k_per_temperature: NotRequired[dict[str, int]]  # temperature -> k, where set
    budget_per_temperature: NotRequired[dict[str, int | dict[str, int]]]  # temperature -> cap (or cap per domain)
    questions: int
    candidates: int
    excluded_by_filter: int
    excluded_by_temperature: int
    selected: int
    per_temperature: dict[str, dict[str, SelectedSide]]  # temperature -> "kept" / "dropped"
    # only with compare_with: the two selections' Jaccard (overall, per temperature), the sentence-class agreement
    overlap: NotRequired[dict[str, Any]]
    # only with boosted_scores: scores, max_share, alpha, excluded, unscored, questions_emptied,
    # mean_share {kept, not_kept}
    boosted: NotRequired[dict[str, Any]]
    budget_order: NotRequired[str]  # score | rank, where budgets or max_per_question are set
    max_per_question: NotRequired[int]  # the cap on records per question, where set
    # only with rejected (the filter's rejected file): question × temperature groups with / without a candidate,
    # and the records k per group would give (the self-distillation arm's two counts)
    groups: NotRequired[dict[str, int]]
    # only with draw_size (fresh draws by sample index): the draw size, the draws selected from (listed, else every
    # draw present), the responses in other draws left out, and the temperatures whose last draw in use looks
    # partial (temperature -> draw)
    draw_size: NotRequired[int]
    draws: NotRequired[list[int]]
    excluded_by_draw: NotRequired[int]
    partial_draws: NotRequired[dict[str, int]]


class BuildSFTSummary(TypedDict):
    stage: Literal["build-sft"]
    output: str
    records: int
    per_stage: dict[str, int]  # records per training stage
    files: list[str]
    template_check: dict[str, int] | None
    # records whose assistant turn is the answer alone (no reasoning, sampled with reasoning_format none; when some)
    answer_only: NotRequired[int]
    # only with weight_by other than none (a default summary is as before):
    weight_by: NotRequired[str]  # teacher_seq_logprob | teacher_sentences
    weight_temperature: NotRequired[float]  # teacher_seq_logprob's softmax temperature
    weights: NotRequired[dict[str, dict[str, float]]]  # training stage -> min, mean, max of its records' weights
    # only with sentence_weights: training stage -> {"weight": class -> scaled weight, "char_share": class -> share}
    sentence_weights: NotRequired[dict[str, dict[str, dict[str, float]]]]


class TrainStageMetrics(TypedDict):
    """One training stage: its `final/dasd_stage.json` (`dasd.naming.STAGE_MARKER`), and an entry of the train
    summary's `stages`."""

    stage: str
    init: str  # the model it started from: the student, or an earlier stage's final/
    data: str
    samples: int
    dropped: dict[str, int]
    rows: int
    packing: bool
    pack_fill: float | None
    padding_fraction: float
    tokens_per_epoch: int
    trained_tokens_per_epoch: int
    loss_weights: NotRequired[str]  # none | per-sample (records' weight) | per-token (build-sft's sentence_weights)
    tokens_seen: int | None
    tokens_per_s: float | None
    optimizer_steps: int
    resumed_from: str | None
    final_loss: float | None
    first_loss: float | None
    train_loss: float
    seconds: float
    gradient_accumulation_steps: int
    batch_unit: str
    rows_per_step: int
    samples_per_step: float
    processes: int
    bf16: bool
    master_weights: str
    attention: str
    liger: bool
    report_to: list[str]
    run_name: str | None
    epochs: float
    learning_rate: float
    min_learning_rate: float
    mask_student_prefix: bool
    warmup_steps: NotRequired[int]  # the schedule's (stages trained before dasd recorded it lack these four)
    peak_learning_rate: NotRequired[float]  # the highest rate an optimizer step ran at
    changed_tensors: NotRequired[int | None]  # tensors whose saved values differ from the start (None: not compared)
    compared_tensors: NotRequired[int | None]
    skipped: NotRequired[bool]  # in the train summary: finished by an earlier `dasd train`


class TrainSummary(TypedDict):
    stage: Literal["train"]
    stages: list[TrainStageMetrics]


class MixSummary(TypedDict):
    stage: Literal["mix"]
    output: str
    kept: int
    off_policy: int
    # the rest is absent for the off-policy-only control arm (`equal_size_as`), which generates nothing
    rollouts: NotRequired[int]
    truncated: NotRequired[int]
    cut: NotRequired[int]
    continued: NotRequired[int]
    drop_reasons: NotRequired[dict[str, int]]
    cutoff_ratio: NotRequired[dict[str, float] | None]  # median, max
    # only with on_policy (on-policy rejection sampling): the student's finished rollouts kept whole, how many
    # finished within the cap, and why the others were dropped
    on_policy: NotRequired[int]
    on_policy_finished: NotRequired[int]
    on_policy_drop_reasons: NotRequired[dict[str, int]]


class BenchmarkMetrics(TypedDict):
    questions: int
    samples: int
    n: int
    complete: bool  # every question has its n graded samples
    avg_at_k: float
    standard_error: float
    pass_at_k: dict[str, float]
    truncation_rate: float
    mean_completion_tokens: float | None
    failed_samples: int
    code: NotRequired[dict[str, Any]]  # code benchmarks: outcomes, test_pass_fraction
    reasoning_gym: NotRequired[dict[str, float]]
    window: NotRequired[list[Any]]  # LiveCodeBench: the release dates covered


class EvalCacheSummary(TypedDict):
    folder: str | None  # the evaluation cache read and added to (`dasd.sampling.eval_cache`); None when not used
    reason: str | None  # why it was not used (cache=off, a backend that is not cached)
    reused: int  # samples this run took from the cache
    generated: int  # samples this run generated (on hf: in fixed batches, stored in the cache when used)
    benchmarks: dict[str, dict[str, int]]  # the same two counts per benchmark that needed samples


class EvalSummary(TypedDict):
    stage: Literal["eval"]
    model: str
    temperature: float
    top_p: float
    benchmarks: dict[str, BenchmarkMetrics]
    cache: EvalCacheSummary


class ProvenanceSummary(TypedDict):
    stage: Literal["provenance"]
    output: str
    outputs: str
    models: dict[str, str]  # role -> model
    alpha: float
    beta: float
    space: str
    min_samples: int
    responses: dict[str, Any]  # analysed, correct, incorrect, skipped (by reason), empty
    sentences: dict[str, dict[str, int]]  # correct / incorrect -> PROVENANCE_CLASSES
    share: dict[str, dict[str, float | None]]
    delta: dict[str, float | None]  # share in correct − share in incorrect, by class
    # 95% cluster-bootstrap intervals (questions resampled): correct / incorrect / difference -> class -> [low, high]
    share_interval: NotRequired[dict[str, dict[str, list[float] | None]] | None]
    bootstrap: NotRequired[dict[str, Any]]  # resamples, unit, level
    positions_used: int
    by_position: dict[str, Any]
    example: str | None
    figures: dict[str, str]


StageSummary = (
    SampleSummary
    | ScoreSummary
    | FilterSummary
    | SelectSummary
    | BuildSFTSummary
    | TrainSummary
    | MixSummary
    | EvalSummary
    | ProvenanceSummary
)
