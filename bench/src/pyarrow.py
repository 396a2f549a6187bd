# The baseline of `sluice-bench --only archive`: pyarrow writes the same rows (read, untimed,
# from Sluice's own files) with pyarrow.parquet.write_table and zstd, and fsyncs each file as
# Sluice does. Prints {"seconds": ..., "bytes": ...}.
import glob, json, os, sys, time
import pyarrow.parquet as pq

source, target = sys.argv[1], sys.argv[2]
tables = [pq.read_table(f) for f in sorted(glob.glob(os.path.join(source, "*.parquet")))]
start = time.perf_counter()
written = 0
for i, table in enumerate(tables):
    path = os.path.join(target, f"{i}.parquet")
    pq.write_table(table, path, compression="zstd")
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    written += os.path.getsize(path)
print(json.dumps({"seconds": time.perf_counter() - start, "bytes": written}))
