"""./dev chaos: the whole system under load and a seeded fault schedule, then its guarantees.

Run by scripts/dev/cmd_chaos.sh once PostgreSQL and Tansu are up, the binaries built and the
database migrated; it starts and stops the services itself. Exit 0 when every invariant held,
1 on a violation (the first examples printed) or when the run itself could not be carried out."""

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import psycopg

import faults
import invariants
import load as loadgen
from stack import BrokerHandle, PostgresHandle, Receiver, Stack, metric_values

GROUPS = (("recurrence-worker", "task-events"), ("notifier", "reminders"))
EXAMPLES = 10


def log(msg):
    print(f"chaos: {msg}", flush=True)


def parse_args():
    p = argparse.ArgumentParser(prog="./dev chaos", description=__doc__)
    p.add_argument("--minutes", type=float, default=3.0, help="length of the load (default 3)")
    p.add_argument("--seed", type=int, default=None, help="fault schedule and load (default: random, printed)")
    p.add_argument("--rate", type=float, default=float(os.environ.get("CHAOS_RATE", 25)),
                   help="requests a second (CHAOS_RATE, default 25)")
    p.add_argument("--users", type=int, default=24)
    p.add_argument("--port-base", type=int, default=int(os.environ.get("CHAOS_PORT_BASE", 18100)),
                   help="the services and the receiver listen on the 7 ports from here (CHAOS_PORT_BASE, default 18100)")
    p.add_argument("--quiesce-timeout", type=float,
                   default=float(os.environ.get("CHAOS_QUIESCE_TIMEOUT", 240)),
                   help="seconds to wait for backlogs and lag to drain (CHAOS_QUIESCE_TIMEOUT, default 240)")
    return p.parse_args()


class Monitor:
    """Samples, twice a second, whether the system is whole: every process ready, the backends'
    event path up, and every partition assigned to a member of its group."""

    def __init__(self, stack, partitions):
        self.stack, self.partitions = stack, partitions
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self):
        """(whole, the backends' ports whose /ready did not answer 200)."""
        assigned, whole, unready = defaultdict(int), True, set()
        for s in self.stack.services:
            ok, body = s.ready()
            kind = s.name.rsplit("-", 1)[0]
            if not ok:
                whole = False
                if kind == "backend":
                    unready.add(s.port)
                continue
            if kind == "backend" and body.get("status") != "ok":
                whole = False
            assigned[kind] += body.get("assigned_partitions", 0)
        whole = whole and all(assigned[g] == self.partitions[t] for g, t in GROUPS)
        return whole, unready

    def healthy(self):
        return self.sample()[0]

    def run(self):
        while not self.stop.is_set():
            t = time.time()
            whole, unready = self.sample()
            self.samples.append((t, whole, unready))
            self.stop.wait(max(0.0, 0.5 - (time.time() - t)))

    def recovery(self, after):
        """Seconds from `after` to the first whole sample, or None."""
        for t, ok, _ in self.samples:
            if t >= after and ok:
                return t - after
        return None

    def unready(self):
        """(from, to, port): a backend declared itself unavailable (its /ready not 200), from
        the sample before the first such one to the sample after the last."""
        out = []
        for i, (t, _, ports) in enumerate(self.samples):
            before = self.samples[i - 1][0] if i else t
            after = self.samples[i + 1][0] if i + 1 < len(self.samples) else t
            for port in ports:
                out.append((before, after, port))
        return out


def tokens(bin_dir, users):
    out = {}
    for u in users:
        r = subprocess.run([os.path.join(bin_dir, "backend"), "token", u], capture_output=True,
                           text=True, check=True)
        out[u] = r.stdout.strip().splitlines()[-1]
    return out


def wait_for(what, timeout, probe, interval=1.0):
    """Poll `probe` (returns (done, progress text)) until done; raise with the last state."""
    deadline, last_said, state = time.time() + timeout, 0.0, ""
    while True:
        try:
            done, state = probe()
        except Exception as e:  # noqa: BLE001 - a probe that fails is a state to wait out
            done, state = False, f"{type(e).__name__}: {e}"
        if done:
            return
        if time.time() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout:.0f}s; last: {state}")
        if time.time() - last_said > 10:
            log(f"waiting for {what}: {state}")
            last_said = time.time()
        time.sleep(interval)


