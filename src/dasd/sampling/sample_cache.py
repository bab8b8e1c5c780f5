"""The sampling cache: a whole `dasd sample` run that an earlier run (any workdir) made with the same teacher
weights, questions and settings is copied instead of generated again (`cache=auto`, the default:
`$DASD_SAMPLE_CACHE` or `$DASD_CACHE/sample`; the local `hf` backend, a JSONL output, no shard).

    cache, reason = SampleCache.open(root, settings_for(config, questions))  # None + why, when not cacheable
    path = cache.lookup()                                                  # a complete run's file, or None
    cache.store(output, count)                                             # after a complete run made in one go

What is exact. The unit is the whole run, not a sample: `hf` sorts a run's requests by prompt length and
generates them in batches of `backend.batch_size`, and a sample's floating point (so, near a boundary between
two tokens, its text) depends on what else is in its batch (`dasd.sampling.eval_cache` has the measurement). A run
with the
same questions, schedule and settings makes the same batches, so its file is the same bytes; a run is stored only
when it generated every response itself, in one go (a resumed run batches its rest differently) and none failed.
The key covers the teacher's content (a hash of its files), the runtime (device, dtype, attention, threads,
library versions, dasd's generation code), the questions as loaded (after `limit`) and every setting of the stage
but where it writes. `make tune`, `make ablation`, `make research` and `make research-transfer` sample the same 100
training questions with the same settings: the first of them samples, the others copy.

Not cached: servers (their weights cannot be hashed from here), vllm (continuous batching), shards, Parquet.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..backends import BackendConfig
from ..cache.keys import digest
from ..config import fingerprint_view
from ..data.io import iter_records, write_json_atomic, write_jsonl_atomic, write_records_atomic
from .eval_cache import cache_settings

# Bump when the meaning of a cached run changes.
SAMPLE_CACHE_VERSION = 1


def default_root() -> Path:
    """`$DASD_SAMPLE_CACHE`, else `$DASD_CACHE/sample` (the tests give each test its own)."""
    from ..models.assets import cache_dir

    return Path(os.environ.get("DASD_SAMPLE_CACHE") or cache_dir() / "sample")


def settings_for(
    backend: BackendConfig,
    stage_settings: dict[str, Any],
    questions: list[dict[str, Any]],
    *,
    chat_template_kwargs: dict[str, Any],
) -> tuple[dict[str, Any] | None, str | None]:
    """Everything that decides a sample run's file, or None and the reason when it cannot be pinned down."""
    settings, reason = cache_settings(backend, chat_template_kwargs=chat_template_kwargs)
    if settings is None:
        return None, reason
    # the fingerprint's fields, and the batch size: on hf it decides the floating point, so the exact bytes
    backend_fields = {  # model, tokenizer: by content, in `settings`
        **{key: value for key, value in fingerprint_view(backend).items() if key not in ("model", "tokenizer")},
        "batch_size": backend.batch_size,
    }
    return {
        **settings,
        "sample_cache_version": SAMPLE_CACHE_VERSION,
        "backend_settings": backend_fields,
        "stage": stage_settings,
        "questions": digest(questions),
    }, None


class SampleCache:
    """The cached run of one settings key: `lookup` its file, `store` a run."""

    def __init__(self, root: str | os.PathLike, settings: dict[str, Any]):
        self.settings = settings
        self.folder = Path(root) / digest(settings)
        self.records_file = self.folder / "responses.jsonl"
        self.complete_file = self.folder / "complete.json"

    def lookup(self) -> Path | None:
        """The cached run's records file when a complete run is stored, else None."""
        if self.complete_file.exists() and self.records_file.exists():
            expected = json.loads(self.complete_file.read_text()).get("bytes")
            if expected == self.records_file.stat().st_size:
                return self.records_file
        return None

    def copy_to(self, output: Path) -> int:
        """Copy the cached run to `output` (atomically; a `*.parquet` output gets the same records as Parquet);
        returns its number of records."""
        output.parent.mkdir(parents=True, exist_ok=True)
        if str(output).endswith(".parquet"):
            write_records_atomic(output, (record for _, record in iter_records(self.records_file)))
        else:
            partial = output.with_name(output.name + ".from-cache.tmp")
            shutil.copyfile(self.records_file, partial)
            os.replace(partial, output)
        return json.loads(self.complete_file.read_text())["records"]

    def store(self, output: Path, records: int) -> None:
        """Keep a complete run's file (the first run stored under a key stays)."""
        if self.lookup() is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / "settings.json", self.settings)
        partial = self.records_file.with_name(f"responses.{os.getpid()}.tmp")
        if str(output).endswith(".parquet"):  # the cache keeps JSONL, whatever the run's format
            write_jsonl_atomic(partial, (record for _, record in iter_records(output)))
        else:
            shutil.copyfile(output, partial)
        os.replace(partial, self.records_file)
        write_json_atomic(self.complete_file, {"records": records, "bytes": self.records_file.stat().st_size})
