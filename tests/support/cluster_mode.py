"""The Kafka side of the cluster-mode tests (tests/all/cluster_mode.rs), with confluent-kafka.

Usage:
  cluster_mode.py create BOOTSTRAP TOPIC:PARTITIONS ...
      creates the topics (3 replicas, or one per node if fewer) and waits until every replica is in sync.
  cluster_mode.py produce BOOTSTRAP TOPIC RECORDS KEYS SECONDS [FIRST_ID]
      produces RECORDS records, key "k<id % KEYS>", value {"id": <id>}, ids from FIRST_ID
      (default 0), spread over about SECONDS; idempotent, acks=all. Prints {"produced": n}.
  cluster_mode.py dump BOOTSTRAP TOPIC RECORDS
      prints the values of the first RECORDS committed records of TOPIC (waiting up to a minute
      for them) as a JSON list, each value parsed as JSON.
  cluster_mode.py check BOOTSTRAP INPUT OUTPUT GROUP RECORDS WAIT_SECONDS
      waits (up to WAIT_SECONDS) until a read_committed reader of OUTPUT has an output for each
      of the RECORDS inputs of INPUT, then reads GROUP's changelog, and prints as JSON what a
      test asserts: inputs, outputs, outputs per id (duplicates, missing), the counts per key
      (each key's outputs must count 1..n once), the changelog's count per key and total per
      partition against the inputs, and the versions that produced the outputs.
"""

import json
import sys
import time
from collections import Counter, defaultdict

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

QUIET = {"log_level": 0}
# A reader that sees this long without a record has read what there is.
IDLE_SECONDS = 3


def create(bootstrap, specs):
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    replicas = min(3, len(admin.list_topics(timeout=10).brokers))
    topics = [NewTopic(name, int(n), replicas) for name, n in (s.split(":") for s in specs)]
    for future in admin.create_topics(topics).values():
        future.result()
    deadline = time.time() + 60
    for topic in topics:
        while True:
            meta = admin.list_topics(topic.topic, timeout=10).topics[topic.topic]
            parts = list(meta.partitions.values())
            if len(parts) == topic.num_partitions and all(len(p.isrs) == replicas for p in parts):
                break
            if time.time() > deadline:
                raise SystemExit(f"topic {topic.topic} is not fully replicated")
            time.sleep(0.2)
    print(json.dumps({"created": [t.topic for t in topics]}))


def produce(bootstrap, topic, records, keys, seconds, first_id):
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
         "linger.ms": 5, **QUIET})
    failed = []
    started = time.time()
    for n in range(records):
        i = first_id + n
        while True:
            try:
                producer.produce(topic, key=f"k{i % keys}", value=json.dumps({"id": i}),
                                 on_delivery=lambda err, _msg: err and failed.append(str(err)))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        # Spread the records over `seconds`.
        ahead = (n + 1) / records * seconds - (time.time() - started)
        if ahead > 0.01:
            time.sleep(ahead)
    producer.flush(120)
    if failed:
        raise SystemExit(f"{len(failed)} records not produced: {failed[:3]}")
    print(json.dumps({"produced": records}))


def reader(bootstrap):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "cluster-mode-check",
                     "isolation.level": "read_committed", "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", **QUIET})


def read_all(bootstrap, topic, until=None, wait_seconds=0):
    """Every committed record of `topic`: until `until(records)` is true (or `wait_seconds`
    pass), then until IDLE_SECONDS without a record."""
    consumer = reader(bootstrap)
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    records = []
    deadline = time.time() + wait_seconds
    last = time.time()
    while True:
        batch = consumer.consume(2000, timeout=0.5)
        for message in batch:
            if message.error() is None:
                records.append(message)
        if batch:
            last = time.time()
        satisfied = until is None or until(records) or time.time() > deadline
        if satisfied and time.time() - last > IDLE_SECONDS:
            break
    consumer.close()
    return records


def check(bootstrap, input_topic, output_topic, group, records, wait_seconds):
    inputs = read_all(bootstrap, input_topic)
    where = {}
    per_key = Counter()
    per_partition = Counter()
    for m in inputs:
        i = json.loads(m.value())["id"]
        where[i] = (m.partition(), m.offset())
        per_key[m.key().decode()] += 1
        per_partition[m.partition()] += 1
    progress = {"read": 0, "ids": set()}

    def complete(outputs):
        for m in outputs[progress["read"]:]:
            progress["ids"].add(int(json.loads(m.value())["id"]))
        progress["read"] = len(outputs)
        return len(progress["ids"]) >= len(where)

    outputs = read_all(bootstrap, output_topic, complete, wait_seconds)
    by_id = Counter()
    counts = defaultdict(list)
    versions = Counter()
    for m in outputs:
        value = json.loads(m.value())
        by_id[int(value["id"])] += 1
        counts[value["key"]].append(value["count"])
        headers = dict(m.headers() or [])
        versions[(headers.get("sluice.plugin") or b"").decode()] += 1
    count_errors = [k for k, got in counts.items()
                    if sorted(got) != list(range(1, per_key[k] + 1))]
    state = {}
    for m in read_all(bootstrap, f"{group}.changelog"):
        key = m.key()
        if key.startswith(b"s"):
            state[(m.partition(), key[1:].decode())] = m.value()
    state_errors = []
    for key, n in per_key.items():
        stored = [v for (p, k), v in state.items() if k == f"count/{key}"]
        if stored != [str(n).encode()]:
            state_errors.append([key, n, [s.decode() if s else None for s in stored]])
    for partition, n in per_partition.items():
        total = state.get((partition, "total"))
        if total != str(n).encode():
            state_errors.append([f"total of partition {partition}", n,
                                 total.decode() if total else None])
    print(json.dumps({
        "inputs": len(where),
        "expected_inputs": records,
        "outputs": len(outputs),
        "distinct": len(by_id),
        "duplicates": sorted(i for i, n in by_id.items() if n > 1)[:10],
        "missing": sorted(set(where) - set(by_id))[:10],
        "unexpected": sorted(set(by_id) - set(where))[:10],
        "count_errors": count_errors[:10],
        "state_errors": state_errors[:10],
        "versions": dict(versions),
    }))


def dump(bootstrap, topic, records):
    found = read_all(bootstrap, topic, lambda read: len(read) >= records, 60)
    print(json.dumps([json.loads(m.value()) for m in found]))


def main():
    command, bootstrap, *rest = sys.argv[1:]
    if command == "create":
        create(bootstrap, rest)
    elif command == "produce":
        topic, records, keys, seconds, *first = rest
        produce(bootstrap, topic, int(records), int(keys), float(seconds),
                int(first[0]) if first else 0)
    elif command == "dump":
        topic, records = rest
        dump(bootstrap, topic, int(records))
    elif command == "check":
        input_topic, output_topic, group, records, wait_seconds = rest
        check(bootstrap, input_topic, output_topic, group, int(records), float(wait_seconds))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
