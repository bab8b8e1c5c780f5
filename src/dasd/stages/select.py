"""`dasd select`: per question, keep the responses richest in teacher sentences (DAS) — or the RS baseline.

    dasd select input=runs/x/scored.jsonl output=runs/x/selected.jsonl strategy=count k=1
    dasd select input=runs/x/scored.jsonl output=runs/x/random.jsonl strategy=random k=1   # RS baseline

Candidates are a question's scored responses that passed filtering (a record with
`filter.keep == false` is never selected; without a filter every record is a candidate), grouped per
temperature by default, so that both SFT stages get data for each question. Strategies:

* `count` (default; the companion study found it best): most teacher sentences;
* `ratio`: largest share of teacher sentences;
* `longest`: most teacher tokens (characters when there are no log-probs);
* `random`: random sampling with the same budget (the RS baseline);
* `anti_das`: fewest teacher sentences — count's mirror, a control that bounds it from below (ties as count's);
* `oracle`: most sentences matching one of `oracle_patterns` (regular expressions over each sentence's text) — for a
  demo world whose skill is labelled in its text, an upper bound on what any rule can select; a real run has no
  such labels.

A response sampled with `reasoning_format: none` has no reasoning: `dasd score` counted its answer's sentences (its
chain of thought is its answer), and it is ranked by those like any other.

Ties are broken by a seeded random order, so the result is deterministic for a seed. Budgets then keep the
best of the selected records (a random subset for `random`): at most `max_per_question` per question over all
temperatures, then per temperature (`budget_per_temperature`: a number, or a number per domain — the report kept
105K responses at T=0.6 and 330K at T=1.0, with different domain mixes), then an optional global `budget`.
`k_per_temperature` sets k for each temperature.

    dasd select … 'k_per_temperature={0.6: 1, 1.0: 2}' \\
        'budget_per_temperature={0.6: 105, 1.0: {math: 200, code: 130}}'

`budget_order` says which records a budget keeps. `score` (default, as before it existed): the best scores across
questions — with `count`, raw teacher-sentence counts, which favours questions with long solutions (more sentences,
so more teacher sentences) and can leave other questions with nothing. `rank`: every question's best (rank 0 within
its question and temperature) before any question's second, ties by score — a budget then spreads over questions.

    dasd select … k=2 'budget_per_temperature={1.0: 300}' budget_order=rank max_per_question=3

Given the records the filter rejected (`rejected=`: `dasd filter`'s `<name>.rejected` file beside its output; or
records with `filter.keep: false` in the input), the summary counts the question × temperature groups left without a
candidate, and the records k per group would give if none were (`groups`): a selection from the student's own
rollouts is smaller than one from the teacher's where the student never answered correctly.

    dasd select input=runs/x/self/filtered.jsonl rejected=runs/x/self/filtered.rejected.jsonl strategy=random

Fresh draws (`draw_size` = m): a question × temperature's responses are split by their sample index (`sample_index`,
written by `dasd sample`) into draws of m — draw d holds sample indices [d·m, (d+1)·m) — and k (k_per_temperature)
is kept per question × temperature × draw, from the draws listed in `draws` (default: every draw present): each
draw selects as if only its m responses had been sampled (each sample's seed derives from its id, i.e. its index,
so draw 0 of 16 sampled is exactly what sampling 8 gives). Budgets rank within the draw; each kept record's `select`
entry says its `draw` (`dasd build-sft stage_by=draw` trains draw 0 in stage 1, draw 1 in stage 2). The recipe on
the first 8 of 16 sampled per temperature, and a two-stage control at one temperature where each stage is a fresh
best-of-8 (not the runner-up of the same 8, as `k=2` with `stage_by=rank` gives):

    dasd select … draw_size=8 'draws=[0]'
    dasd select … 'temperatures=[1.0]' draw_size=8 'draws=[0, 1]'   # then: dasd build-sft … stage_by=draw

The output (JSONL, or `*.parquet`) is rewritten whole (atomically) on each run; the summary holds the histogram of
teacher-sentence counts of kept vs dropped responses per temperature. Memory does not grow with the responses'
tokens: a first pass keeps a small key per candidate (`candidate_key`), a second copies the chosen records.

The parts: `dasd.selection.candidates` (the first pass: candidates, draws, re-classification), `dasd.selection.rules`
(k per group, ranks, budgets; the summary's histograms), `dasd.selection.joins` (boosted shares and compare_with,
joined by id); the printout is `dasd.reporting.summary_rows.select_rows`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ..config import ADDED, RecordOutput, StageConfig, dump_config
from ..data.io import dumps_record, write_records_atomic, write_summary
from ..data.summaries import SelectSummary
from ..errors import ConfigError, InputError
from ..naming import sidecar
from ..progress import format_summary
from ..reporting.summary_rows import select_rows
from ..scoring.sentence_scores import selection_overlap
from ..selection.candidates import Candidates, candidate_records, partial_draws, read_candidates
from ..selection.joins import mean_boosted_share, sentence_confusion, without_boosted
from ..selection.rules import choose, group_coverage, kept_and_dropped


class SelectConfig(StageConfig):
    input: str = Field(..., description="scored response records (a glob reads several shard files)")
    output: RecordOutput = Field(
        ..., description="selected records: JSONL, or *.parquet (a folder of parts); rewritten whole on each run"
    )
    strategy: Literal["count", "ratio", "longest", "random", "anti_das", "oracle"] = Field(
        "count",
        description="count: most teacher sentences (DAS); ratio: largest teacher share; longest: most "
        "teacher tokens; random: the RS baseline; anti_das: fewest teacher sentences (count's mirror, a control); "
        "oracle: most sentences matching oracle_patterns (demo worlds only: an upper bound)",
    )
    oracle_patterns: list[str] | None = Field(
        None,
        validate_default=True,
        description="with strategy=oracle (required there, non-empty): regular expressions (Python `re.search`) "
        "matched against each sentence's text (`sentences` of dasd score: their part of reasoning/content); a "
        "record's score is how many of its sentences match one. For demo worlds, whose skill is labelled in the "
        "text (e.g. the demo world's comparisons): an upper bound on what a selection rule can find — a real run "
        "has no such labels",
        json_schema_extra=ADDED,
    )
    k: int = Field(1, ge=1, description="responses kept per question (per temperature when per_temperature)")
    per_temperature: bool = Field(True, description="select separately at each temperature (stage 1 / stage 2 data)")
    k_per_temperature: dict[float, int] | None = Field(
        None,
        description="k for each temperature, e.g. {0.6: 1, 1.0: 2} (others keep `k`); needs per_temperature",
    )
    budget_per_temperature: dict[float, int | dict[str, int]] | None = Field(
        None,
        description="cap on the selected records of each temperature — a number, or a number per domain, e.g. "
        "{0.6: 105, 1.0: {math: 200, code: 130}} (the report's stages kept 105K at T=0.6 and 330K at T=1.0, "
        "different domain mixes); the best by the strategy are kept; temperatures not named are not capped",
    )
    budget: int | None = Field(None, ge=1, description="optional cap on the total number of selected records")
    rejected: str | None = Field(
        None,
        description="the records dasd filter rejected from the same responses (its <name>.rejected file): never "
        "selected, read to count the question × temperature groups left without a candidate (summary `groups`)",
        json_schema_extra=ADDED,
    )
    budget_order: Literal["score", "rank"] = Field(
        "score",
        description="which records the caps (max_per_question, budget_per_temperature, budget) keep: score = the "
        "best scores across questions (with count: raw teacher-sentence counts, favouring questions with long "
        "solutions); rank = every question's best (its rank within question and temperature) before any "
        "question's second, ties by score",
        json_schema_extra=ADDED,
    )
    max_per_question: int | None = Field(
        None,
        ge=1,
        description="cap on the records kept per question over all temperatures (applied before the budgets, in "
        "budget_order)",
        json_schema_extra=ADDED,
    )
    seed: int = Field(0, description="seed of the random strategy and of tie-breaking")
    temperatures: list[float] | None = Field(
        None, description="only candidates sampled at these temperatures (e.g. [0.6] for a T=0.6-only arm)"
    )
    beta: float | None = Field(
        None,
        description="re-classify every sentence with this threshold before counting (a DAS threshold sweep "
        "without re-scoring); default: the types `dasd score` wrote",
    )
    space: Literal["prob", "logratio"] | None = Field(
        None,
        description="space of `beta` when re-classifying: prob (p_T - p_S) or logratio (log p_T - log p_S; a "
        "p_T/p_S cut-off c is beta = ln c)",
    )
    compare_with: str | None = Field(
        None,
        description="the same candidates scored by another student (e.g. `dasd score … student.model=smollm2`): "
        "selected there with the same settings, the summary gives the overlap of the two selections (Jaccard of "
        "the kept ids, overall and per temperature) and how often the two scorings give a sentence the same class "
        "— does a DAS selection transfer across students?",
        json_schema_extra=ADDED,
    )
    boosted_scores: str | None = Field(
        None,
        description="the same candidates scored with a distilled model as the student (e.g. the stage-1 checkpoint: "
        "`dasd score … student.model=runs/x/train/das/low_temp/final`): each sentence is classed as `dasd "
        "provenance` does — teacher, student, shared or boosted (the teacher and the original student agree, the "
        "distilled model moved away from both) — and the summary gives the boosted share of kept and dropped "
        "candidates; with max_boosted_share, candidates above it are not selected",
        json_schema_extra=ADDED,
    )
    max_boosted_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="with boosted_scores: leave out candidates whose share of boosted sentences is above this "
        "(the report's open question 4: find boosted sentences before training, not after)",
        json_schema_extra=ADDED,
    )
    boosted_alpha: float = Field(
        0.1,
        ge=0,
        description="with boosted_scores: provenance's alpha (beta and space are this stage's)",
        json_schema_extra=ADDED,
    )
    draw_size: int | None = Field(
        None,
        ge=1,
        description="split each question × temperature's responses into fresh draws of this many by their sample "
        "index (`sample_index`, written by dasd sample): draw d holds indices [d·draw_size, (d+1)·draw_size), and k "
        "is kept per question × temperature × draw, as if each draw had been sampled alone; the select entry of a "
        "kept record gains `draw`. Default: no draws (every response of a question × temperature competes)",
        json_schema_extra=ADDED,
    )
    draws: list[int] | None = Field(
        None,
        description="with draw_size: only the responses of these draws are candidates, e.g. [0] (the first "
        "draw_size sampled: what a run sampling draw_size gives) or [0, 1] (two fresh draws, for build-sft's "
        "stage_by=draw); default: every draw present",
        json_schema_extra=ADDED,
    )
    histogram_bins: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 5, 10, 20, 50, 100, 200],
        description="lower edges of the teacher-sentence-count histogram bins in the summary",
    )

    @field_validator("oracle_patterns")
    @classmethod
    def _oracle_needs_patterns(cls, patterns: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if info.data.get("strategy") == "oracle" and not patterns:
            raise ValueError(
                "strategy=oracle needs a non-empty list of regular expressions matched against each sentence's text "
                "(the world's labels of skill)"
            )
        for pattern in patterns or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        return patterns

    @field_validator("draws")
    @classmethod
    def _draws_need_a_size(cls, draws: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if draws is None:
            return None
        if info.data.get("draw_size") is None:
            raise ValueError("draws needs draw_size (how many sample indices make one draw)")
        if not draws or any(draw < 0 for draw in draws) or len(set(draws)) != len(draws):
            raise ValueError(f"must be a non-empty list of distinct draw numbers >= 0, got {draws}")
        return sorted(draws)

    def compiled_patterns(self) -> tuple[re.Pattern[str], ...]:
        """`oracle_patterns` compiled, once per config (select asks for them for every candidate)."""
        return _compiled(tuple(self.oracle_patterns or ()))


@functools.lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


def write_selected(path: str, selected: list[dict[str, Any]], config: SelectConfig, output: Path) -> int:
    """Pass 2: the chosen records, whole, with their `select` entry, in `selected`'s order. The input is read once
    more keeping only the chosen ids (other lines are skipped before they are parsed); since its order is not the
    selection's, the chosen records go to a temporary JSONL beside the output first, then are copied from there in
    order by their byte offsets: memory is one record plus an offset per chosen id, disk one temporary copy of the
    selection."""
    entries = {key["id"]: key["select"] for key in selected}
    staging = output.with_name(output.name + ".unordered.jsonl")
    offsets: dict[str, tuple[int, int]] = {}
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(staging, "wb") as handle:
            for record in candidate_records(path, config, Candidates([]), keep_id=entries.__contains__):
                if record["id"] not in entries or record["id"] in offsets:
                    continue
                line = (dumps_record({**record, "select": entries[record["id"]]}) + "\n").encode("utf-8")
                offsets[record["id"]] = (handle.tell(), len(line))
                handle.write(line)
        missing = [key["id"] for key in selected if key["id"] not in offsets]
        if missing:
            raise InputError(path, None, None, f"changed while select read it: {len(missing)} chosen ids are gone")
        with open(staging, "rb") as handle:

            def lines_in_order():
                for key in selected:
                    start, length = offsets[key["id"]]
                    handle.seek(start)
                    yield handle.read(length)

            if str(output).endswith(".parquet"):
                return write_records_atomic(output, (json.loads(line) for line in lines_in_order()))
            partial = output.with_name(output.name + ".tmp")  # JSONL: the lines as they are, nothing parsed again
            with open(partial, "wb") as sink:
                sink.writelines(lines_in_order())
            os.replace(partial, output)
            return len(selected)
    finally:
        staging.unlink(missing_ok=True)


def run(config: SelectConfig) -> dict[str, Any]:
    # 1. The candidates (and, with compare_with, the same candidates as another student scored them).
    if config.k_per_temperature and not config.per_temperature:
        raise ConfigError("k_per_temperature needs per_temperature=true (k is counted per question and temperature)")
    if config.max_boosted_share is not None and config.boosted_scores is None:
        raise ConfigError("max_boosted_share needs boosted_scores (the candidates scored with the distilled model)")
    found = read_candidates(config.input, config)
    candidates, not_candidates, other_temperature = found.records, found.not_candidates, found.other_temperature
    other = read_candidates(config.compare_with, config).records if config.compare_with else None

    # 2. With boosted_scores: each candidate's share of boosted sentences; above max_boosted_share, not a candidate.
    shares: dict[str, float | None] = {}
    boosted = None
    if config.boosted_scores is not None:
        candidates, shares, boosted = without_boosted(candidates, config)

    # 3. Select; with compare_with, select there too and compare.
    selected = choose(candidates, config)
    overlap = None
    if other is not None:
        common = {record["id"] for record in candidates} & {record["id"] for record in other}
        confusion = sentence_confusion(common, config)
        overlap = {
            "compare_with": config.compare_with,
            **selection_overlap(candidates, selected, other, choose(other, config), confusion=confusion),
        }
    kept_ids = {record["id"] for record in selected}
    groups = (
        group_coverage(candidates, found.rejected_groups, config)
        if not_candidates or config.rejected is not None
        else None
    )

    output = Path(config.output)
    write_selected(config.input, selected, config, output)
    dump_config(config, sidecar(output, "config", ".yaml"))

    per_temperature = kept_and_dropped(candidates, kept_ids, config.histogram_bins)
    summary: SelectSummary = {
        "stage": "select",
        "output": str(output),
        "strategy": config.strategy,
        "k": config.k,
        "questions": len({record["question_id"] for record in candidates}),
        "candidates": len(candidates),
        "excluded_by_filter": not_candidates,
        "excluded_by_temperature": other_temperature,
        "selected": len(selected),
        "per_temperature": per_temperature,
    }
    if config.k_per_temperature:
        summary["k_per_temperature"] = {str(t): k for t, k in config.k_per_temperature.items()}
    if config.budget_per_temperature:
        summary["budget_per_temperature"] = {str(t): cap for t, cap in config.budget_per_temperature.items()}
    if config.budget_order != "score":
        summary["budget_order"] = config.budget_order
    if config.max_per_question is not None:
        summary["max_per_question"] = config.max_per_question
    partial = None
    if config.draw_size is not None:
        summary["draw_size"] = config.draw_size
        summary["draws"] = config.draws if config.draws is not None else sorted(found.draws)
        summary["excluded_by_draw"] = found.other_draw
        partial = partial_draws(found.last_index, config.draw_size, config.draws)
        if partial:
            summary["partial_draws"] = partial
    if groups is not None:
        summary["groups"] = groups
    if overlap is not None:
        summary["overlap"] = overlap
    if boosted is not None:
        boosted["mean_share"] = mean_boosted_share(shares, kept_ids)
        summary["boosted"] = boosted
    write_summary(output, summary)
    print(
        format_summary(f"dasd select ({config.strategy}, k={config.k}) -> {output}", select_rows(summary)),
        file=sys.stdout,
        flush=True,
    )
    for temperature, draw in (partial or {}).items():
        print(
            f"warning: at T={temperature} draw {draw} looks partial: the largest sample index is not the last of a "
            f"draw of {config.draw_size} (sampled n not a multiple of draw_size?); it selects among fewer candidates",
            file=sys.stderr,
        )
    return summary
