"""After the storm: what is on Kafka (every topic read from the beginning), in the database and
in the receiver's log, held against what the load was told. Each check returns
(checked, [violation examples]); an empty list passes."""

import json
import threading
import time
import uuid
from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

CHANGES = ("create", "update", "complete", "cancel_recurrence", "delete")


class Kafka:
    def __init__(self, brokers):
        self.brokers = brokers

    def consumer(self, group):
        return Consumer({"bootstrap.servers": self.brokers, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": True, "socket.timeout.ms": 30000})

    def partitions(self, topic, timeout=30):
        c = self.consumer(f"chaos-reader-{uuid.uuid4()}")
        try:
            md = c.list_topics(topic, timeout=timeout)
            return sorted(md.topics[topic].partitions)
        finally:
            c.close()

    def committed(self, group, topic, parts, timeout=30):
        """The group's committed offsets (an OffsetFetch; this does not join the group)."""
        c = self.consumer(group)
        try:
            got = c.committed([TopicPartition(topic, p) for p in parts], timeout=timeout)
            return {tp.partition: tp.offset for tp in got}
        finally:
            c.close()


class Tail:
    """Reads a topic from the beginning, all along the run, and keeps every message. Its end per
    partition is the last offset read + 1: Tansu under-reports high watermarks (multi-record
    batches), so they can neither bound the reading nor measure lag."""

    def __init__(self, kafka, topic):
        self.topic = topic
        self.parts = kafka.partitions(topic)
        self.messages = []   # (partition, offset, key, value)
        self.last = {p: -1 for p in self.parts}
        self.at_end = {p: False for p in self.parts}
        self.quiet_since = time.time()
        self.error = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer = kafka.consumer(f"chaos-reader-{uuid.uuid4()}")
        self.consumer.assign([TopicPartition(topic, p, 0) for p in self.parts])
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while not self.stop.is_set():
                m = self.consumer.poll(0.5)
                if m is None:
                    continue
                with self.lock:
                    if m.error():
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            self.at_end[m.partition()] = True
                        elif not m.error().retriable():
                            raise KafkaException(m.error())
                        continue
                    if m.offset() > self.last[m.partition()]:
                        self.messages.append((m.partition(), m.offset(),
                                              (m.key() or b"").decode(), m.value()))
                        self.last[m.partition()] = m.offset()
                    self.at_end[m.partition()] = False
                    self.quiet_since = time.time()
        except Exception as e:  # noqa: BLE001 - reported by the next read
            self.error = f"reading {self.topic}: {type(e).__name__}: {e}"
        finally:
            self.consumer.close()

    def ends(self):
        if self.error:
            raise RuntimeError(self.error)
        with self.lock:
            return {p: o + 1 for p, o in self.last.items()}

    def settled(self, quiet=2.0):
        """Every partition read to its end, and nothing new for `quiet` seconds."""
        with self.lock:
            return all(self.at_end.values()) and time.time() - self.quiet_since >= quiet

    def close(self):
        self.stop.set()
        self.thread.join(10)

    def read(self):
        """What was read so far, sorted."""
        if self.error:
            raise RuntimeError(self.error)
        with self.lock:
            return sorted(self.messages)


def task_events(messages):
    """The task-events messages as dicts, in (partition, offset) order."""
    out = []
    for part, off, key, value in sorted(messages, key=lambda m: (m[0], m[1])):
        ev = json.loads(value)
        data = ev["data"]
        out.append({"partition": part, "offset": off, "key": key, "id": ev["id"],
                    "type": data["event_type"], "task": data["task_id"],
                    "user": data["user_id"], "series": data["series_id"],
                    "version": data["task"]["version"],
                    "occurrence": data["task"]["occurrence"]})
    return out


def check_events(events, records, outbox, prefix):
    """1. every acknowledged change has exactly one event (by id), in per-key order; every event
    is a committed change (an outbox row); no change has two events."""
    bad = []
    mine = [e for e in events if e["user"].startswith(prefix)]
    copies = defaultdict(list)
    for e in mine:
        copies[e["id"]].append(e)
    first = [c[0] for c in copies.values()]
    ids_of = defaultdict(set)
    for e in first:
        ids_of[(e["task"], e["version"])].add(e["id"])
    for (task, version), ids in ids_of.items():
        if len(ids) > 1:
            bad.append(f"task {task} version {version} has {len(ids)} events: {sorted(ids)}")
    acked = [r for r in records if r["ack"] and r["op"] in CHANGES and r.get("version")]
    for r in acked:
        if not ids_of.get((r["task"], r["version"])):
            bad.append(f"acknowledged {r['op']} of task {r['task']} (version {r['version']}, "
                       f"status {r['status']}) has no event on task-events")
    for e in first:
        row = outbox.get(e["id"])
        if row is None:
            bad.append(f"event {e['id']} ({e['type']} of task {e['task']}) has no committed "
                       f"outbox row: a rolled-back change was published")
        elif row["task"] != e["task"] or row["version"] != e["version"]:
            bad.append(f"event {e['id']} differs from its outbox row {row}")
    for oid, row in outbox.items():
        if oid not in copies:
            bad.append(f"outbox row {oid} ({row['type']} of task {row['task']}, sent "
                       f"{row['sent']}) is not on task-events: lost")
    by_key = defaultdict(list)
    for e in sorted(first, key=lambda e: (e["partition"], e["offset"])):
        by_key[e["key"]].append(e)
    for key, evs in by_key.items():
        if len({e["partition"] for e in evs}) > 1:
            bad.append(f"key {key} is on partitions {sorted({e['partition'] for e in evs})}")
        seqs = [outbox[e["id"]]["seq"] for e in evs if e["id"] in outbox]
        if seqs != sorted(seqs):
            bad.append(f"key {key}: events out of commit order (outbox seq {seqs})")
        last = {}
        for e in evs:
            if e["task"] in last and e["version"] <= last[e["task"]]:
                bad.append(f"key {key}: task {e['task']} version {e['version']} after "
                           f"{last[e['task']]}")
            last[e["task"]] = e["version"]
    stats = {"acknowledged_changes": len(acked), "events": len(first),
             "redelivered_copies": len(mine) - len(first), "keys": len(by_key)}
    return len(acked) + len(first), bad, stats


def check_recurrence(events, completions, occurrences, duplicates):
    """2. every acknowledged completion of an active series has exactly one next occurrence (one
    task row, one `created` event); no series has two occurrences with one number."""
    bad = [f"series {s} has {n} occurrences numbered {o}" for s, o, n in duplicates]
    created, deleted = defaultdict(set), set()
    for e in events:
        if e["type"] == "created":
            created[(e["series"], e["occurrence"])].add(e["id"])
        elif e["type"] == "deleted":
            deleted.add((e["series"], e["occurrence"]))
    for c in completions:
        nxt = (c["series"], c["occurrence"] + 1)
        # The load may have deleted the next occurrence since: then it has a deleted event.
        rows = occurrences.get(nxt, 0) + (nxt in deleted)
        if rows != 1:
            bad.append(f"completion of occurrence {c['occurrence']} of series {c['series']}: "
                       f"{rows} next occurrences in the database (deleted ones counted)")
        if len(created[nxt]) != 1:
            bad.append(f"completion of occurrence {c['occurrence']} of series {c['series']}: "
                       f"{len(created[nxt])} created events for occurrence {nxt[1]}")
    return len(completions), bad, {"completions": len(completions)}


def check_reminders(reminder_msgs, reminders, notifications, webhook_users, receiver_log, prefix):
    """3. every reminder that fell due has exactly one notification; the receiver saw one
    distinct Idempotency-Key per webhook notification (repeats allowed, counted)."""
    bad = []
    fired_events = defaultdict(set)
    for _, _, _, value in reminder_msgs:
        ev = json.loads(value)
        if ev["data"]["user_id"].startswith(prefix):
            fired_events[ev["data"]["reminder_id"]].add(ev["id"])
    by_reminder = defaultdict(list)
    for n in notifications.values():
        by_reminder[n["reminder"]].append(n)
    fell_due = 0
    for rid, r in reminders.items():
        if r["status"] == "pending" and r["due_now"]:
            bad.append(f"reminder {rid} of task {r['task']} fell due at {r['remind_at']} and "
                       f"never fired")
        if r["status"] != "fired":
            continue
        fell_due += 1
        if len(by_reminder[rid]) != 1:
            bad.append(f"reminder {rid} fired: {len(by_reminder[rid])} notifications")
        if len(fired_events[rid]) != 1:
            bad.append(f"reminder {rid} fired: {len(fired_events[rid])} reminder.due events")
    event_ids = {e for ids in fired_events.values() for e in ids}
    for n in notifications.values():
        if n["event"] not in event_ids:
            bad.append(f"notification {n['id']} for event {n['event']}, which is not on reminders")
    keys = defaultdict(list)
    for req in receiver_log:
        keys[req["key"]].append(req)
        if not req["signed"]:
            bad.append(f"webhook request for {req['key']} with a bad signature")
    hooked = {i: n for i, n in notifications.items() if n["user"] in webhook_users}
    for nid, n in hooked.items():
        answers = [q["answer"] for q in keys.get(nid, [])]
        if 200 not in answers:
            bad.append(f"webhook notification {nid}: receiver answered {answers or 'nothing'}")
        if n["webhook"] != "delivered":
            bad.append(f"webhook notification {nid}: delivery {n['webhook']}")
    for key in keys:
        if key not in hooked:
            bad.append(f"receiver got Idempotency-Key {key}, which is no webhook notification")
    stats = {"reminders_fired": fell_due, "notifications": len(notifications),
             "webhook_notifications": len(hooked), "webhook_requests": len(receiver_log),
             "webhook_distinct_keys": len(keys),
             "webhook_repeats": len(receiver_log) - len(keys)}
    return fell_due, bad, stats


def check_responses(records, outages, panics):
    """4. no response was a 5xx other than a JSON 503 during a declared outage; no panic."""
    bad = [f"panic: {p}" for p in panics]
    answered = [r for r in records if r["status"]]
    allowed = 0
    for r in answered:
        if r["status"] < 500:
            continue
        declared = any(a <= r["t"] + r["dt"] and r["t"] <= b and port in (None, r["replica"])
                       for a, b, port in outages)
        if r["status"] == 503 and r["json"] and r["code"] == "unavailable" and declared:
            allowed += 1
        else:
            bad.append(f"{r['op']} at {r['t']:.3f} on :{r['replica']}: {r['status']} "
                       f"code={r['code']} json={r['json']} declared_outage={declared}")
    return len(answered), bad, {"responses": len(answered), "declared_503": allowed}