def backlog(db_url, kafka, tails, stack):
    """What still has to drain: outbox, due reminders, jobs, consumer lag (Kafka and metrics)."""
    with psycopg.connect(db_url, connect_timeout=5) as db:
        q = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
        state = {
            "outbox_unsent": q("SELECT count(*) FROM outbox"),
            "reminders_due": q("SELECT count(*) FROM reminders WHERE status = 'pending'"
                               " AND remind_at <= now()"),
            "jobs_due": q("SELECT count(*) FROM jobs WHERE state = 'queued' AND (run_at <= now()"
                          " OR kind = 'notification.webhook')"),
        }
    for group, topic in GROUPS:
        tail = tails[topic]
        ends = tail.ends()
        committed = kafka.committed(group, topic, tail.parts)
        state[f"lag_{group}"] = sum(ends[p] - max(committed.get(p, 0), 0) for p in tail.parts)
        state[f"unread_{topic}"] = 0 if tail.settled() else 1
    metrics = gauges(stack)
    state["metric_outbox_pending"] = metrics["outbox_pending"]
    state["metric_consumer_lag"] = metrics["consumer_lag"]
    return state


def gauges(stack):
    """outbox_pending of every backend and taskflow_consumer_lag of every worker, summed."""
    out = {"outbox_pending": 0.0, "consumer_lag": 0.0, "unanswered": []}
    for s in stack.services:
        text = s.metrics()
        if text is None:
            out["unanswered"].append(s.name)
            continue
        out["outbox_pending"] += sum(v for _, v in metric_values(text, "outbox_pending"))
        out["consumer_lag"] += sum(v for _, v in metric_values(text, "taskflow_consumer_lag"))
    return out


def database_side(db_url, prefix):
    like = prefix + "%"
    with psycopg.connect(db_url, connect_timeout=5) as db:
        outbox = {r[0]: {"seq": r[1], "type": r[2], "task": r[3], "version": r[4], "sent": r[5]}
                  for r in db.execute(
                      "SELECT id::text, seq, event_type, payload->'data'->>'task_id',"
                      " (payload->'data'->'task'->>'version')::bigint, sent"
                      " FROM (SELECT id, seq, topic, event_type, payload, false AS sent FROM outbox"
                      "       UNION ALL SELECT id, seq, topic, event_type, payload, true"
                      "       FROM outbox_sent) o WHERE topic = 'task-events'"
                      " AND payload->'data'->>'user_id' LIKE %s", (like,))}
        occ = db.execute("SELECT series_id::text, occurrence, count(*) FROM tasks"
                         " WHERE user_id LIKE %s GROUP BY 1, 2", (like,)).fetchall()
        reminders = {r[0]: {"task": r[1], "status": r[2], "remind_at": r[3].isoformat(),
                            "due_now": r[4]}
                     for r in db.execute("SELECT id::text, task_id::text, status, remind_at,"
                                         " remind_at <= now() FROM reminders WHERE user_id LIKE %s",
                                         (like,))}
        notifications = {r[0]: {"id": r[0], "event": r[1], "reminder": r[2], "user": r[3],
                                "status": r[4], "webhook": r[5]}
                         for r in db.execute(
                             "SELECT n.id::text, n.event_id::text, n.reminder_id::text, n.user_id,"
                             " n.status, d.status FROM notifications n LEFT JOIN"
                             " notification_deliveries d ON d.notification_id = n.id"
                             " AND d.channel = 'webhook' WHERE n.user_id LIKE %s", (like,))}
    occurrences = {(s, o): n for s, o, n in occ}
    duplicates = [(s, o, n) for s, o, n in occ if n > 1]
    return outbox, occurrences, duplicates, reminders, notifications


def setup_users(args, bin_dir, prefix, receiver, port, rng):
    ids = [f"{prefix}{i:02d}" for i in range(args.users)]
    toks = tokens(bin_dir, ids)
    users = [loadgen.User(u, toks[u]) for u in ids]
    webhook_users = set(ids[::2])
    for u in users:
        if u.id not in webhook_users:
            continue
        body = {"channels": ["in_app", "webhook"], "webhook_url": receiver.url(u.id),
                "webhook_secret": receiver.secrets[u.id]}
        status, _, resp, err = loadgen.call(port, "PUT", f"/api/{u.id}/preferences", u.token, body)
        if status != 200:
            raise RuntimeError(f"PUT preferences for {u.id}: {status} {resp or err}")
    return users, webhook_users


