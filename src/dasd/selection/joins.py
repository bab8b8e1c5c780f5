"""Joins of `dasd select`'s candidates with another scoring of the same responses, by id, a partition of ids at a
time (memory: one partition's sentences, never every candidate's):

* `boosted_scores` (scored with a distilled model as the student): each candidate's share of boosted sentences
  (`boosted_shares`, `dasd provenance`'s classes), the candidates above `max_boosted_share` left out
  (`without_boosted`), and the mean share of the kept and the others (`mean_boosted_share`);
* `compare_with` (scored by another student): how often the two scorings give a sentence the same class
  (`sentence_confusion`).
"""

from __future__ import annotations

import glob
import math
from pathlib import Path
from typing import Any

from ..data.io import iter_records
from ..data.records import check_fields, in_shard
from ..scoring.sentence_scores import add_to_confusion, classify_provenance, empty_confusion
from .candidates import Candidates, SelectSettings, candidate_records

JOIN_BYTES = 2 << 30  # file bytes a join pass loads at most (one partition of the other file's sentences)


def _bytes(path: str) -> int:
    """The bytes of a record input: a file, a Parquet folder, or the files a glob matches (0 for a Hub dataset)."""
    matches = sorted(glob.glob(path)) if any(char in path for char in "*?[") else [path]
    total = 0
    for match in map(Path, matches):
        if match.is_dir():
            total += sum(part.stat().st_size for part in match.rglob("*") if part.is_file())
        elif match.is_file():
            total += match.stat().st_size
    return total


def join_partitions(path: str) -> list[tuple[int, int] | None]:
    """The passes of a join that loads `path`'s sentences a part at a time: records whose id hashes to part i of n
    (`in_shard`), n growing with the file (JOIN_BYTES each); [None] — one pass, everything — for a small file.

    >>> join_partitions("/nonexistent.jsonl")
    [None]
    """
    parts = max(1, math.ceil(_bytes(path) / JOIN_BYTES))
    return [None] if parts == 1 else [(index, parts) for index in range(parts)]


def boosted_shares(candidate_ids: list[str], config: SelectSettings) -> dict[str, float | None]:
    """Each candidate's share of boosted sentences: its sentences (teacher and original-student log-probs from the
    input) classed with the distilled model's log-prob of the same span from `boosted_scores` (`dasd provenance`'s
    classes); None for a candidate that file lacks. A join of the two files a partition of ids at a time: memory is
    one partition's sentences, never every candidate's."""
    assert config.boosted_scores is not None
    wanted = set(candidate_ids)
    beta = config.beta if config.beta is not None else 0.1
    space = config.space or "prob"
    shares: dict[str, float | None] = {}
    for part in join_partitions(config.boosted_scores):
        mine = (lambda i, part=part: i in wanted and in_shard(i, part)) if part else wanted.__contains__
        distilled: dict[str, dict[tuple, float]] = {}
        for line, record in iter_records(config.boosted_scores, keep_id=(lambda i, part=part: in_shard(i, part))):
            check_fields(record, ("id", "sentences"), path=config.boosted_scores, line=line)
            distilled[str(record["id"])] = {
                (s.get("part"), s.get("start"), s.get("end")): s["student_logprob"] for s in record["sentences"]
            }
        for record in candidate_records(config.input, config, Candidates([]), keep_id=mine):
            theirs = distilled.get(str(record["id"]))
            sentences = record.get("sentences") or []
            if theirs is None or not sentences:
                shares[record["id"]] = None
                continue
            classes = [
                classify_provenance(
                    s["teacher_logprob"],
                    s["student_logprob"],
                    theirs[key],
                    alpha=config.boosted_alpha,
                    beta=beta,
                    space=space,
                )
                for s in sentences
                if (key := (s.get("part"), s.get("start"), s.get("end"))) in theirs
            ]
            shares[record["id"]] = classes.count("boosted") / len(classes) if classes else None
    return {record_id: shares.get(record_id) for record_id in candidate_ids}  # the candidates' order


def sentence_confusion(common: set[str], config: SelectSettings) -> dict[str, dict[str, int]]:
    """With compare_with: the class of each sentence here against there, over the candidates both files hold — a
    join of the two files a partition of ids at a time (memory: one partition's sentences)."""
    assert config.compare_with is not None
    confusion = empty_confusion()
    for part in join_partitions(config.compare_with):
        both = (lambda i, part=part: i in common and in_shard(i, part)) if part else common.__contains__
        theirs = {
            record["id"]: record.get("sentences")
            for record in candidate_records(config.compare_with, config, Candidates([]), keep_id=both)
        }
        for record in candidate_records(config.input, config, Candidates([]), keep_id=both):
            if record["id"] in theirs:
                add_to_confusion(confusion, record.get("sentences"), theirs[record["id"]])
    return confusion


def without_boosted(
    candidates: list[dict[str, Any]], config: SelectSettings
) -> tuple[list[dict[str, Any]], dict[str, float | None], dict[str, Any]]:
    """With boosted_scores: each candidate's share of boosted sentences (`boosted_shares`), the candidates left once
    those above max_boosted_share are out, and the summary's `boosted` entry (its `mean_share` is added once the
    selection is made: `mean_boosted_share`)."""
    shares = boosted_shares([record["id"] for record in candidates], config)
    excluded = {
        record_id
        for record_id, share in shares.items()
        if config.max_boosted_share is not None and share is not None and share > config.max_boosted_share
    }
    boosted = {
        "scores": config.boosted_scores,
        "max_share": config.max_boosted_share,
        "alpha": config.boosted_alpha,
        "excluded": len(excluded),
        "unscored": sum(share is None for share in shares.values()),
    }
    before = {record["question_id"] for record in candidates}
    candidates = [record for record in candidates if record["id"] not in excluded]
    # a question whose every candidate was left out gets no record at all: less data, not other data
    boosted["questions_emptied"] = len(before - {record["question_id"] for record in candidates})
    return candidates, shares, boosted


def mean_boosted_share(shares: dict[str, float | None], kept_ids: set[str]) -> dict[str, float | None]:
    """The mean boosted share of the kept candidates and of the others (None where none was scored there).

    >>> mean_boosted_share({"a": 0.5, "b": None, "c": 0.1, "d": 0.3}, {"a", "b"})
    {'kept': 0.5, 'not_kept': 0.2}
    """
    kept_shares = [shares[i] for i in kept_ids if shares.get(i) is not None]
    dropped_shares = [v for i, v in shares.items() if i not in kept_ids and v is not None]
    return {
        "kept": round(sum(kept_shares) / len(kept_shares), 6) if kept_shares else None,
        "not_kept": round(sum(dropped_shares) / len(dropped_shares), 6) if dropped_shares else None,
    }
