"""Reads a Sluice topic's Parquet archive with pyarrow and with DuckDB, and prints both as JSON.

Usage: read_archive.py <archive dir of one topic>

Each reader prints every row as [partition, offset, timestamp_ms, key_hex or null, value_hex,
[[header_key, header_value_hex], ...]] in (partition, offset) order, plus the file metadata
pyarrow sees, so the test can compare them with what the engine holds. A key or value held as
text (string or json) is read from its column, or from its side column (key_raw, value_raw)
when it was not text: the bytes produced are the one that is not null.
"""

import glob
import json
import os
import sys

import duckdb
import pyarrow.parquet as pq


def hex_or_none(b):
    return None if b is None else b.hex()


def produced(row, name):
    """The bytes produced for a key or value: its column (bytes or text), else its side column."""
    held = row[name]
    if held is None:
        held = row.get(name + "_raw")
    return held.encode() if isinstance(held, str) else held


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
                hex_or_none(produced(row, "key")), (produced(row, "value") or b"").hex(),
                [[h["key"], h["value"].hex()] for h in row["headers"]],
            ])
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows, metadata


def with_duckdb(root):
    files = f"read_parquet('{root}/*/*.parquet')"
    columns = {c[0]: c[1] for c in duckdb.sql(f"DESCRIBE SELECT * FROM {files}").fetchall()}

    def produced(name):
        if columns[name] == "BLOB":
            return name
        return f"coalesce(encode({name}::VARCHAR), {name}_raw)"

    query = f"""
        SELECT partition, "offset", epoch_ms(timestamp), hex({produced("key")}),
               hex(coalesce({produced("value")}, ''::BLOB)),
               list_transform(headers, lambda h: [h.key, hex(h.value)])
        FROM {files}
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
