package sluice;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ClassicGroupDescription;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.ShareGroupDescription;
import org.apache.kafka.clients.admin.ShareMemberDescription;
import org.apache.kafka.clients.admin.SharePartitionOffsetInfo;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * The client side of the Kafka-protocol compatibility tests (issue 20): one scenario, run with the
 * official Java client against any Kafka-protocol server (Apache Kafka or Sluice), printing one
 * JSON object of observations on stdout. Keys are sorted and nothing depends on the clock or on
 * random ids, so the same server behaviour gives the same JSON; a refusal by the server is an
 * observation (an {"error": ExceptionClass, "message": ...} object), not a failure of the program.
 *
 * <pre>
 *   java -jar tests/kafka/target/kafka-script.jar --bootstrap 127.0.0.1:9092 produce-consume
 * </pre>
 *
 * Exit codes: 0 the scenario ran (whatever the server answered); 1 the program itself failed
 * (the JSON then has "harness_error"), or `ping` found no server; 2 bad arguments.
 * Progress and timings go to stderr.
 */
public final class KafkaScript {
  static final String USAGE =
      "usage: kafka-script --bootstrap HOST:PORT [--topic NAME] [--group NAME] [--timeout-ms N]"
          + " [--compact] SCENARIO\n"
          + "scenarios: ping, produce-consume, admin, unsupported, share";

  static final List<String> COMPRESSIONS = List.of("gzip", "snappy", "lz4", "zstd");
  static final int FIRST_RECORDS = 1000;
  static final int RECORDS_PER_COMPRESSION = 100;
  static final int SAMPLE_KEYS = 20;

  final String bootstrap;
  final String topic;
  final String group;
  final long timeoutMs;
  final long started = System.nanoTime();
  /**
   * Record i of produce-consume carries the timestamp base + i ms (CreateTime), so that the
   * offsets found by timestamp are the same in every run; the JSON shows timestamps as
   * differences from base only.
   */
  final long base = System.currentTimeMillis();

  KafkaScript(String bootstrap, String topic, String group, long timeoutMs) {
    this.bootstrap = bootstrap;
    this.topic = topic;
    this.group = group;
    this.timeoutMs = timeoutMs;
  }

  public static void main(String[] args) {
    String bootstrap = null;
    String topic = null;
    String group = null;
    String scenario = null;
    long timeoutMs = 15_000;
    boolean compact = false;
    try {
      for (int i = 0; i < args.length; i++) {
        switch (args[i]) {
          case "--bootstrap" -> bootstrap = args[++i];
          case "--topic" -> topic = args[++i];
          case "--group" -> group = args[++i];
          case "--timeout-ms" -> timeoutMs = Long.parseLong(args[++i]);
          case "--compact" -> compact = true;
          case "-h", "--help" -> {
            System.out.println(USAGE);
            System.exit(0);
          }
          default -> {
            if (args[i].startsWith("--") || scenario != null) {
              throw new IllegalArgumentException("unexpected argument " + args[i]);
            }
            scenario = args[i];
          }
        }
      }
    } catch (ArrayIndexOutOfBoundsException | IllegalArgumentException e) {
      System.err.println(e.getMessage() == null ? USAGE : e.getMessage() + "\n" + USAGE);
      System.exit(2);
    }
    if (bootstrap == null || scenario == null) {
      System.err.println(USAGE);
      System.exit(2);
    }
    Map<String, Object> out = new TreeMap<>();
    out.put("scenario", scenario);
    int code = 0;
    try {
      switch (scenario) {
        case "ping" -> {
          KafkaScript s = new KafkaScript(bootstrap, "", "", timeoutMs);
          code = s.ping(out);
        }
        case "produce-consume" -> new KafkaScript(
                bootstrap, or(topic, "t"), or(group, "g"), timeoutMs)
            .produceConsume(out);
        case "admin" -> new KafkaScript(
                bootstrap, or(topic, "admin-t"), or(group, "admin-g"), timeoutMs)
            .admin(out);
        case "unsupported" -> new KafkaScript(
                bootstrap, or(topic, "txn-t"), or(group, "txn-g"), timeoutMs)
            .unsupported(out);
        case "share" -> new KafkaScript(
                bootstrap, or(topic, "share-t"), or(group, "share-g"), timeoutMs)
            .share(out);
        default -> {
          System.err.println("unknown scenario " + scenario + "\n" + USAGE);
          System.exit(2);
        }
      }
    } catch (Throwable t) {
      out.put("harness_error", error(t));
      code = 1;
    }
    System.out.println(Json.write(out, !compact));
    System.out.flush();
    // Client threads left behind by a server that never answered must not keep the JVM alive.
    System.exit(code);
  }

  static String or(String value, String fallback) {
    return value == null ? fallback : value;
  }

  void progress(String what) {
    System.err.printf("[kafka-script %6d ms] %s%n", (System.nanoTime() - started) / 1_000_000, what);
  }

  // ---- clients ----

