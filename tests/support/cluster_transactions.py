"""Transactions on a replicated Apache Kafka cluster, while one node is killed: the check of the
cluster the cluster-mode tests run on (tests/all/kafka_cluster.rs).

Usage: cluster_transactions.py <bootstrap list> <command that kills a node>

Creates topic `t` (6 partitions, 3 replicas), commits a transaction of 1,000 records, runs the
kill command, commits another 1,000 (min.insync.replicas=2 still holds with one node down),
and reads everything back with a read_committed consumer. Prints {"replicas": [...],
"isr": [...], "read": n, "distinct": n} as JSON.
"""

import json
import shlex
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, kill = sys.argv[1], sys.argv[2]
quiet = {"log_level": 0}
admin = AdminClient({"bootstrap.servers": bootstrap, **quiet})
for future in admin.create_topics([NewTopic("t", 6, 3)]).values():
    future.result()
# The topic's metadata reaches every broker a moment after it is created.
deadline = time.time() + 30
while True:
    partitions = list(admin.list_topics("t", timeout=10).topics["t"].partitions.values())
    if len(partitions) == 6 and all(len(p.isrs) == 3 for p in partitions):
        break
    if time.time() > deadline:
        break
    time.sleep(0.1)

producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "check", **quiet})
producer.init_transactions(60)
for first in (0, 1000):
    if first:
        subprocess.run(shlex.split(kill), check=True)
    producer.begin_transaction()
    for i in range(first, first + 1000):
        producer.produce("t", key=str(i % 10), value=str(i))
    producer.commit_transaction(60)

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", **quiet,
                     "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
consumer.subscribe(["t"])
values, deadline = [], time.time() + 90
while len(values) < 2000 and time.time() < deadline:
    message = consumer.poll(1)
    if message is not None and not message.error():
        values.append(message.value())
consumer.close()
print(json.dumps({
    "replicas": sorted(len(p.replicas) for p in partitions),
    "isr": sorted(len(p.isrs) for p in partitions),
    "read": len(values),
    "distinct": len(set(values)),
}))