def run(args):
    env = os.environ
    bin_dir, log_dir = env["CHAOS_BIN_DIR"], env["CHAOS_LOG_DIR"]
    db_url, brokers = env["DATABASE_URL"], env["KAFKA_BROKERS"]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    duration = args.minutes * 60
    log(f"seed {seed}: replay with ./dev chaos --minutes {args.minutes:g} --seed {seed} "
        f"--rate {args.rate:g}")
    rng = random.Random(seed)
    prefix = f"chaos-{seed}-{int(time.time()) % 10**6}-"

    common = {k: v for k, v in env.items() if not k.startswith("CHAOS_")}
    stack = Stack(bin_dir, log_dir, args.port_base, common, "127.0.0.1")
    plan = faults.schedule(seed, duration, [s.name for s in stack.services])
    log(f"{len(plan)} faults planned over {duration:.0f}s; {args.rate:g} requests/s from "
        f"{args.users} users; services on ports {args.port_base}-{args.port_base + 5}, logs in "
        f"{log_dir}")
    secrets = {f"{prefix}{i:02d}": f"secret-{rng.randrange(10**9)}" for i in range(args.users)}
    receiver = Receiver(args.port_base + 6, secrets)
    kafka = invariants.Kafka(brokers)
    tails = {topic: invariants.Tail(kafka, topic) for _, topic in GROUPS}
    partitions = {topic: len(t.parts) for topic, t in tails.items()}
    postgres = PostgresHandle(env["CHAOS_PG_CTL"], env["CHAOS_PGDATA"], env["CHAOS_PG_LOG"],
                              env.get("CHAOS_PG_OWNER"))
    broker = BrokerHandle(int(env["CHAOS_TANSU_PID"]))
    report = {"seed": seed, "minutes": args.minutes, "rate": args.rate, "users": args.users,
              "plan": plan}
    monitor = Monitor(stack, partitions)
    receiver.start()
    injector = None
    try:
        stack.start(timeout=120)
        backend_ports = [s.port for s in stack.of("backend")]
        users, webhook_users = setup_users(args, bin_dir, prefix, receiver, backend_ports[0], rng)
        wait_for("every partition assigned before the storm", 120,
                 lambda: (monitor.healthy(), "consumer groups still forming"))
        monitor.thread.start()
        start = time.time()
        load = loadgen.Load(backend_ports, users, db_url, args.rate, 16, start + duration, seed)
        injector = faults.Injector(plan, stack, postgres, broker, receiver, start, log)
        load.run()
        injector.thread.start()
        time.sleep(max(0.0, start + duration - time.time()))
        load.join()
        injector.thread.join(120)
        log(f"load stopped after {time.time() - start:.0f}s: {len(load.records)} requests; "
            f"{len(injector.done)} faults injected; quiescing")
        if injector.error:
            raise RuntimeError(f"a fault could not be injected: {injector.error}")
        crashed = stack.restart_exited()
        t_quiet = time.time()
        wait_for("backlogs and lag to drain", args.quiesce_timeout,
                 lambda: drained(db_url, kafka, tails, stack))
        quiesce_seconds = time.time() - t_quiet
        log(f"drained in {quiesce_seconds:.1f}s; checking")
        # Each fault's recovery ends at a whole sample: the last fault's may come after the drain.
        wait_for("every process ready and every partition assigned", 120,
                 lambda: (monitor.samples[-1][1], "not yet"))
        outages = injector.outages + monitor.unready()
        monitor.stop.set()
        report.update(check(load, outages, receiver, stack, kafka, tails, db_url, prefix,
                            webhook_users, crashed))
        report["quiesce_seconds"] = round(quiesce_seconds, 1)
        report["faults"] = injector.done
        report["recovery"] = recoveries(monitor, injector.done, start)
    finally:
        monitor.stop.set()
        if injector:
            injector.heal()
        if broker.paused:
            broker.resume()
        stack.stop()
        receiver.stop()
        for t in tails.values():
            t.close()
    return report


def drained(db_url, kafka, tails, stack):
    state = backlog(db_url, kafka, tails, stack)
    return all(v == 0 for v in state.values()), state


