"""World v7's premises on a run's own files: what the teacher's filtered samples hold and what each rule would select.

    python benchmarks/das_premises.py runs/das-dev                     # the world the run was made on
    python benchmarks/das_premises.py runs/das-dev --scored runs/twin-scored.jsonl   # … and another student's scoring

From `<workdir>/filter/filtered.*` (the teacher's samples that passed the filters, scored by the run's student):
- P1: the share of candidates with "Negative totals are allowed." (the mode T=1.0 exposes), per temperature;
- P2: how the sentences the world labels as skill (`world.json`'s `skill_sentences`) are classified (teacher /
  shared / student), and per question × temperature how much skill DAS's choice holds over a random candidate's —
  and the same for each other selection rule (oracle, longest, ratio, anti-DAS), before any training.
`--scored FILE` repeats P2 for the same candidates scored by another student (e.g. the twin's: `dasd score
input=<workdir>/filter/filtered.parquet student.model=<twin>/student output=FILE`). Numbers for RESULTS' build log.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dasd.data.io import iter_records  # noqa: E402
from dasd.models.demo_world import world_skill_sentences  # noqa: E402
from dasd.scoring.sentence_scores import oracle_count, sentence_texts, strategy_score  # noqa: E402

ALLOWED = "Negative totals are allowed."


RULES = {"das (count)": "count", "oracle": "oracle", "longest": "longest", "ratio": "ratio", "anti_das": "anti_das"}


def rules(record: dict, patterns: list[re.Pattern[str]]) -> dict[str, float]:
    """Each rule's score of a candidate (higher is chosen): `dasd select`'s own (`strategy_score`)."""
    return {name: strategy_score(record, strategy, 0, patterns) for name, strategy in RULES.items()}


def premises(records: list[dict], patterns: list[re.Pattern[str]]) -> dict:
    kinds: Counter = Counter()
    allowed: dict[float, list[bool]] = defaultdict(list)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        allowed[record["temperature"]].append(ALLOWED in (record.get("reasoning") or ""))
        groups[(record["question_id"], record["temperature"])].append(record)
        for sentence, text in zip(record["sentences"], sentence_texts(record)):
            if any(pattern.search(text) for pattern in patterns):
                kinds[sentence["type"]] += 1
    gains: dict[str, list[float]] = defaultdict(list)
    varied = 0
    for candidates in groups.values():
        if len(candidates) < 2:
            continue
        skills = [oracle_count(c, patterns) for c in candidates]
        varied += len(set(skills)) > 1
        scores = [rules(c, patterns) for c in candidates]
        for rule in scores[0]:
            best = max(range(len(candidates)), key=lambda i: (scores[i][rule], -i))
            gains[rule].append(skills[best] - sum(skills) / len(skills))
    total = sum(kinds.values()) or 1
    return {
        "candidates": len(records),
        "sentence share by temperature": {str(t): round(sum(v) / len(v), 4) for t, v in sorted(allowed.items())},
        "skill sentences": dict(kinds),
        "skill sentences typed teacher": round(kinds["teacher"] / total, 4),
        "groups with 2+ candidates": len(gains["oracle"]),
        "groups whose candidates differ in skill": round(varied / max(len(gains["oracle"]), 1), 4),
        "skill of the chosen candidate over a random one's (mean per group)": {
            rule: round(sum(v) / len(v), 3) for rule, v in gains.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--scored", type=Path, help="the same candidates scored by another student")
    args = parser.parse_args()
    pipeline = yaml.safe_load((args.workdir / "pipeline.yaml").read_text())
    world = Path(pipeline["questions"]).parent
    patterns = [re.compile(pattern) for pattern in world_skill_sentences(world)]
    filtered = next(
        path
        for path in (args.workdir / "filter").glob("filtered.*")
        if path.suffix in (".parquet", ".jsonl") and "rejected" not in path.name
    )
    records = [record for _, record in iter_records(filtered) if record.get("sentences")]
    print(json.dumps({"run's student": premises(records, patterns)}, indent=1))
    if args.scored:
        other = [record for _, record in iter_records(args.scored) if record.get("sentences")]
        print(json.dumps({f"scored by {args.scored}": premises(other, patterns)}, indent=1))


if __name__ == "__main__":
    main()
