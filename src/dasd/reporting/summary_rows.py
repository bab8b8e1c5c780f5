"""Each stage summary as labelled rows — one function per summary type, and the one place a summary field is put
into words: the stage prints the rows (`dasd.progress.format_summary`), the cards list them
(`dasd.reporting.cards`, without the rows about how the run went: `RUN_ROWS`) and `dasd report` shows them.

    rows = summary_rows(summary)                         # [("records", 12), ("  stage low_temp", 6), …]
    print(format_summary(f"dasd build-sft -> {output}", build_sft_rows(summary, exports=config.exports)))

A row is `(label, value)`; a label indented by two spaces details the row above it. The rows are read from the
summary alone (`dasd.data.summaries`), with `.get`: a summary written by an older dasd may lack a field, and its
row then says None, as the cards always did. A fact the printout shows that the summary does not keep (build-sft's
`exports`, filter's `workers`) is a keyword argument, left out where it is not known. A new summary field is
written by its stage, typed in `dasd.data.summaries` and given its row here.

`dasd train` and `dasd eval` summaries are tables (a row per training stage, a row per benchmark): `train_table` and
`dasd.reporting.metrics.summary_markdown` print them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..data.records import PROVENANCE_CLASSES, SENTENCE_TYPES
from ..data.summaries import (
    BuildSFTSummary,
    FilterSummary,
    MixSummary,
    ProvenanceSummary,
    SampleSummary,
    ScoreSummary,
    SelectSummary,
    TrainStageMetrics,
)
from ..sampling.response_checks import MISSING_PART_LABELS, RESPONSE_PARTS

Row = tuple[str, Any]

# Rows about how a run went (its speed, what an earlier run had done, where a cache was), not about what it made: the
# printout and the report show them, the cards (what is published with the data) leave them out.
RUN_ROWS = frozenset(
    {
        "already done (skipped)",
        "seconds",
        "responses/s",
        "tokens/s",
        "records/s",
        "student tokens/s",
        "workers",
        "copied from the sample cache",
        "retries",
    }
)


def sample_rows(summary: SampleSummary) -> list[Row]:
    """`dasd sample`'s summary: questions (and those given an id or a domain), responses expected / skipped / written
    with their finish reasons and missing parts, failures, tokens, speed, the cache, the log-prob probe, retries; and,
    with suggest_temperatures, the suggested pair.

    >>> sample_rows({"questions": 2, "responses_written": 4, "finish_reasons": {"stop": 3, "length": 1},
    ...              "missing_parts": {"checked": 4, "no_reasoning": 1}, "reasoning_format": "think"})[3:7]
    [('written this run', 4), ('  finish=stop', 3), ('  finish=length', 1), ('  no reasoning', 1)]
    """
    defaulted = summary.get("questions_defaulted") or {}
    missing = summary.get("missing_parts") or {}
    cache = summary.get("cache") or {}
    backend = summary.get("backend") or {}
    probe = summary.get("logprob_probe")
    rows: list[Row] = [
        ("questions", summary.get("questions")),
        *(
            (f"  input questions without {article} {field}", f"{defaulted[field]:,} (given {given})")
            for field, article, given in (("id", "an", "the hash of their prompt"), ("domain", "a", "domain other"))
            if defaulted.get(field)
        ),
        ("responses expected", summary.get("responses_expected")),
        ("already done (skipped)", summary.get("responses_already_done")),
        ("written this run", summary.get("responses_written")),
        *((f"  finish={reason}", count) for reason, count in (summary.get("finish_reasons") or {}).items()),
        *(
            (f"  {MISSING_PART_LABELS[part]}", missing[part])
            for part in RESPONSE_PARTS
            if missing.get(part) and not (part == "no_reasoning" and summary.get("reasoning_format") == "none")
        ),
        ("failed (see errors file)", summary.get("failed")),
        ("completion tokens", summary.get("completion_tokens")),
        ("seconds", summary.get("seconds")),
        ("responses/s", summary.get("responses_per_s")),
        ("tokens/s", summary.get("tokens_per_s")),
    ]
    if cache.get("reused"):
        rows.append(("copied from the sample cache", f"{cache['reused']} ({cache.get('folder')})"))
    if probe:
        rows.append(("log-prob probe", f"raw: mean |Δ| {probe['mean_abs_difference']} over {probe['tokens']} tokens"))
    if "retries" in backend:
        rows.append(("retries", backend["retries"]))
    suggestion = summary.get("temperature_suggestion")
    if suggestion:  # written after the printout, with suggest_temperatures: the cards and the report show it
        pair = f"low {suggestion['low']}, high {suggestion['high']}" if suggestion.get("low") is not None else "none"
        rows.append(("suggested temperatures", pair))
    return rows


def score_rows(summary: ScoreSummary) -> list[Row]:
    """`dasd score`'s summary: records scored (answer-only ones), skipped, failed (by reason), sentences by class with
    their shares, student tokens, padding and speed.

    >>> score_rows({"records_scored": 2, "records_failed": 0, "sentences": {"teacher": 1, "student": 3}})[3:6]
    [('teacher sentences', '1 (25.0%)'), ('student sentences', '3 (75.0%)'), ('shared sentences', '0 (0.0%)')]
    """
    sentences = summary.get("sentences") or {}
    total_sentences = sum(sentences.values()) or 1
    answer_only = summary.get("answer_only_scored")
    return [
        ("records scored", summary.get("records_scored")),
        *(
            (("  answer only", f"{answer_only:,} (reasoning_format none: the answer's sentences scored)"),)
            if answer_only
            else ()
        ),
        ("already done (skipped)", summary.get("records_already_done")),
        ("failed (see errors file)", summary.get("records_failed")),
        *(
            (("unfinished, passed unscored", summary["unscored_unfinished"]),)
            if "unscored_unfinished" in summary
            else ()
        ),
        *((f"  {reason}", count) for reason, count in sorted((summary.get("failure_reasons") or {}).items())),
        *(
            (f"{kind} sentences", f"{sentences.get(kind, 0):,} ({sentences.get(kind, 0) / total_sentences:.1%})")
            for kind in SENTENCE_TYPES
        ),
        ("student tokens scored", summary.get("student_tokens_scored")),
        ("padding fraction", summary.get("padding_fraction")),
        ("student tokens/s", summary.get("student_tokens_per_s")),
    ]


def filter_rows(summary: FilterSummary, *, workers: Any = None) -> list[Row]:
    """`dasd filter`'s summary: records, kept (answer-only ones), rejected by reason, skipped, speed; and the workers
    the run screened with, when given.

    >>> filter_rows({"records": 12, "kept": 9, "rejected": 3, "reasons": {"wrong_answer": 2, "duplicate": 1}})[:5]
    [('records', 12), ('kept', 9), ('rejected', 3), ('  wrong_answer', 2), ('  duplicate', 1)]
    """
    answer_only = summary.get("answer_only_kept")
    rows: list[Row] = [
        ("records", summary.get("records")),
        ("kept", summary.get("kept")),
        *((("  answer only", f"{answer_only:,} (reasoning_format none: no reasoning needed)"),) if answer_only else ()),
        ("rejected", summary.get("rejected")),
        *((f"  {reason}", count) for reason, count in (summary.get("reasons") or {}).items()),
        ("already done (skipped)", summary.get("already_done")),
        ("records/s", summary.get("records_per_s")),
    ]
    if workers is not None:
        rows.append(("workers", workers))
    return rows


def select_rows(summary: SelectSummary) -> list[Row]:
    """`dasd select`'s summary: questions, candidates, left out by the filter (and by draw), selected, the settings
    that shaped it (k per temperature, budgets, their order, the cap per question), the groups the filter emptied,
    each temperature's kept and dropped responses with their teacher-sentence histogram, the boosted-sentence shares
    and the overlap with another student's selection.

    >>> select_rows({"questions": 2, "candidates": 6, "excluded_by_filter": 0, "selected": 2,
    ...              "per_temperature": {"0.6": {"kept": {"count": 2, "mean_teacher_sentences": 3.5,
    ...                  "histogram": {"2-4": 1, "0-1": 0, "5-9": 1}}, "dropped": {"count": 0, "histogram": {}}}}})[4:]
    [('T=0.6 kept', '2 responses, mean teacher sentences 3.5  [0-1:0, 2-4:1, 5-9:1]'), ('T=0.6 dropped', '0 responses')]
    """
    rows: list[Row] = [
        ("questions", summary.get("questions")),
        ("candidates", summary.get("candidates")),
        ("excluded by filter", summary.get("excluded_by_filter")),
        ("selected", summary.get("selected")),
    ]
    if summary.get("draw_size") is not None:
        rows.insert(
            3,
            (
                f"draws of {summary['draw_size']}",
                f"{', '.join(map(str, summary.get('draws') or []))} (k per question × temperature × draw; "
                f"{summary.get('excluded_by_draw')} responses in other draws left out)",
            ),
        )
    for key, label in (
        ("k_per_temperature", "k per temperature"),
        ("budget_per_temperature", "budget per temperature"),  # a number, or one per domain
        ("budget_order", "budget order"),
        ("max_per_question", "max per question"),
    ):
        if summary.get(key) is not None:
            rows.append((label, summary[key]))
    groups = summary.get("groups")
    if groups is not None:
        rows.append(
            (
                "groups (question × temperature)",
                f"{groups['with_candidates']} with a candidate, {groups['without_candidates']} whose every response "
                f"the filter rejected (no record); k per group everywhere would be {groups['records_at_k']} records",
            )
        )
    for temperature, sides in (summary.get("per_temperature") or {}).items():
        label = "records without a temperature" if temperature == "None" else f"T={temperature}"  # e.g. released data
        for side in ("kept", "dropped"):
            info = sides[side]
            bars = ", ".join(
                f"{bin_}:{count}"
                for bin_, count in sorted(
                    info["histogram"].items(), key=lambda item: int(item[0].split("-")[0].rstrip("+"))
                )
            )
            if not info["count"]:  # e.g. nothing dropped: every question had no more than k candidates
                rows.append((f"{label} {side}", "0 responses"))
                continue
            rows.append(
                (
                    f"{label} {side}",
                    f"{info['count']} responses, mean teacher sentences {info['mean_teacher_sentences']}  [{bars}]",
                )
            )
    boosted = summary.get("boosted")
    if boosted is not None:
        mean = {
            side: "n/a (none scored there)" if share is None else share
            for side, share in (boosted.get("mean_share") or {}).items()
        }
        excluded = (
            f"excluded above {boosted['max_share']}: {boosted.get('excluded')}"
            if boosted.get("max_share") is not None
            else "none excluded (no max_boosted_share)"
        )
        rows.append(
            (
                "boosted sentences",
                f"mean share kept {mean.get('kept')}, not kept {mean.get('not_kept')}; {excluded} "
                f"({boosted.get('unscored')} unscored there)",
            )
        )
        rows.append(("  classed with", f"{boosted.get('scores')} (alpha {boosted.get('alpha')})"))
        if boosted.get("questions_emptied"):
            rows.append(("  questions left without a candidate", boosted["questions_emptied"]))
    overlap = summary.get("overlap")
    if overlap is not None:
        rows.append(("overlap with", overlap.get("compare_with")))
        per_temperature_jaccard = ", ".join(
            f"T={t} {j:.3f}" for t, j in (overlap.get("jaccard_per_temperature") or {}).items()
        )
        per_temperature_jaccard = f"; {per_temperature_jaccard}" if per_temperature_jaccard else ""
        rows.append(
            (
                "  selections' Jaccard",
                f"{overlap['jaccard']:.3f} ({overlap['selected_both']} kept by both of {overlap['selected_here']} "
                f"here, {overlap['selected_there']} there{per_temperature_jaccard})"
                if overlap.get("candidates_in_both")
                else "no candidates in common to compare",
            )
        )
        agreement = overlap.get("sentences") or {}
        rows.append(
            (
                "  same sentence class",
                f"{agreement['agreement']:.3f} of {agreement['compared']} sentences; by class here: "
                + ", ".join(f"{kind} {share:.3f}" for kind, share in agreement["same_class_share"].items())
                if agreement.get("compared")
                else "no sentence spans in common to compare",
            )
        )
    return rows


def build_sft_rows(summary: BuildSFTSummary, *, exports: list[str] | None = None) -> list[Row]:
    """`dasd build-sft`'s summary: records per training stage (answer-only ones), the exports asked for (when given),
    the per-record weights (scheme, softmax temperature, each stage's min / mean / max), the per-class sentence
    weights and character shares of each stage, and the chat-template check.

    >>> build_sft_rows({"records": 3, "per_stage": {"high_temp": 2, "low_temp": 1}, "weight_by": "teacher_sentences",
    ...                 "weights": {"high_temp": {"min": 0.5, "mean": 1.0, "max": 1.5}}}, exports=[])
    ... # doctest: +NORMALIZE_WHITESPACE
    [('records', 3), ('  stage high_temp', 2), ('  stage low_temp', 1), ('exports', 'none'),
     ('weights', 'teacher_sentences'), ('  weight high_temp', 'min 0.5, mean 1, max 1.5')]
    """
    answer_only = summary.get("answer_only")
    rows: list[Row] = [
        ("records", summary.get("records")),
        *((f"  stage {stage}", count) for stage, count in (summary.get("per_stage") or {}).items()),
        *(
            (("answer only", f"{answer_only:,} (reasoning_format none: the answer alone, no think block)"),)
            if answer_only
            else ()
        ),
    ]
    if exports is not None:
        rows.append(("exports", ", ".join(exports) or "none"))
    if summary.get("weight_by"):
        temperature = summary.get("weight_temperature")
        rows.append(
            (
                "weights",
                summary["weight_by"] + ("" if temperature is None else f" (softmax temperature {temperature:g})"),
            )
        )
        rows.extend(
            (f"  weight {stage}", "min {min:g}, mean {mean:g}, max {max:g}".format(**stats))
            for stage, stats in (summary.get("weights") or {}).items()
        )
    for stage, stats in (summary.get("sentence_weights") or {}).items():
        classes = (f"{kind} {stats['weight'][kind]:.3g} ({stats['char_share'][kind]:.0%})" for kind in SENTENCE_TYPES)
        rows.append((f"  sentence weights {stage}", ", ".join(classes)))
    check = summary.get("template_check")
    if check is not None:
        rows.append(("template check", ", ".join(f"{key}: {value}" for key, value in sorted(check.items()))))
    return rows


MIX_STEPS = ("rollouts", "truncated", "cut", "continued", "kept", "off_policy")


def mix_rows(summary: MixSummary) -> list[Row]:
    """`dasd mix`'s summary: rollouts, truncated, cut, continued, kept, off-policy records and the drops by reason
    (the off-policy-only control arm: its records alone); with on_policy, the finished rollouts kept and why others
    were dropped.

    >>> mix_rows({"kept": 0, "off_policy": 6})  # the off-policy-only control arm (equal_size_as)
    [('off_policy', 6)]
    """
    steps = MIX_STEPS if "rollouts" in summary else ("off_policy",)
    rows: list[Row] = [(name, summary.get(name)) for name in steps]
    rows += [(f"  dropped: {reason}", count) for reason, count in (summary.get("drop_reasons") or {}).items()]
    if "on_policy" in summary:
        rows.append(
            (
                "on_policy (finished within the cap, kept)",
                f"{summary['on_policy']} of {summary.get('on_policy_finished')}",
            )
        )
        rows += [
            (f"  on-policy dropped: {reason}", count)
            for reason, count in (summary.get("on_policy_drop_reasons") or {}).items()
        ]
    return rows


def provenance_rows(summary: ProvenanceSummary) -> list[Row]:
    """`dasd provenance`'s summary: the answers analysed (correct / incorrect, skipped by reason), the positions used,
    and each class's share of sentences in correct and in incorrect answers (95% intervals) with their difference.

    >>> provenance_rows({"responses": {"analysed": 4, "correct": 3, "incorrect": 1}, "positions_used": 2,
    ...     "min_samples": 1, "share": {"correct": {"teacher": 0.5}, "incorrect": {"teacher": 0.25}},
    ...     "delta": {"teacher": 0.25}})[2]
    ('teacher sentences', 'correct  50.0%  incorrect  25.0%  Δ +0.250')
    """
    responses = summary.get("responses") or {}
    share = summary.get("share") or {}
    intervals = summary.get("share_interval")
    delta = summary.get("delta") or {}
    rows: list[Row] = [
        (
            "responses analysed",
            f"{responses.get('analysed')} ({responses.get('correct')} correct, {responses.get('incorrect')} incorrect)",
        ),
        *((f"  skipped: {reason}", count) for reason, count in sorted((responses.get("skipped") or {}).items())),
        (
            "positions used",
            f"{summary.get('positions_used')} (≥ {summary.get('min_samples')} answers in each group)",
        ),
    ]
    for kind in PROVENANCE_CLASSES:
        difference = delta.get(kind)
        rows.append(
            (
                f"{kind} sentences",
                f"correct {_pct((share.get('correct') or {}).get(kind))}{_interval(intervals, 'correct', kind)}  "
                f"incorrect {_pct((share.get('incorrect') or {}).get(kind))}{_interval(intervals, 'incorrect', kind)}  "
                f"Δ {'-' if difference is None else f'{difference:+.3f}'}",
            )
        )
    return rows


def _interval(intervals: dict[str, dict[str, Any]] | None, group: str, kind: str) -> str:
    bounds = (intervals or {}).get(group, {}).get(kind)
    return "" if not bounds else f" [{100 * bounds[0]:.1f}, {100 * bounds[1]:.1f}]"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}%"


# The rows of each summary type, by the stage its summary names.
SUMMARY_ROWS: dict[str, Callable[[Any], list[Row]]] = {
    "sample": sample_rows,
    "score": score_rows,
    "filter": filter_rows,
    "select": select_rows,
    "build-sft": build_sft_rows,
    "mix": mix_rows,
    "provenance": provenance_rows,
}


def summary_rows(summary: dict[str, Any]) -> list[Row]:
    """The rows of any stage summary, by its `stage` (none for a summary without rows: train's and eval's are tables).

    >>> summary_rows({"stage": "mix", "off_policy": 6}), summary_rows({"stage": "train", "stages": []})
    ([('off_policy', 6)], [])
    """
    rows = SUMMARY_ROWS.get(str(summary.get("stage")))
    return rows(summary) if rows else []


def row_value(value: Any) -> str:
    """A row's value as `dasd.progress.format_summary` prints it: counts with thousands separators, two decimals.

    >>> row_value(30681), row_value(0.12345), row_value("low 0.6, high 1.0"), row_value(None)
    ('30,681', '0.12', 'low 0.6, high 1.0', 'None')
    """
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def train_table(stages: list[TrainStageMetrics]) -> list[str]:
    """`dasd train`'s summary as it prints it: a header and a line per training stage (samples, dropped, optimizer
    steps, peak learning rate, tokens seen, tokens/s, padding, first → final loss, seconds; a stage finished by an
    earlier run marked `(done before)`)."""
    header = (
        f"{'stage':14} {'samples':>8} {'dropped':>8} {'steps':>6} {'peak lr':>9} {'tokens seen':>12} "
        f"{'tok/s':>9} {'padding':>8} {'first→final loss':>18} {'seconds':>8}"
    )
    lines = [header]
    for item in stages:
        loss = f"{item['first_loss']:.3f}→{item['final_loss']:.3f}" if item.get("final_loss") is not None else "-"
        peak = f"{item['peak_learning_rate']:.2e}" if item.get("peak_learning_rate") is not None else "-"
        lines.append(
            f"{item['stage']:14} {item['samples']:8d} {sum(item['dropped'].values()):8d} "
            f"{item['optimizer_steps']:6d} {peak:>9} "
            f"{(item['tokens_seen'] or 0):12,.0f} {(item['tokens_per_s'] or 0):9,.0f} "
            f"{item['padding_fraction']:8.3f} "
            f"{loss:>18} {item['seconds']:8.1f}{'  (done before)' if item.get('skipped') else ''}"
        )
    return lines