def check(load, outages, receiver, stack, kafka, tails, db_url, prefix, webhook_users, crashed):
    results = {}
    results["5 zero lag, outbox drained"] = drained_check(db_url, kafka, tails, stack)
    events = invariants.task_events(tails["task-events"].read())
    reminder_msgs = tails["reminders"].read()
    outbox, occurrences, duplicates, reminders, notifications = database_side(db_url, prefix)
    hooks = [q for q in receiver.requests if q["user"].startswith(prefix)]
    results["1 one event per acknowledged change, in key order"] = invariants.check_events(
        events, load.records, outbox, prefix)
    mine = [e for e in events if e["user"].startswith(prefix)]
    results["2 one next occurrence per completion"] = invariants.check_recurrence(
        mine, load.completions, occurrences, duplicates)
    results["3 one notification per due reminder"] = invariants.check_reminders(
        reminder_msgs, reminders, notifications, webhook_users, hooks, prefix)
    results["4 no 5xx but declared 503s, no panic"] = invariants.check_responses(
        load.records, outages, stack.panics() + crashed)
    ops = defaultdict(Counter)
    for r in load.records:
        c = ops[r["op"]]
        if r.get("refused"):
            # A killed replica: the request never arrived and went to the other one.
            c["refused"] += 1
        else:
            c["requests"] += 1
            c["acknowledged" if r["ack"] else "no answer" if not r["status"]
              else f"{r['status'] // 100}xx"] += 1
    for op, c in ops.items():
        took = sorted(r["dt"] for r in load.records if r["op"] == op and r["status"])
        if took:
            c["p50_ms"] = round(took[len(took) // 2] * 1000)
            c["p99_ms"] = round(took[min(len(took) - 1, int(len(took) * 0.99))] * 1000)
    refused = [r for r in load.records if 400 <= r["status"] < 500]
    return {"client_errors": refused[:EXAMPLES * 2],
            "invariants": {name: {"checked": n, "violated": len(bad), "stats": stats,
                                  "examples": bad[:EXAMPLES]}
                           for name, (n, bad, stats) in sorted(results.items())},
            "operations": {k: dict(v) for k, v in sorted(ops.items())}}


def drained_check(db_url, kafka, tails, stack):
    """5. every consumer group has zero lag and outbox_pending is 0, after the run."""
    state = backlog(db_url, kafka, tails, stack)
    bad = [f"{k} = {v}" for k, v in state.items() if v != 0]
    return len(state), bad, state


def recoveries(monitor, done, start):
    """Per fault: seconds from its end until the system was whole again, and how many later
    faults began meanwhile (then the time is that of the overlapping faults together)."""
    out = []
    for f in done:
        r = monitor.recovery(f["end"])
        overlapped = 0 if r is None else sum(f["end"] < g["start"] < f["end"] + r for g in done)
        out.append({"kind": f["kind"], "params": f["params"], "at": round(f["start"] - start, 1),
                    "recovery_seconds": None if r is None else round(r, 1),
                    "overlapped_by": overlapped})
    return out


def print_table(report):
    faults_by_kind = Counter(f["kind"] for f in report["faults"])
    kills = Counter(f["params"]["target"] for f in report["faults"] if f["kind"] == "kill")
    print(f"\nchaos: seed {report['seed']}, {report['minutes']:g} min, {report['rate']:g} req/s")
    print(f"\n{'faults injected':<52}{sum(faults_by_kind.values()):>8}")
    for kind, n in sorted(faults_by_kind.items()):
        extra = f"  ({', '.join(f'{t} {c}' for t, c in sorted(kills.items()))})" if kind == "kill" else ""
        print(f"  {kind:<50}{n:>8}{extra}")
    print(f"\n{'operations':<26}{'requests':>10}{'acked':>8}{'no answer':>11}{'4xx':>6}{'5xx':>6}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'refused':>9}")
    for op, c in report["operations"].items():
        print(f"  {op:<24}{c.get('requests', 0):>10}{c.get('acknowledged', 0):>8}"
              f"{c.get('no answer', 0):>11}{c.get('4xx', 0):>6}{c.get('5xx', 0):>6}"
              f"{c.get('p50_ms', 0):>8}{c.get('p99_ms', 0):>8}{c.get('refused', 0):>9}")
    print(f"\n{'invariant':<52}{'checked':>8}{'violated':>10}")
    for name, inv in report["invariants"].items():
        print(f"  {name:<50}{inv['checked']:>8}{inv['violated']:>10}")
        shown = {k: v for k, v in inv["stats"].items() if v}
        if shown:
            print(f"      {', '.join(f'{k} {v}' for k, v in shown.items())}")
    rec = [r for r in report["recovery"] if r["recovery_seconds"] is not None]
    alone = [r for r in rec if not r["overlapped_by"]]
    for label, group in (("longest recovery after a fault", rec),
                         ("longest recovery after a fault no other fault overlapped", alone)):
        if group:
            worst = max(group, key=lambda r: r["recovery_seconds"])
            print(f"\n{label}: {worst['recovery_seconds']:.1f}s ({worst['kind']} "
                  f"{worst['params']} at +{worst['at']}s, {worst['overlapped_by']} later faults "
                  f"before it was whole)", end="")
    print(f"\nbacklogs drained {report['quiesce_seconds']}s after the load stopped")
    never = [r for r in report["recovery"] if r["recovery_seconds"] is None]
    if never:
        print(f"not whole again after: {never}")


def main():
    args = parse_args()
    out_dir = os.path.join("target", "chaos")
    os.makedirs(out_dir, exist_ok=True)
    try:
        report = run(args)
    except Exception as e:  # noqa: BLE001 - the run failed before its checks: say so and why
        log(f"error: {type(e).__name__}: {e}")
        return 1
    path = os.path.join(out_dir, "chaos.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2, default=str)
    print_table(report)
    violated = {k: v for k, v in report["invariants"].items() if v["violated"]}
    never = [r for r in report["recovery"] if r["recovery_seconds"] is None]
    print(f"\nreport: {path}")
    for name, inv in violated.items():
        print(f"\nVIOLATED {name} ({inv['violated']}), first examples:")
        for ex in inv["examples"]:
            print(f"  - {ex}")
    if violated or never:
        print("\nchaos: FAILED")
        return 1
    print("\nchaos: every invariant held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
