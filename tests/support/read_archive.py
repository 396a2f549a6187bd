"""Reads a Sluice topic's Parquet archive with pyarrow and with DuckDB, and prints both as JSON.

Usage: read_archive.py <archive dir of one topic>

Each reader prints every row as [partition, offset, timestamp_ms, key_hex or null, value_hex,
[[header_key, header_value_hex], ...]] in (partition, offset) order, plus the file metadata
pyarrow sees, so the test can compare them with what the engine holds.
"""

import glob
import json
import os
import sys

import duckdb
import pyarrow.parquet as pq


def hex_or_none(b):
    return None if b is None else b.hex()


def with_pyarrow(root):
    rows, metadata = [], []
    for path in sorted(glob.glob(os.path.join(root, "*", "*.parquet"))):
        table = pq.read_table(path)
        assert str(table.schema.field("timestamp").type) == "timestamp[ms, tz=UTC]", table.schema
        meta = {k.decode(): v.decode() for k, v in pq.read_metadata(path).metadata.items()
                if k.decode().startswith("sluice.")}
        metadata.append(meta)
        for row in table.to_pylist():
            ts = row["timestamp"]
            rows.append([
                row["partition"], row["offset"],
                int(ts.timestamp() * 1000),
                hex_or_none(row["key"]), row["value"].hex(),
                [[h["key"], h["value"].hex()] for h in row["headers"]],
            ])
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows, metadata


def with_duckdb(root):
    query = f"""
        SELECT partition, "offset", epoch_ms(timestamp), hex(key), hex(value),
               list_transform(headers, lambda h: [h.key, hex(h.value)])
        FROM read_parquet('{root}/*/*.parquet')
        ORDER BY partition, "offset"
    """
    rows = []
    for p, o, ts, key, value, headers in duckdb.sql(query).fetchall():
        rows.append([p, o, ts, None if key is None else key.lower(), value.lower(),
                     [[k, v.lower()] for k, v in headers]])
    return rows


if __name__ == "__main__":
    root = sys.argv[1]
    rows, metadata = with_pyarrow(root)
    print(json.dumps({"pyarrow": rows, "duckdb": with_duckdb(root), "metadata": metadata}))
