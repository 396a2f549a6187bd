"""A Kafka client's view of a broker, for tests/all/kafka.rs: kafka-python (an independent,
pure-Python implementation of the protocol) runs one scenario against the address given and
prints one JSON object of what it saw.

    kafka_client.py BOOTSTRAP roundtrip TOPIC   creates TOPIC (3 partitions), produces keyed
                                                records with headers in every compression
                                                kafka-python can write, reads them all back
    kafka_client.py BOOTSTRAP compat TOPIC      what any correct broker decides alike (tombstones,
                                                fixed timestamps, every compression, offsets by
                                                time, a group's commits), for kafka_compat.rs
    kafka_client.py BOOTSTRAP read TOPIC [ISOLATION]
                                                reads every record of an existing TOPIC
                                                (read_uncommitted, or read_committed)
    kafka_client.py BOOTSTRAP admin TOPIC       the admin client: cluster, topic settings,
                                                more partitions, a group's offsets deleted
    kafka_client.py BOOTSTRAP idle - N           opens N connections that send nothing, says
                                                "open N", and holds them until stdin closes
    kafka_client.py BOOTSTRAP sasl TOPIC USER PASSWORD
                                                lists topics with SASL/PLAIN as USER, with a
                                                wrong password, and without SASL
    kafka_client.py BOOTSTRAP group TOPIC GROUP N  N consumers of GROUP share TOPIC's records
                                                (subscribed, committing as they go) until
                                                none comes for a while; then one more reads
                                                what is left after the commits

Bytes are printed as hex, so that the test compares them exactly.
"""

import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

RECORDS_PER_COMPRESSION = 50
PARTITIONS = 3


def codecs():
    """The compressions kafka-python can write here (lz4, zstd and snappy need modules of
    their own: lz4, zstandard, python-snappy)."""
    from kafka import codec

    available = {"lz4": codec.has_lz4(), "zstd": codec.has_zstd(), "snappy": codec.has_snappy()}
    return [None, "gzip"] + [name for name, present in available.items() if present]


def record_json(message):
    return {
        "partition": message.partition,
        "offset": message.offset,
        "timestamp": message.timestamp,
        "key": None if message.key is None else message.key.hex(),
        "value": None if message.value is None else message.value.hex(),
        "headers": [[name, None if value is None else value.hex()] for name, value in message.headers],
    }


def read_all(bootstrap, topic, isolation_level="read_uncommitted"):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        isolation_level=isolation_level,
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    ends = consumer.end_offsets(partitions)
    records = []
    deadline = time.monotonic() + 60
    while any(consumer.position(p) < ends[p] for p in partitions):
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up reading {topic}: at {[consumer.position(p) for p in partitions]}")
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(record_json(m) for m in batch)
    offsets = {
        "earliest": {str(p.partition): o for p, o in consumer.beginning_offsets(partitions).items()},
        "latest": {str(p.partition): o for p, o in ends.items()},
    }
    consumer.close()
    records.sort(key=lambda r: (r["partition"], r["offset"]))
    return records, offsets, consumer


def roundtrip(bootstrap, topic):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    listed = sorted(admin.list_topics())
    admin.close()
    acked = []
    used = codecs()
    started_ms = int(time.time() * 1000)
    for codec in used:
        # Idempotent, as kafka-python's (and the Java client's) default is.
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            compression_type=codec,
            enable_idempotence=True,
        )
        futures = []
        for i in range(RECORDS_PER_COMPRESSION):
            n = len(futures) + len(acked)
            key = f"key-{codec}-{i}".encode()
            # Every tenth record a tombstone (null value). (kafka-python sends no null header
            # values; the Java client's scenario does.)
            value = None if i % 10 == 3 else f"value {n} ".encode() + bytes(range(i % 7))
            headers = [("codec", str(codec).encode()), ("n", str(i).encode())]
            futures.append((key, producer.send(topic, key=key, value=value, headers=headers)))
        producer.flush()
        for key, future in futures:
            metadata = future.get(timeout=30)
            acked.append({"key": key.hex(), "partition": metadata.partition, "offset": metadata.offset})
        producer.close()
    records, offsets, _ = read_all(bootstrap, topic)
    # Looked up after the fact: the first offset at or after the time the produce began (the
    # first record's) and after the last record (none).
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    by_time = consumer.offsets_for_times({p: started_ms for p in partitions})
    later = consumer.offsets_for_times({p: int(time.time() * 1000) + 3_600_000 for p in partitions})
    consumer.close()
    return {
        "topics": listed,
        "codecs": [str(c) for c in used],
        "acked": acked,
        "records": records,
        "offsets": offsets,
        "by_time": {str(p.partition): None if o is None else o.offset for p, o in by_time.items()},
        "after_the_end": {str(p.partition): None if o is None else o.offset for p, o in later.items()},
    }


