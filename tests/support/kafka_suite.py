"""The librdkafka side of the Kafka compatibility suite (tests/all/kafka_compat.rs): the same
scenario runs against Apache Kafka and against Sluice, and prints one JSON object of what it
observed, made only of what a correct broker decides (counts, offsets, error names, what was
read), never of timings, so that the two outputs compare leaf by leaf.

    python kafka_suite.py BOOTSTRAP confluent    confluent-kafka (librdkafka inside)
    python kafka_suite.py BOOTSTRAP kcat         kcat, the command-line tool (librdkafka too)
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

# How long any one wait may take before the scenario gives up (seconds).
DEADLINE_S = 120
RECORDS = 3000
PARTITIONS = 6


STARTED = time.monotonic()


def wait_until(what, done, step):
    """Calls step() until done() holds; fails naming `what` after DEADLINE_S. Says on stderr
    how long each wait took."""
    began = time.monotonic()
    deadline = began + DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        step()
    now = time.monotonic()
    print(f"[{now - STARTED:7.1f} s] {what}: {now - began:.1f} s", file=sys.stderr)


def create_topic(admin, topic, partitions):
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    futures[topic].result(30)


def admin_part(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    create_topic(admin, topic, PARTITIONS)
    out = {}
    try:
        create_topic(admin, topic, PARTITIONS)
        out["create_again"] = "ok"
    except KafkaException as error:
        out["create_again"] = error.args[0].name()
    metadata = admin.list_topics(topic, timeout=30)
    out["partitions"] = len(metadata.topics[topic].partitions)
    out["brokers"] = len(metadata.brokers)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    out["retention.ms"] = configs["retention.ms"].value
    out["cleanup.policy"] = configs["cleanup.policy"].value
    return out


def produce_part(bootstrap, topic, first):
    """An idempotent producer with retries: RECORDS keyed records with headers, numbered from
    `first`."""
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "retries": 10,
        "linger.ms": 5,
        "compression.type": "lz4",
    })
    acked = []
    errors = []

    def delivered(error, message):
        if error is not None:
            errors.append(error.name())
        else:
            acked.append((message.partition(), message.offset()))

    for i in range(first, first + RECORDS):
        producer.produce(topic, key=f"key-{i % 100}", value=f"value-{i}",
                         headers=[("n", str(i).encode())], on_delivery=delivered)
        producer.poll(0)
    producer.flush(60)
    per_partition = {}
    for partition, offset in acked:
        per_partition.setdefault(partition, []).append(offset)
    return {
        "acked": len(acked),
        "errors": errors,
        "records_per_partition": {str(p): len(o) for p, o in sorted(per_partition.items())},
        # Offsets of each partition are 0..n-1, each once: nothing written twice or lost.
        "offsets_dense": all(sorted(o) == list(range(len(o))) for o in per_partition.values()),
    }


class Member:
    """A consumer of the group, polled by the scenario's one loop."""

    def __init__(self, bootstrap, group, name, seen):
        self.name = name
        self.seen = seen
        self.read = 0
        self.assigned = set()
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "partition.assignment.strategy": "cooperative-sticky",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
        })
        self.consumer.subscribe([TOPIC_HOLDER[0]], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, consumer, partitions):
        self.assigned |= {p.partition for p in partitions}

    def on_revoke(self, consumer, partitions):
        self.assigned -= {p.partition for p in partitions}

    def poll(self):
        """Reads what is there (up to 500 records) and commits it, synchronously."""
        messages = self.consumer.consume(500, 0.05)
        read = False
        for message in messages:
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    raise SystemExit(f"{self.name}: {message.error()}")
                continue
            self.seen.append((message.partition(), message.offset()))
            self.read += 1
            read = True
        if not read:
            return
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as error:
            # A broker may refuse a commit between a rebalance's join and its assignment
            # (REBALANCE_IN_PROGRESS); those records may then be read again, by whoever owns
            # them.
            if error.args[0].code() not in (KafkaError.REBALANCE_IN_PROGRESS,
                                            KafkaError.ILLEGAL_GENERATION):
                raise

    def close(self):
        self.consumer.close()


TOPIC_HOLDER = [None]


