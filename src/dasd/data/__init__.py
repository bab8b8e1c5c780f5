"""Data: record and summary types, their files (JSONL, Parquet) and lineage, the Hub, the released data, and the
shipped benchmarks (whose files sit beside this code)."""