def group(bootstrap, topic, group_id, members):
    """Members of a consumer group share a topic; what each read, then what a later member
    of the same group finds left."""
    import threading

    seen = {}

    def member(name):
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=8000,
        )
        read = []
        for message in consumer:
            read.append([message.partition, message.offset])
            consumer.commit()
        seen[name] = {"read": read, "assignment": sorted(tp.partition for tp in consumer.assignment())}
        consumer.close()

    threads = [threading.Thread(target=member, args=(f"m{i}",)) for i in range(members)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    later = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        consumer_timeout_ms=4000,
    )
    left = [[m.partition, m.offset] for m in later]
    later.close()
    return {"members": seen, "left_after_commits": left}


def compat(bootstrap, topic):
    """What kafka-python observes that any correct broker decides alike, for the comparison
    with Apache Kafka (tests/all/kafka_compat.rs): keyed records with headers, tombstones and
    fixed timestamps in every compression, where they land and how they read back; offsets by
    time; a group's commits and what a later member finds left."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()
    base = 1_700_000_000_000
    acked = []
    for codec in codecs():
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec,
                                 enable_idempotence=True)
        futures = []
        for i in range(RECORDS_PER_COMPRESSION):
            n = len(acked) + len(futures)
            value = None if i % 10 == 3 else f"value {n}".encode() + bytes(range(i % 5))
            futures.append(producer.send(topic, key=f"key-{n % 40}".encode(), value=value,
                                         headers=[("n", str(n).encode())], timestamp_ms=base + n))
        producer.flush()
        acked.extend([f.get(timeout=30).partition, f.get(timeout=30).offset] for f in futures)
        producer.close()
    records, offsets, _ = read_all(bootstrap, topic)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    found = probe.offsets_for_times({p: base + 100 for p in partitions})
    probe.close()
    grouped = group(bootstrap, topic, f"{topic}-group", 1)
    return {
        "acked": acked,
        "records": records,
        "offsets": offsets,
        "by_time": {str(p.partition): None if o is None else [o.offset, o.timestamp]
                    for p, o in found.items()},
        "group_left_after_commits": grouped["left_after_commits"],
        "group_read": len(grouped["members"]["m0"]["read"]),
    }


def attempt(what):
    """What `what()` returned, or the error it raised, as text."""
    try:
        return {"ok": repr(what())}
    except Exception as error:  # noqa: BLE001 - the test compares what each broker says
        return {"error": f"{type(error).__name__}: {error}"}


def admin_scenario(bootstrap, topic):
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    out = {"cluster": attempt(admin.describe_cluster)}
    admin.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1, topic_configs={"retention.ms": "3600000"})]
    )
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    out["configs"] = repr(configs)
    out["more_partitions"] = attempt(lambda: admin.create_partitions({topic: NewPartitions(4)}))
    out["fewer_partitions"] = attempt(lambda: admin.create_partitions({topic: NewPartitions(1)}))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    out["partitions_after"] = sorted(consumer.partitions_for_topic(topic) or [])
    consumer.close()
    # A group with an offset committed and no members: its offsets and then itself deleted.
    group_id = f"{topic}-group"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    producer.send(topic, value=b"x", partition=0).get(timeout=30)
    producer.close()
    consumer.commit({partition: OffsetAndMetadata(1, "", -1)})
    consumer.close()
    out["offsets_before"] = repr(admin.list_group_offsets({group_id: None}))
    out["delete_offsets"] = attempt(lambda: admin.delete_group_offsets(group_id, [partition]))
    out["offsets_after"] = repr(admin.list_group_offsets({group_id: None}))
    out["delete_group"] = attempt(lambda: admin.delete_groups([group_id]))
    admin.close()
    return out


def idle(bootstrap, count):
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 100)), hard))
    host, port = bootstrap.rsplit(":", 1)
    held = [socket.create_connection((host, int(port))) for _ in range(count)]
    print(f"open {len(held)}", flush=True)
    sys.stdin.read()  # until the test closes it
    for connection in held:
        connection.close()


def sasl(bootstrap, user, password):
    def topics(**security):
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=3000, **security
        )
        try:
            return sorted(admin.list_topics())
        finally:
            admin.close()

    def plain(secret):
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": user,
            "sasl_plain_password": secret,
        }

    return {
        "right": attempt(lambda: topics(**plain(password))),
        "wrong": attempt(lambda: topics(**plain(password + "x"))),
        "none": attempt(topics),
    }


def main():
    bootstrap, scenario, topic = sys.argv[1:4]
    if scenario == "idle":
        idle(bootstrap, int(sys.argv[4]))
        return
    if scenario == "roundtrip":
        out = roundtrip(bootstrap, topic)
    elif scenario == "sasl":
        out = sasl(bootstrap, sys.argv[4], sys.argv[5])
    elif scenario == "admin":
        out = admin_scenario(bootstrap, topic)
    elif scenario == "group":
        out = group(bootstrap, topic, sys.argv[4], int(sys.argv[5]))
    elif scenario == "compat":
        out = compat(bootstrap, topic)
    elif scenario == "read":
        isolation = sys.argv[4] if len(sys.argv) > 4 else "read_uncommitted"
        records, offsets, _ = read_all(bootstrap, topic, isolation)
        out = {"records": records, "offsets": offsets}
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
