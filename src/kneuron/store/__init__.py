"""Layer 0 — persistence without torch: atomic writes, the run manifest, keyed records with codecs,
content caches. Everything resumable in kneuron goes through here.

    atomic     write_bytes / write_text / write_json / write_with, move_aside, read_json (checked)
    manifest   Manifest (run.json: settings, provenance, upgrades, the resume check), Timings, check_out
    records    Records ("json" or a Blob codec: one file per key), JsonLines ("jsonl"), open_records
    parquet    ParquetRecords (parts + commit markers, compaction; DuckDB reads the result)
    cache      cache_dir (``$KNEURON_CACHE`` or the user cache directory), Cache
"""
from kneuron.store.atomic import (DAMAGED, StoreError, move_aside, read_json, write_bytes, write_json, write_lines,
                                  write_text, write_with)
from kneuron.store.cache import Cache, cache_dir
from kneuron.store.manifest import Manifest, Timings, add_time, check_out, check_resume, upgrade, versions
from kneuron.store.records import Blob, JsonLines, Records, open_records

__all__ = ["DAMAGED", "StoreError", "move_aside", "read_json", "write_bytes", "write_json", "write_lines",
           "write_text", "write_with", "Cache", "cache_dir", "Manifest", "Timings", "add_time", "check_out",
           "check_resume", "upgrade", "versions", "Blob", "JsonLines", "Records", "open_records"]