def group_part(bootstrap, topic, group):
    """A group of 3 sharing the 6 partitions with cooperative-sticky rebalancing as members
    join and leave; then a restarted member resumes from the committed offsets."""
    TOPIC_HOLDER[0] = topic
    seen = []
    first = Member(bootstrap, group, "m1", seen)
    wait_until("m1 reading a third", lambda: len(seen) >= RECORDS // 3, first.poll)
    members = [first, Member(bootstrap, group, "m2", seen), Member(bootstrap, group, "m3", seen)]

    def poll_all():
        for member in members:
            member.poll()

    def shared():
        return sorted(len(m.assigned) for m in members) == [2, 2, 2]

    wait_until("three members sharing the partitions", shared, poll_all)
    out = {"sizes_with_three": sorted(len(m.assigned) for m in members)}
    # A second wave, read by the three together.
    before = [m.read for m in members]
    out["second_wave"] = produce_part(bootstrap, topic, RECORDS)
    wait_until("every record read", lambda: len(set(seen)) >= 2 * RECORDS, poll_all)
    out["each_member_read_of_the_second_wave"] = all(
        m.read > b for m, b in zip(members, before))
    leaving = members.pop(1)
    leaving.close()
    wait_until("two members taking over", lambda: sorted(len(m.assigned) for m in members) == [3, 3],
               poll_all)
    out["sizes_after_one_left"] = sorted(len(m.assigned) for m in members)
    out["read_every_record"] = len(set(seen)) == 2 * RECORDS
    for member in members:
        member.close()
    # Commit, restart, resume: a new member starts where the group committed (the end), and
    # reads only what is produced after.
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(10):
        producer.produce(topic, key=f"late-{i}", value=f"late-{i}")
    producer.flush(30)
    later = []
    resumed = Member(bootstrap, group, "m4", later)
    wait_until("the late records", lambda: len(later) >= 10, resumed.poll)
    committed = resumed.consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], 30)
    resumed.close()
    out["after_restart_read"] = len(later)
    out["committed_total"] = sum(tp.offset for tp in committed)
    return out


def seek_part(bootstrap, topic):
    """Seek by timestamp: offsets_for_times finds the first record at or after a time."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    create_topic(admin, topic, 1)
    producer = Producer({"bootstrap.servers": bootstrap})
    base = 1_700_000_000_000
    for i in range(10):
        producer.produce(topic, value=f"t{i}", timestamp=base + i * 1000)
    producer.flush(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-seeker"})
    out = {}
    for label, at in [("before", base - 1), ("between", base + 5500), ("exact", base + 3000),
                      ("after", base + 60_000)]:
        found = consumer.offsets_for_times([TopicPartition(topic, 0, at)], 30)[0]
        out[label] = found.offset
    consumer.close()
    return out


def seek_read(bootstrap, topic, offset):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader"})
    consumer.assign([TopicPartition(topic, 0, offset)])
    got = []

    def step():
        message = consumer.poll(0.1)
        if message is not None and not message.error():
            got.append((message.value().decode(), message.timestamp()[1]))

    wait_until("a record after seeking", lambda: got, step)
    consumer.close()
    return got[0]


def confluent(bootstrap):
    topic = "cf-orders"
    out = {"admin": admin_part(bootstrap, topic)}
    out["produce"] = produce_part(bootstrap, topic, 0)
    out["group"] = group_part(bootstrap, topic, "cf-group")
    times = seek_part(bootstrap, "cf-times")
    value, timestamp = seek_read(bootstrap, "cf-times", times["between"])
    times["read_at_between"] = {"value": value, "timestamp": timestamp}
    out["seek_by_time"] = times
    return out


def kcat(bootstrap):
    """100,000 keyed records with headers produced from a file by kcat, then consumed back."""
    topic = "kcat-records"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    create_topic(admin, topic, 3)
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, "records.txt")
        with open(source, "w") as f:
            for i in range(100_000):
                f.write(f"key-{i % 1000}\tvalue {i} {'x' * (i % 17)}\n")
        subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-H", "source=kcat",
                        "-H", "run=compat", "-z", "snappy", "-l", source], check=True, timeout=300)
    consumed = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
         "-f", "%p\t%o\t%k\t%s\t%h\n"],
        check=True, capture_output=True, text=True, timeout=300).stdout.splitlines()
    rows = [line.split("\t") for line in consumed]
    per_partition = {}
    for partition, offset, key, value, headers in rows:
        per_partition.setdefault(partition, []).append((int(offset), key, value, headers))
    by_key = {}
    for partition, records in per_partition.items():
        for _, key, _, _ in records:
            by_key.setdefault(key, set()).add(partition)
    return {
        "consumed": len(rows),
        "records_per_partition": {p: len(r) for p, r in sorted(per_partition.items())},
        "offsets_dense": all(sorted(o for o, *_ in r) == list(range(len(r)))
                             for r in per_partition.values()),
        "each_key_in_one_partition": all(len(p) == 1 for p in by_key.values()),
        "values_in_order": all(
            [int(v.split()[1]) for _, _, v, _ in sorted(r)] == sorted(int(v.split()[1]) for _, _, v, _ in r)
            for r in per_partition.values()),
        "headers": sorted({h for *_, h in rows}),
        "distinct_values": len({v for *_, v, _ in rows}),
    }


def main():
    bootstrap, scenario = sys.argv[1], sys.argv[2]
    out = {"confluent": confluent, "kcat": kcat}[scenario](bootstrap)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
