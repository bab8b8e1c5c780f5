"""Write a small question file from reasoning-gym tasks, offline and seeded.

    python examples/make_questions.py --per-task 4 --seed 1 --out examples/questions.jsonl

Each line is a dasd question record (DESIGN §3): id, messages, answer, domain, meta (the task's
metadata, so reasoning-gym's own scorer can re-check answers later).
"""

from __future__ import annotations

import argparse
import json

TASKS = ("basic_arithmetic", "chain_sum", "gsm_symbolic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated reasoning-gym task names")
    parser.add_argument("--per-task", type=int, default=4, help="questions per task")
    parser.add_argument("--seed", type=int, default=1, help="reasoning-gym seed")
    parser.add_argument("--out", required=True, help="output JSONL")
    args = parser.parse_args()

    import reasoning_gym

    with open(args.out, "w", encoding="utf-8") as handle:
        for task in args.tasks.split(","):
            dataset = reasoning_gym.create_dataset(task, size=args.per_task, seed=args.seed)
            for index, entry in enumerate(dataset):
                meta = {
                    key: value for key, value in entry["metadata"].items() if isinstance(value, (str, int, float, bool))
                }
                record = {
                    "id": f"{task}-{args.seed}-{index}",
                    "messages": [{"role": "user", "content": entry["question"]}],
                    "answer": str(entry["answer"]),
                    "domain": "math",
                    "meta": {"task": task, **meta},
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
