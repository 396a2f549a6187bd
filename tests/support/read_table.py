"""Reads a Sluice topic's Iceberg table with pyiceberg, and its Parquet files with DuckDB, and
prints what they hold as JSON.

Usage: read_table.py <archive dir or object store URL of one topic> [pyiceberg properties as JSON]

Prints {"iceberg": {"columns": [...], "rows": [{column: value}, ...], "snapshots": n},
"duckdb": {"rows": n, "distinct": n, "types": {column: type}}}: the table read through its
metadata (StaticTable, no catalog), every row with its columns (bytes as hex, timestamps as
epoch milliseconds, headers left out) in (partition, offset) order; and the files read by
DuckDB together, by column name (union_by_name), as files written under different versions
of the topic's schema are. For a table in an object store (an s3:// URL, with the store's
endpoint and credentials among the properties), only pyiceberg reads it.
"""

import datetime
import json
import sys

import duckdb
from pyiceberg.table import StaticTable


def plain(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    return value


def with_pyiceberg(root, properties):
    table = StaticTable.from_metadata(root, properties=properties)
    arrow = table.scan().to_arrow().drop_columns(["headers"])
    rows = [{k: plain(v) for k, v in row.items()} for row in arrow.to_pylist()]
    rows.sort(key=lambda r: (r["partition"], r["offset"]))
    return {
        "columns": [f.name for f in table.schema().fields],
        "rows": rows,
        "snapshots": len(table.metadata.snapshots),
    }


def with_duckdb(root):
    files = f"read_parquet('{root}/*/*.parquet', union_by_name = true)"
    rows, distinct = duckdb.sql(
        f'SELECT count(*), count(DISTINCT (partition, "offset")) FROM {files}'
    ).fetchall()[0]
    types = {c[0]: c[1] for c in duckdb.sql(f"DESCRIBE SELECT * FROM {files}").fetchall()}
    return {"rows": rows, "distinct": distinct, "types": types}


if __name__ == "__main__":
    root = sys.argv[1]
    properties = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    read = {"iceberg": with_pyiceberg(root, properties)}
    if "://" not in root:
        read["duckdb"] = with_duckdb(root)
    print(json.dumps(read))
