"""What makes a file or a set of settings the same as before (`keys`): `digest` of settings, `file_sha256` (memoised
by size, mtime and inode under `$DASD_HASH_CACHE`, else `$DASD_CACHE/hashes`) and `cache_dir`, the root of every cache
and built asset (`$DASD_CACHE`). A model's identity is built on them in `dasd.models.identity`; the caches of
generations that use them are `dasd.sampling.sample_cache` and `dasd.sampling.eval_cache` (each with its own variable,
`$DASD_SAMPLE_CACHE`, `$DASD_EVAL_CACHE`; the tests give every test its own).
"""
