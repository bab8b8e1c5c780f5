"""Progress bars and end-of-stage summaries, the same for every stage."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm


class Progress:
    """A tqdm bar over records that also shows tokens/s (once there are tokens to count); `disable` when not on a
    terminal is tqdm's call."""

    def __init__(self, total: int, description: str, unit: str = "resp"):
        self.started = time.perf_counter()
        self.tokens = 0
        self.bar = tqdm(
            total=total,
            desc=description,
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
            smoothing=0.1,
        )

    def update(self, records: int = 1, tokens: int = 0) -> None:
        self.tokens += tokens
        if self.tokens:  # a stage that counts no tokens (filter) shows no "0 tok/s"
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tok/s", refresh=False)
        self.bar.update(records)

    def close(self) -> None:
        self.bar.close()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def format_summary(title: str, rows: list[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in rows) if rows else 0
    lines = [title, "-" * max(len(title), 20)]
    for name, value in rows:
        if isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        lines.append(f"{name.ljust(width)}  {value}")
    return "\n".join(lines)