  Properties common() {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(AdminClientConfig.CLIENT_ID_CONFIG, "sluice-kafka-script");
    p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, (int) Math.min(timeoutMs, 10_000));
    p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, (int) timeoutMs);
    return p;
  }

  Admin admin() {
    return Admin.create(common());
  }

  KafkaProducer<String, String> producer(String compression, String transactionalId) {
    Properties p = common();
    p.remove(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
    p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
    p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
    p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, timeoutMs);
    p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, (int) Math.max(2 * timeoutMs, 20_000));
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    if (transactionalId != null) {
      p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
      p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 30_000);
    }
    return new KafkaProducer<>(p);
  }

  KafkaConsumer<String, String> consumer(String groupId, String isolation) {
    Properties p = common();
    p.put(ConsumerConfig.GROUP_ID_CONFIG, groupId);
    // The classic protocol (JoinGroup/SyncGroup/Heartbeat), which issue 20 asks Sluice to speak.
    p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    return new KafkaConsumer<>(p);
  }

  // ---- steps and errors ----

  interface Step<T> {
    T run() throws Exception;
  }

  /** Runs a step: "ok" (or what it returned, when that is not null) or the error it threw. */
  static Object outcome(Step<?> step) {
    try {
      Object r = step.run();
      return r == null ? "ok" : r;
    } catch (Throwable t) {
      return error(t);
    }
  }

  /** {"error": SimpleClassName, "message": ...}, with the futures' wrappers taken off. */
  static Map<String, Object> error(Throwable t) {
    Throwable e = unwrap(t);
    Map<String, Object> m = new TreeMap<>();
    m.put("error", e.getClass().getSimpleName());
    m.put("message", e.getMessage());
    if (e.getCause() != null && e.getCause() != e) {
      m.put("cause", e.getCause().getClass().getSimpleName());
    }
    return m;
  }

  static Throwable unwrap(Throwable t) {
    while ((t instanceof ExecutionException || t instanceof CompletionException)
        && t.getCause() != null) {
      t = t.getCause();
    }
    return t;
  }

  static boolean isError(Object outcome) {
    return outcome instanceof Map<?, ?> m && m.containsKey("error");
  }

  static boolean isError(Object outcome, String errorClass) {
    return outcome instanceof Map<?, ?> m && errorClass.equals(m.get("error"));
  }

  <T> T get(org.apache.kafka.common.KafkaFuture<T> f) throws Exception {
    return f.get(timeoutMs + 5_000, TimeUnit.MILLISECONDS);
  }

  static String tp(int partition) {
    return Integer.toString(partition);
  }

  // ---- ping: is a Kafka-protocol server answering (ApiVersions, then DescribeCluster)? ----

  int ping(Map<String, Object> out) {
    try (Admin admin = admin()) {
      DescribeClusterResult c = admin.describeCluster();
      Collection<Node> nodes = get(c.nodes());
      out.put("ok", true);
      out.put("nodes", nodes.size());
      out.put("cluster_id_set", get(c.clusterId()) != null);
      return 0;
    } catch (Throwable t) {
      out.put("ok", false);
      out.put("describe_cluster", error(t));
      return 1;
    }
  }

  // ---- produce-consume ----

  /** One record the script sent: what it sent and what the producer was told. */
  static final class Sent {
    final int i;
    final String compression;
    Future<RecordMetadata> future;
    RecordMetadata metadata;
    Throwable failure;

    Sent(int i, String compression) {
      this.i = i;
      this.compression = compression;
    }
  }

  static String key(int i) {
    return "k" + i;
  }

  static String value(int i) {
    return "v" + i;
  }

  /** Two headers on every record: "h" = "h<i>", and "nullable" with a null value. */
  static RecordHeaders headers(int i) {
    RecordHeaders h = new RecordHeaders();
    h.add("h", ("h" + i).getBytes(StandardCharsets.UTF_8));
    h.add("nullable", null);
    return h;
  }

  static boolean headersMatch(int i, Iterable<Header> got) {
    List<Header> a = new ArrayList<>();
    got.forEach(a::add);
    List<Header> b = new ArrayList<>();
    headers(i).forEach(b::add);
    if (a.size() != b.size()) {
      return false;
    }
    for (int j = 0; j < a.size(); j++) {
      if (!a.get(j).key().equals(b.get(j).key())
          || !Arrays.equals(a.get(j).value(), b.get(j).value())) {
        return false;
      }
    }
    return true;
  }

  /** Sends records [from, from+count) with one producer; returns the producer's outcome. */
  Map<String, Object> produce(String compression, int from, int count, List<Sent> sent) {
    Map<String, Object> o = new TreeMap<>();
    List<Sent> mine = new ArrayList<>();
    Object closed;
    try (KafkaProducer<String, String> producer = producer(compression, null)) {
      // A send that fails at once (no metadata within max.block.ms, say) fails the rest the same
      // way: each would wait as long again.
      Throwable refused = null;
      for (int i = from; i < from + count; i++) {
        Sent s = new Sent(i, compression);
        mine.add(s);
        if (refused != null) {
          s.failure = refused;
          continue;
        }
        try {
          s.future = producer.send(
              new ProducerRecord<>(topic, null, base + i, key(i), value(i), headers(i)));
          if (s.future.isDone()) {
            // A future failed at once: the client gave up before sending (metadata timeout).
            s.future.get();
          }
        } catch (Throwable t) {
          s.failure = t;
          refused = t;
        }
      }
      closed = outcome(() -> {
        producer.flush();
        return null;
      });
    } catch (Throwable t) {
      closed = error(t);
    }
    int acked = 0;
    Map<String, Integer> errors = new TreeMap<>();
    Map<String, Object> firstError = null;
    for (Sent s : mine) {
      if (s.future != null && s.failure == null) {
        try {
          s.metadata = s.future.get(1, TimeUnit.MILLISECONDS);
        } catch (Throwable t) {
          s.failure = t;
        }
      }
      if (s.metadata != null) {
        acked++;
      } else {
        Map<String, Object> e = error(s.failure);
        errors.merge((String) e.get("error"), 1, Integer::sum);
        if (firstError == null) {
          firstError = e;
        }
      }
    }
    sent.addAll(mine);
    o.put("sent", count);
    o.put("acked", acked);
    o.put("errors", errors);
    if (firstError != null) {
      o.put("first_error", firstError);
    }
    o.put("flush", closed);
    return o;
  }

  void produceConsume(Map<String, Object> out) throws Exception {
    out.put("topic", topic);
    out.put("group", group);
    try (Admin admin = admin()) {
      progress("create topic " + topic);
      out.put("create_topic", outcome(() -> {
        get(admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all());
        return null;
      }));

      // Produce: 1,000 uncompressed, then 100 with each compression type.
      List<Sent> sent = new ArrayList<>();
      Map<String, Object> produced = new TreeMap<>();
      progress("produce " + FIRST_RECORDS + " records, compression none");
      produced.put("none", produce("none", 0, FIRST_RECORDS, sent));
      int next = FIRST_RECORDS;
      for (String c : COMPRESSIONS) {
        progress("produce " + RECORDS_PER_COMPRESSION + " records, compression " + c);
        produced.put(c, produce(c, next, RECORDS_PER_COMPRESSION, sent));
        next += RECORDS_PER_COMPRESSION;
      }
      out.put("produce", produced);
      Map<Integer, Sent> byIndex = new HashMap<>();
      int acked = 0;
      for (Sent s : sent) {
        byIndex.put(s.i, s);
        if (s.metadata != null) {
          acked++;
        }
      }

      // Consume everything from the earliest offset as group g, then commit.
      progress("consume as group " + group);
      Tally tally = new Tally(byIndex);
      Map<Integer, ConsumerRecord<String, String>> consumed = tally.consumed;
      Map<String, Object> consume = new TreeMap<>();
      try (KafkaConsumer<String, String> consumer = consumer(group, "read_uncommitted")) {
        consumer.subscribe(List.of(topic));
        // Poll until every acknowledged record has arrived, or 30 s (3 s when none was acked).
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(acked > 0 ? 30 : 3);
        while (System.nanoTime() < deadline && (acked == 0 || consumed.size() < acked)) {
          consumer.poll(Duration.ofMillis(200)).forEach(tally::add);
        }
        // A last short poll: records beyond those sent (duplicates of a retried produce) show here.
        consumer.poll(Duration.ofMillis(300)).forEach(tally::add);
        consume.put("assignment", new TreeSet<>(
            consumer.assignment().stream().map(TopicPartition::partition).toList()));
        consume.put("commit", outcome(() -> {
          consumer.commitSync(Duration.ofMillis(timeoutMs));
          return null;
        }));
      } catch (Throwable t) {
        consume.put("consumer_error", error(t));
      }
      consume.put("records", tally.records);
      consume.put("distinct_keys", consumed.size());
      consume.put("duplicates", tally.duplicates);
      consume.put("unknown_keys", tally.unknownKeys);
      int missing = 0;
      for (Sent s : sent) {
        if (s.metadata != null && !consumed.containsKey(s.i)) {
          missing++;
        }
      }
      consume.put("missing_acked", missing);

      Map<String, Object> perPartition = new TreeMap<>();
      for (Map.Entry<Integer, List<Long>> e : tally.offsetsByPartition.entrySet()) {
        List<Long> offs = e.getValue();
        Map<String, Object> p = new TreeMap<>();
        p.put("count", offs.size());
        p.put("first_offset", offs.get(0));
        p.put("last_offset", offs.get(offs.size() - 1));
        boolean ascending = true;
        int gaps = 0;
        for (int j = 1; j < offs.size(); j++) {
          if (offs.get(j) <= offs.get(j - 1)) {
            ascending = false;
          } else if (offs.get(j) != offs.get(j - 1) + 1) {
            gaps++;
          }
        }
        p.put("ascending", ascending);
        p.put("gaps", gaps);
        perPartition.put(tp(e.getKey()), p);
      }
      consume.put("partitions", perPartition);

      // Where the keys landed, and whether every record read back as it was sent.
      Map<String, Object> sample = new TreeMap<>();
      for (int i = 0; i < SAMPLE_KEYS; i++) {
        ConsumerRecord<String, String> r = consumed.get(i);
        sample.put(key(i), r == null ? null : r.partition());
      }
      out.put("key_partition_sample", sample);
      boolean partitionsMatchProducer = true;
      boolean partitionsMatchMurmur2 = true;
      boolean offsetsMatchProducer = true;
      boolean valuesMatch = true;
      boolean headersMatch = true;
      boolean timestampsMatchProducer = true;
      boolean timestampsMatchSent = true;
      Set<String> timestampTypes = new TreeSet<>();
      Map<String, Integer> consumedByCompression = new TreeMap<>();
      for (Map.Entry<Integer, ConsumerRecord<String, String>> e : consumed.entrySet()) {
        Sent s = byIndex.get(e.getKey());
        ConsumerRecord<String, String> r = e.getValue();
        consumedByCompression.merge(s.compression, 1, Integer::sum);
        byte[] keyBytes = r.key().getBytes(StandardCharsets.UTF_8);
        if (Utils.toPositive(Utils.murmur2(keyBytes)) % 3 != r.partition()) {
          partitionsMatchMurmur2 = false;
        }
        if (!value(s.i).equals(r.value())) {
          valuesMatch = false;
        }
        if (!headersMatch(s.i, r.headers())) {
          headersMatch = false;
        }
        timestampTypes.add(r.timestampType().toString());
        if (r.timestamp() != base + s.i) {
          timestampsMatchSent = false;
        }
        if (s.metadata != null) {
          if (s.metadata.partition() != r.partition()) {
            partitionsMatchProducer = false;
          }
          if (s.metadata.offset() != r.offset()) {
            offsetsMatchProducer = false;
          }
          if (s.metadata.timestamp() != r.timestamp()) {
            timestampsMatchProducer = false;
          }
        }
      }
      consume.put("by_compression", consumedByCompression);
      out.put("consume", consume);
      Map<String, Object> checks = new TreeMap<>();
      checks.put("partitions_match_producer", partitionsMatchProducer);
      checks.put("partitions_match_default_partitioner", partitionsMatchMurmur2);
      checks.put("offsets_match_producer", offsetsMatchProducer);
      checks.put("values_match", valuesMatch);
      checks.put("headers_round_trip", headersMatch);
      checks.put("timestamps_match_producer", timestampsMatchProducer);
      checks.put("timestamps_match_sent", timestampsMatchSent);
      checks.put("timestamp_types", timestampTypes);
      out.put("round_trip", checks);

      // Committed offsets of the group, and the topic's end offsets.
      progress("list committed offsets and end offsets");
      out.put("committed", outcome(() -> {
        Map<TopicPartition, OffsetAndMetadata> offs =
            get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        Map<String, Object> m = new TreeMap<>();
        offs.forEach((k, v) -> m.put(k.topic() + "-" + k.partition(), v == null ? null : v.offset()));
        return m;
      }));
      List<TopicPartition> partitions =
          List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1),
              new TopicPartition(topic, 2));
      Map<String, Object> ends = new TreeMap<>();
      ends.put("earliest", outcome(() -> listOffsets(admin, partitions, p -> OffsetSpec.earliest())));
      ends.put("latest", outcome(() -> listOffsets(admin, partitions, p -> OffsetSpec.latest())));
      out.put("end_offsets", ends);

      // ListOffsets by timestamp (record i has the timestamp base + i): the first record's, the
      // 500th's, the first gzip record's, and one after everything (no offset).
      progress("list offsets by timestamp");
      Map<String, Object> byTs = new TreeMap<>();
      Map<String, Long> lookups = Map.of("first_record", 0L, "record_500", 500L,
          "first_gzip_record", (long) FIRST_RECORDS, "after_last", 3_600_000L);
      for (Map.Entry<String, Long> e : lookups.entrySet()) {
        long ts = base + e.getValue();
        byTs.put(e.getKey(), outcome(() -> timestampLookup(admin, partitions, ts, consumed)));
      }
      out.put("offsets_for_timestamp", byTs);
    }
    progress("done");
  }

  /** What the consumer read: every offset per partition, and the first record of each key. */
  static final class Tally {
    final Map<Integer, Sent> sent;
    final Map<Integer, ConsumerRecord<String, String>> consumed = new HashMap<>();
    final Map<Integer, List<Long>> offsetsByPartition = new TreeMap<>();
    int records;
    int duplicates;
    int unknownKeys;

    Tally(Map<Integer, Sent> sent) {
      this.sent = sent;
    }

    void add(ConsumerRecord<String, String> r) {
      records++;
      offsetsByPartition.computeIfAbsent(r.partition(), p -> new ArrayList<>()).add(r.offset());
      Integer i = indexOf(r.key());
      if (i == null || !sent.containsKey(i)) {
        unknownKeys++;
      } else if (consumed.putIfAbsent(i, r) != null) {
        duplicates++;
      }
    }
  }

  static Integer indexOf(String key) {
    if (key == null || !key.startsWith("k")) {
      return null;
    }
    try {
      return Integer.parseInt(key.substring(1));
    } catch (NumberFormatException e) {
      return null;
    }
  }

  interface SpecFor {
    OffsetSpec spec(TopicPartition p);
  }

  Map<String, Object> listOffsets(Admin admin, List<TopicPartition> partitions, SpecFor spec)
      throws Exception {
    Map<TopicPartition, OffsetSpec> req = new HashMap<>();
    for (TopicPartition p : partitions) {
      req.put(p, spec.spec(p));
    }
    Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> res =
        get(admin.listOffsets(req).all());
    Map<String, Object> m = new TreeMap<>();
    res.forEach((k, v) -> m.put(tp(k.partition()), v.offset()));
    return m;
  }

  /**
   * Per partition: the offset answered for `ts` (-1: none), the timestamp answered less base (-1:
   * none), whether that timestamp is the one of the record read at that offset, and whether the
   * offset is the first one read with a timestamp at or after `ts` (what the protocol promises).
   */
  Map<String, Object> timestampLookup(Admin admin, List<TopicPartition> partitions, long ts,
      Map<Integer, ConsumerRecord<String, String>> consumed) throws Exception {
    Map<TopicPartition, OffsetSpec> req = new HashMap<>();
    for (TopicPartition p : partitions) {
      req.put(p, OffsetSpec.forTimestamp(ts));
    }
    Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> res =
        get(admin.listOffsets(req).all());
    Map<Integer, Map<Long, ConsumerRecord<String, String>>> read = new HashMap<>();
    for (ConsumerRecord<String, String> r : consumed.values()) {
      read.computeIfAbsent(r.partition(), p -> new TreeMap<>()).put(r.offset(), r);
    }
    Map<String, Object> m = new TreeMap<>();
    for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e : res.entrySet()) {
      int p = e.getKey().partition();
      ListOffsetsResult.ListOffsetsResultInfo info = e.getValue();
      Map<Long, ConsumerRecord<String, String>> recs = read.getOrDefault(p, Map.of());
      Long expected = null;
      for (ConsumerRecord<String, String> r : recs.values()) {
        if (r.timestamp() >= ts) {
          expected = r.offset();
          break;
        }
      }
      Map<String, Object> o = new TreeMap<>();
      o.put("offset", info.offset());
      o.put("timestamp_minus_base", info.timestamp() < 0 ? info.timestamp() : info.timestamp() - base);
      ConsumerRecord<String, String> at = recs.get(info.offset());
      o.put("timestamp_is_records", at != null && at.timestamp() == info.timestamp());
      o.put("is_first_at_or_after", expected == null ? info.offset() < 0
          : expected == info.offset());
      m.put(tp(p), o);
    }
    return m;
  }

  // ---- admin ----

  void admin(Map<String, Object> out) throws Exception {
    out.put("topic", topic);
    out.put("group", group);
    try (Admin admin = admin()) {
      progress("create topic " + topic);
      out.put("create_topic", outcome(() -> {
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        return null;
      }));
      out.put("create_topic_again", outcome(() -> {
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        return null;
      }));
      out.put("describe_topic", outcome(() -> describeTopic(admin, 1)));

      progress("create partitions");
      out.put("create_partitions", outcome(() -> {
        get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all());
        return null;
      }));
      out.put("describe_topic_after_grow", outcome(() -> describeTopic(admin, 3)));
      out.put("create_partitions_shrink", outcome(() -> {
        get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(2))).all());
        return null;
      }));

      progress("describe configs");
      out.put("describe_configs", outcome(() -> {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config c = get(admin.describeConfigs(List.of(r)).all()).get(r);
        Map<String, Object> m = new TreeMap<>();
        Map<String, Object> selected = new TreeMap<>();
        for (String name : List.of("cleanup.policy", "compression.type", "max.message.bytes",
            "message.timestamp.type", "retention.bytes", "retention.ms")) {
          ConfigEntry e = c.get(name);
          selected.put(name, e == null ? null : e.value());
        }
        m.put("selected", selected);
        m.put("entries", c.entries().size());
        return m;
      }));
      out.put("describe_configs_unknown_topic", outcome(() -> {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic + "-missing");
        get(admin.describeConfigs(List.of(r)).all());
        return null;
      }));

      progress("describe cluster");
      out.put("describe_cluster", outcome(() -> {
        DescribeClusterResult c = admin.describeCluster();
        Map<String, Object> m = new TreeMap<>();
        m.put("nodes", get(c.nodes()).size());
        Node controller = get(c.controller());
        m.put("controller_set", controller != null && !controller.isEmpty() && controller.id() >= 0);
        m.put("cluster_id_set", get(c.clusterId()) != null);
        return m;
      }));

      // A consumer joins the group and commits; the group is listed and described meanwhile.
      progress("group " + group + ": produce 3 records, a consumer joins and commits");
      out.put("produce", outcome(() -> {
        try (KafkaProducer<String, String> p = producer("none", null)) {
          for (int partition = 0; partition < 3; partition++) {
            p.send(new ProducerRecord<>(topic, partition, "a" + partition, "b" + partition))
                .get(timeoutMs, TimeUnit.MILLISECONDS);
          }
        }
        return null;
      }));
      Map<String, Object> member = new TreeMap<>();
      KafkaConsumer<String, String> consumer = null;
      try {
        consumer = consumer(group, "read_uncommitted");
        consumer.subscribe(List.of(topic));
        int read = 0;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < deadline && read < 3) {
          read += consumer.poll(Duration.ofMillis(200)).count();
        }
        member.put("records_read", read);
        member.put("assigned_partitions", consumer.assignment().size());
        KafkaConsumer<String, String> c = consumer;
        member.put("commit", outcome(() -> {
          c.commitSync(Duration.ofMillis(timeoutMs));
          return null;
        }));
      } catch (Throwable t) {
        member.put("consumer_error", error(t));
      }
      out.put("consumer", member);

      progress("list and describe groups while the consumer is in");
      out.put("list_groups_joined", outcome(() -> listGroup(admin)));
      out.put("describe_groups_joined", outcome(() -> describeGroup(admin)));
      out.put("describe_classic_groups_joined", outcome(() -> describeClassicGroup(admin)));
      out.put("delete_groups_joined", outcome(() -> {
        get(admin.deleteConsumerGroups(List.of(group)).all());
        return null;
      }));
      out.put("delete_offsets_subscribed", outcome(() -> {
        get(admin.deleteConsumerGroupOffsets(group, Set.of(new TopicPartition(topic, 0))).all());
        return null;
      }));

      progress("the consumer leaves");
      if (consumer != null) {
        KafkaConsumer<String, String> c = consumer;
        out.put("consumer_close", outcome(() -> {
          c.close(Duration.ofMillis(timeoutMs));
          return null;
        }));
      }
      out.put("describe_groups_left", outcome(() -> describeGroup(admin)));
      out.put("committed_left", outcome(() -> committed(admin)));
      out.put("delete_offsets", outcome(() -> {
        get(admin.deleteConsumerGroupOffsets(group, Set.of(new TopicPartition(topic, 0))).all());
        return null;
      }));
      out.put("committed_after_delete_offsets", outcome(() -> committed(admin)));

      progress("delete the group");
      out.put("delete_groups", outcome(() -> {
        get(admin.deleteConsumerGroups(List.of(group)).all());
        return null;
      }));
      out.put("delete_groups_again", outcome(() -> {
        get(admin.deleteConsumerGroups(List.of(group)).all());
        return null;
      }));
      out.put("list_groups_deleted", outcome(() -> listGroup(admin)));

      progress("delete the topic");
      out.put("delete_topics", outcome(() -> {
        get(admin.deleteTopics(List.of(topic)).all());
        return null;
      }));
      out.put("topic_gone", outcome(() -> {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (System.nanoTime() < deadline) {
          if (!get(admin.listTopics().names()).contains(topic)) {
            return true;
          }
          Thread.sleep(100);
        }
        return false;
      }));
      out.put("delete_topics_again", outcome(() -> {
        get(admin.deleteTopics(List.of(topic)).all());
        return null;
      }));
    }
    progress("done");
  }

  /** Partition count and replication; waits up to 10 s for `partitions` to show. */
  Map<String, Object> describeTopic(Admin admin, int partitions) throws Exception {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    TopicDescription d;
    while (true) {
      d = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
      if (d.partitions().size() >= partitions || System.nanoTime() > deadline) {
        break;
      }
      Thread.sleep(100);
    }
    Map<String, Object> m = new TreeMap<>();
    m.put("partitions", d.partitions().size());
    m.put("internal", d.isInternal());
    Set<Integer> replicas = new TreeSet<>();
    boolean leaders = true;
    for (TopicPartitionInfo p : d.partitions()) {
      replicas.add(p.replicas().size());
      leaders &= p.leader() != null && !p.leader().isEmpty();
    }
    m.put("replication_factors", replicas);
    m.put("leaders_set", leaders);
    return m;
  }

  Object listGroup(Admin admin) throws Exception {
    Collection<GroupListing> all = get(admin.listGroups().all());
    for (GroupListing g : all) {
      if (g.groupId().equals(group)) {
        Map<String, Object> m = new TreeMap<>();
        m.put("listed", true);
        m.put("type", g.type().map(Object::toString).orElse(null));
        m.put("protocol", g.protocol());
        m.put("state", g.groupState().map(Object::toString).orElse(null));
        return m;
      }
    }
    return Map.of("listed", false);
  }

  Map<String, Object> describeGroup(Admin admin) throws Exception {
    ConsumerGroupDescription d =
        get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
    Map<String, Object> m = new TreeMap<>();
    m.put("state", String.valueOf(d.groupState()));
    m.put("type", String.valueOf(d.type()));
    m.put("members", d.members().size());
    m.put("partition_assignor", d.partitionAssignor());
    m.put("simple", d.isSimpleConsumerGroup());
    m.put("coordinator_set", d.coordinator() != null && !d.coordinator().isEmpty());
    int assigned = 0;
    for (MemberDescription md : d.members()) {
      assigned += md.assignment().topicPartitions().size();
    }
    m.put("assigned_partitions", assigned);
    return m;
  }

  Map<String, Object> describeClassicGroup(Admin admin) throws Exception {
    ClassicGroupDescription d = get(admin.describeClassicGroups(List.of(group)).all()).get(group);
    Map<String, Object> m = new TreeMap<>();
    m.put("state", String.valueOf(d.state()));
    m.put("protocol", d.protocol());
    m.put("protocol_data", d.protocolData());
    m.put("members", d.members().size());
    return m;
  }

  Map<String, Object> committed(Admin admin) throws Exception {
    Map<TopicPartition, OffsetAndMetadata> offs =
        get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
    Map<String, Object> m = new TreeMap<>();
    offs.forEach((k, v) -> m.put(k.topic() + "-" + k.partition(), v == null ? null : v.offset()));
    return m;
  }

  // ---- unsupported: transactions (Sluice answers them with a protocol error) ----

  // ---- share: a share group (KIP-932) with KafkaShareConsumer ----

  static final int SHARE_RECORDS = 20;

  KafkaShareConsumer<String, String> shareConsumer(String mode) {
    Properties p = common();
    p.remove(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG);
    p.remove(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    p.put("share.acknowledgement.mode", mode);
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    return new KafkaShareConsumer<>(p);
  }

  /**
   * 20 records on 2 partitions through a share group: one member acknowledges explicitly,
   * accepting all but v3 (released, so delivered again with delivery count 2, then accepted)
   * and v5 (rejected); a second member then finds nothing left.
   */
  void share(Map<String, Object> out) throws Exception {
    try (Admin admin = admin()) {
      out.put("create_topic", outcome(() -> get(admin.createTopics(
          List.of(new NewTopic(topic, 2, (short) 1))).all())));
      // Kafka's share groups start at the latest record unless told otherwise.
      ConfigResource resource = new ConfigResource(ConfigResource.Type.GROUP, group);
      AlterConfigOp earliest = new AlterConfigOp(
          new ConfigEntry("share.auto.offset.reset", "earliest"), AlterConfigOp.OpType.SET);
      out.put("set_auto_offset_reset", outcome(() -> get(admin.incrementalAlterConfigs(
          Map.of(resource, List.of(earliest))).all())));
    }
    try (KafkaProducer<String, String> producer = producer("none", null)) {
      for (int i = 0; i < SHARE_RECORDS; i++) {
        producer.send(new ProducerRecord<>(topic, key(i), value(i))).get();
      }
    }
    progress("share: produced " + SHARE_RECORDS);
    TreeSet<String> first = new TreeSet<>();
    TreeSet<String> again = new TreeSet<>();
    List<String> commitErrors = new ArrayList<>();
    List<String> outcomes = new ArrayList<>();
    long deadline = System.currentTimeMillis() + 4 * timeoutMs;
    try (KafkaShareConsumer<String, String> consumer = shareConsumer("explicit")) {
      consumer.subscribe(List.of(topic));
      while ((first.size() < SHARE_RECORDS || !again.contains("v3:2"))
          && System.currentTimeMillis() < deadline) {
        ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(500));
        for (ConsumerRecord<String, String> r : records) {
          short count = r.deliveryCount().orElse((short) -1);
          AcknowledgeType type = AcknowledgeType.ACCEPT;
          if (count == 1) {
            first.add(r.value());
            if (r.value().equals("v3")) {
              type = AcknowledgeType.RELEASE;
            } else if (r.value().equals("v5")) {
              type = AcknowledgeType.REJECT;
            }
          } else {
            again.add(r.value() + ":" + count);
          }
          if (!r.key().equals("k" + r.value().substring(1))) {
            outcomes.add("key " + r.key() + " with value " + r.value());
          }
          consumer.acknowledge(r, type);
        }
        if (!records.isEmpty()) {
          Map<TopicIdPartition, Optional<KafkaException>> committed = consumer.commitSync();
          committed.values().forEach(e -> e.ifPresent(x -> commitErrors.add(error(x).toString())));
        }
      }
      out.put("described_with_a_member", describeShareGroup());
    }
    out.put("first_deliveries", new ArrayList<>(first));
    out.put("redelivered", new ArrayList<>(again));
    out.put("commit_errors", commitErrors);
    out.put("mismatched", outcomes);
    progress("share: first member done");
    int left = 0;
    try (KafkaShareConsumer<String, String> consumer = shareConsumer("implicit")) {
      consumer.subscribe(List.of(topic));
      long until = System.currentTimeMillis() + 3_000;
      while (System.currentTimeMillis() < until) {
        left += consumer.poll(Duration.ofMillis(500)).count();
      }
    }
    out.put("left_for_a_second_member", left);
    out.put("described_at_the_end", describeShareGroup());
    out.put("start_offsets_at_the_end", shareGroupStartOffsets());
    out.put("listed_at_the_end", outcome(() -> {
      try (Admin admin = admin()) {
        return listGroup(admin);
      }
    }));
    out.put("unknown_group_described", outcome(() -> {
      try (Admin admin = admin()) {
        return get(admin.describeShareGroups(List.of("no-such-share-group")).all()).toString();
      }
    }));
  }

  /** The share group as Admin.describeShareGroups (ShareGroupDescribe) sees it. */
  Object describeShareGroup() {
    return outcome(() -> {
      try (Admin admin = admin()) {
        ShareGroupDescription d = get(admin.describeShareGroups(List.of(group)).all()).get(group);
        Map<String, Object> m = new TreeMap<>();
        m.put("group", d.groupId());
        m.put("state", d.groupState().toString());
        List<Object> members = new ArrayList<>();
        for (ShareMemberDescription member : d.members()) {
          Map<String, Object> one = new TreeMap<>();
          one.put("client_id", member.clientId());
          one.put("assigned", new TreeSet<>(member.assignment().topicPartitions().stream()
              .map(TopicPartition::toString).toList()));
          members.add(one);
        }
        m.put("members", members);
        return m;
      }
    });
  }

  /**
   * Each partition's share-partition start offset as Admin.listShareGroupOffsets
   * (DescribeShareGroupOffsets) gives it: every record before it is done.
   */
  Object shareGroupStartOffsets() {
    return outcome(() -> {
      try (Admin admin = admin()) {
        Map<TopicPartition, SharePartitionOffsetInfo> offsets = get(admin.listShareGroupOffsets(
            Map.of(group, new ListShareGroupOffsetsSpec())).partitionsToOffsetInfo(group));
        Map<String, Object> m = new TreeMap<>();
        offsets.forEach((tp, info) -> m.put(tp.toString(), info == null ? null : info.startOffset()));
        return m;
      }
    });
  }

  void unsupported(Map<String, Object> out) throws Exception {
    out.put("topic", topic);
    try (Admin admin = admin()) {
      out.put("create_topic", outcome(() -> {
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        return null;
      }));
    }
    progress("transactional producer: initTransactions");
    KafkaProducer<String, String> producer = null;
    try {
      producer = producer("none", "sluice-kafka-script-txn");
      KafkaProducer<String, String> p = producer;
      Object init = outcome(() -> {
        p.initTransactions();
        return null;
      });
      out.put("init_transactions", init);
      if (!isError(init)) {
        progress("transaction: one record, commit");
        out.put("commit_transaction", outcome(() -> {
          p.beginTransaction();
          p.send(new ProducerRecord<>(topic, "txn-k", "txn-v")).get(timeoutMs, TimeUnit.MILLISECONDS);
          p.commitTransaction();
          return null;
        }));
      }
    } catch (Throwable t) {
      out.put("producer_error", error(t));
    } finally {
      if (producer != null) {
        producer.close(Duration.ofSeconds(5));
      }
    }
    progress("done");
  }

  // ---- JSON ----

  /** A small JSON writer: maps are written with their keys sorted, so the output is stable. */
  static final class Json {
    static String write(Object o, boolean pretty) {
      StringBuilder sb = new StringBuilder();
      write(sb, o, pretty, 0);
      return sb.toString();
    }

    static void newline(StringBuilder sb, boolean pretty, int depth) {
      if (pretty) {
        sb.append('\n');
        sb.append("  ".repeat(depth));
      }
    }

    static void write(StringBuilder sb, Object o, boolean pretty, int depth) {
      if (o == null) {
        sb.append("null");
      } else if (o instanceof Boolean || o instanceof Integer || o instanceof Long
          || o instanceof Short) {
        sb.append(o);
      } else if (o instanceof Number n) {
        sb.append(n.toString());
      } else if (o instanceof Map<?, ?> map) {
        TreeMap<String, Object> sorted = new TreeMap<>();
        map.forEach((k, v) -> sorted.put(String.valueOf(k), v));
        if (sorted.isEmpty()) {
          sb.append("{}");
          return;
        }
        sb.append('{');
        boolean firstEntry = true;
        for (Map.Entry<String, Object> e : sorted.entrySet()) {
          if (!firstEntry) {
            sb.append(',');
          }
          firstEntry = false;
          newline(sb, pretty, depth + 1);
          string(sb, e.getKey());
          sb.append(pretty ? ": " : ":");
          write(sb, e.getValue(), pretty, depth + 1);
        }
        newline(sb, pretty, depth);
        sb.append('}');
      } else if (o instanceof Collection<?> c) {
        if (c.isEmpty()) {
          sb.append("[]");
          return;
        }
        sb.append('[');
        boolean firstItem = true;
        for (Object v : c) {
          if (!firstItem) {
            sb.append(pretty ? ", " : ",");
          }
          firstItem = false;
          write(sb, v, pretty, depth + 1);
        }
        sb.append(']');
      } else if (o instanceof Optional<?> opt) {
        write(sb, opt.orElse(null), pretty, depth);
      } else {
        string(sb, o.toString());
      }
    }

    static void string(StringBuilder sb, String s) {
      sb.append('"');
      for (int i = 0; i < s.length(); i++) {
        char ch = s.charAt(i);
        switch (ch) {
          case '"' -> sb.append("\\\"");
          case '\\' -> sb.append("\\\\");
          case '\n' -> sb.append("\\n");
          case '\r' -> sb.append("\\r");
          case '\t' -> sb.append("\\t");
          default -> {
            if (ch < 0x20) {
              sb.append(String.format("\\u%04x", (int) ch));
            } else {
              sb.append(ch);
            }
          }
        }
      }
      sb.append('"');
    }
  }
}
