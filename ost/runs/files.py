"""Writes a reader never sees half of, and parquet files that carry the settings that made them."""
import json
import os
from pathlib import Path


def replace_text(path, text: str) -> Path:
    """Write `text` to `path` by atomic rename: a reader (another process, a rerun after a crash) sees the
    old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_parquet(frame, path, meta: dict, index: bool = False) -> Path:
    """Atomic parquet write with the settings and seed that made it in the file's own metadata (key
    `ost`), and no timestamps: the same inputs give the same bytes. `read_meta` reads them back."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=index)
    table = table.replace_schema_metadata({**table.schema.metadata,
                                           b"ost": json.dumps(meta, sort_keys=True).encode()})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_meta(path) -> dict:
    """The `ost` metadata `write_parquet` stored in a parquet file ({} when there is none)."""
    import pyarrow.parquet as pq
    raw = (pq.read_schema(path).metadata or {}).get(b"ost")
    return json.loads(raw) if raw else {}
