"""Whole files written atomically: via a temporary file beside the target and a rename, so that a reader never sees
half of one and a crash leaves the previous version. The bottom layer (configs, content keys and records use it;
`dasd.data.io` re-exports both)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file (YAML, HTML, Markdown, …) via a temporary file and a rename.

    >>> import tempfile; target = Path(tempfile.mkdtemp()) / "a" / "b.txt"
    >>> write_text_atomic(target, "x"); target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('x', ['b.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write `payload` as indented JSON, atomically (summaries, markers, metrics)."""
    write_text_atomic(path, json.dumps(payload, ensure_ascii=False, indent=2))
