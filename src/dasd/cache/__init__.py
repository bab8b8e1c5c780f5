"""What dasd keeps between runs, and how it knows two things are the same.

- `keys`: content keys — `digest` of settings, `file_sha256` (memoised by size, mtime and inode), and the one
  identity of a model (`model_identity`: its files' names, sizes and content), used by `dasd run`'s fingerprints
  and by both caches;
- `sample`: a whole `dasd sample` run made before with the same teacher weights, questions and settings, copied;
- `eval`: `dasd eval` batches generated before with the same model and settings, read back.

Each cache's folder comes from its variable (`$DASD_SAMPLE_CACHE`, `$DASD_EVAL_CACHE`, `$DASD_HASH_CACHE`), else
from `$DASD_CACHE`; the tests give every test its own.
"""
