"""The load: users creating, editing, completing (recurring and not), cancelling and deleting
tasks, with reminders falling due during the run. Each user is driven by one thread, one request
at a time, so its own requests never race; the users of all threads together keep a steady rate.
Every request is recorded with what came back; only a 2xx is an acknowledgement."""

import datetime as dt
import http.client
import json
import random
import threading
import time
import uuid

import psycopg

RULES = ["daily", "weekdays", "weekly", {"rule": "FREQ=HOURLY;INTERVAL=3", "anchor": "completion"},
         {"rule": "FREQ=MONTHLY;BYMONTHDAY=-1", "anchor": "due"}]


def iso(t):
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


def call(port, method, path, token, body=None, headers=None, timeout=15.0):
    """(status, headers, parsed JSON or None, error text); status 0 when nothing answered."""
    h = {"Authorization": f"Bearer {token}"}
    if body is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return r.status, dict(r.getheaders()), parsed, None
    except (OSError, http.client.HTTPException) as e:
        return 0, {}, None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


class User:
    def __init__(self, uid, token):
        self.id, self.token = uid, token
        self.tasks = {}        # id -> {"version", "recurring", "series", "occurrence", "dirty"}
        self.awaiting = []     # (series_id, occurrence) the worker should create
        self.retry_creates = []  # (idempotency key, body, tries) never acknowledged


class Load:
    def __init__(self, ports, users, database_url, rate, threads, end_at, seed):
        self.ports, self.users, self.database_url = ports, users, database_url
        self.rate, self.threads, self.end_at = rate, threads, end_at
        self.seed = seed
        self.records = []
        self.completions = []  # acknowledged completions of an active series
        self.stop = threading.Event()
        self.workers = []

    def run(self):
        for i in range(self.threads):
            users = self.users[i::self.threads]
            t = threading.Thread(target=self.drive, args=(i, users), daemon=True)
            self.workers.append(t)
            t.start()

    def join(self):
        self.stop.set()
        for t in self.workers:
            t.join()

    # -- one thread -------------------------------------------------------------------------

    def drive(self, index, users):
        rng = random.Random(f"{self.seed}-load-{index}")
        interval = self.threads / self.rate
        db = None
        next_at = time.time() + rng.uniform(0, interval)
        while not self.stop.is_set() and time.time() < self.end_at:
            delay = next_at - time.time()
            if delay > 0 and self.stop.wait(delay):
                break
            next_at = max(next_at + interval, time.time() - interval)
            user = rng.choice(users)
            if user.awaiting:
                db = self.find_next_occurrences(db, user)
            self.one_op(rng, user)
        if db is not None:
            db.close()

    def find_next_occurrences(self, db, user):
        """Occurrences the recurrence worker created since: they join the user's tasks."""
        try:
            if db is None or db.closed:
                db = psycopg.connect(self.database_url, connect_timeout=3, autocommit=True)
            still = []
            for series, occ in user.awaiting:
                row = db.execute("SELECT id, version, completed FROM tasks WHERE series_id = %s"
                                 " AND occurrence = %s", (series, occ)).fetchone()
                if row is None:
                    still.append((series, occ))
                elif not row[2]:
                    user.tasks[str(row[0])] = {"version": row[1], "recurring": True,
                                               "series": series, "occurrence": occ, "dirty": False}
            user.awaiting = still
        except psycopg.Error:
            if db is not None:
                db.close()
            db = None
        return db

    def record(self, op, user, t0, status, body, err, port, **extra):
        rec = {"t": t0, "dt": round(time.time() - t0, 4), "op": op, "user": user.id,
               "status": status, "ack": 200 <= status < 300, "replica": port, "err": err,
               "code": (body or {}).get("error", {}).get("code") if isinstance(body, dict) else None,
               "json": isinstance(body, dict)}
        rec.update(extra)
        self.records.append(rec)
        return rec

    def send(self, rng, op, user, method, path, body=None, headers=None, **extra):
        """One request to a random replica; a refused connection (a killed replica: the request
        never arrived) goes to the other one."""
        ports = list(self.ports)
        rng.shuffle(ports)
        for port in ports:
            t0 = time.time()
            status, hdrs, parsed, err = call(port, method, f"/api/{user.id}{path}", user.token,
                                             body, headers)
            if status == 0 and err and "ConnectionRefused" in err:
                self.record(op, user, t0, status, parsed, err, port, refused=True, **extra)
                continue
            rec = self.record(op, user, t0, status, parsed, err, port, **extra)
            return rec, hdrs, parsed
        return None, {}, None

    def one_op(self, rng, user):
        if user.retry_creates:
            return self.create(rng, user, retry=user.retry_creates.pop(0))
        dirty = [tid for tid, t in user.tasks.items() if t["dirty"]]
        if dirty:
            return self.resync(rng, user, dirty[0])
        pending = list(user.tasks)
        roll = rng.random()
        if not pending or roll < 0.35:
            return self.create(rng, user)
        tid = rng.choice(pending)
        if roll < 0.60:
            return self.update(rng, user, tid)
        if roll < 0.82:
            return self.complete(rng, user, tid)
        if roll < 0.95:
            return self.delete(rng, user, tid)
        if user.tasks[tid]["recurring"]:
            return self.cancel(rng, user, tid)
        return self.update(rng, user, tid)

    def soon(self, rng):
        """A due time that falls before the load stops, or None when too little is left."""
        room = self.end_at - time.time() - 5
        return time.time() + rng.uniform(3, room) if room > 5 else None

    def create(self, rng, user, retry=None):
        if retry:
            key, body, tries = retry
        else:
            key, body, tries = str(uuid.uuid4()), {"title": f"chaos {rng.randrange(10**6)}"}, 0
            kind = rng.random()
            due = self.soon(rng)
            if kind < 0.45 and due:
                # Its reminder falls due during the run: at the due time, or a minute before.
                before = rng.choice([0, 1])
                body.update(due_at=iso(due + 60 * before), reminder_minutes_before=before)
            elif kind < 0.75:
                body.update(due_at=iso(time.time() + rng.uniform(3600, 86400)),
                            timezone=rng.choice(["UTC", "Europe/Berlin", "America/New_York"]),
                            recurrence=rng.choice(RULES),
                            reminder_minutes_before=rng.choice([None, 30]))
            else:
                body.update(priority=rng.choice(["none", "low", "high"]), tags=["chaos"])
        rec, _, task = self.send(rng, "create", user, "POST", "/tasks", body,
                                 {"Idempotency-Key": key}, key=key, retry=tries)
        if rec is None or not rec["ack"]:
            if rec is None or rec["status"] == 0 or rec["status"] >= 500:
                if tries < 5:
                    user.retry_creates.append((key, body, tries + 1))
            return
        rec.update(task=task["id"], version=task["version"], series=task["series_id"])
        user.tasks[task["id"]] = {"version": task["version"], "recurring": bool(task["recurrence"]),
                                  "series": task["series_id"], "occurrence": task["occurrence"],
                                  "dirty": False}

    def resync(self, rng, user, tid):
        rec, _, task = self.send(rng, "get", user, "GET", f"/tasks/{tid}", task=tid)
        if rec is None or rec["status"] in (0,) or rec["status"] >= 500:
            return
        if rec["status"] == 404:
            user.tasks.pop(tid, None)
        elif rec["ack"]:
            self.learn(user, tid, task)

    def learn(self, user, tid, task):
        """What a response says about the task: completed ones leave the user's list."""
        if task["completed"]:
            user.tasks.pop(tid, None)
            return
        t = user.tasks[tid]
        t.update(version=task["version"], dirty=False,
                 recurring=bool(task["recurrence"] and task["recurrence"]["active"]))

    def after_change(self, rec, user, tid, task):
        """Acknowledged: learn the task; 412/404: someone (an unacknowledged request of ours that
        committed) changed it; no answer or 5xx: unknown, look again before the next change."""
        if rec is None:
            user.tasks[tid]["dirty"] = True
        elif rec["ack"]:
            rec.update(version=task["version"], series=task["series_id"])
            self.learn(user, tid, task)
        elif rec["status"] == 404:
            user.tasks.pop(tid, None)
        else:
            user.tasks[tid]["dirty"] = True

    def if_match(self, user, tid):
        return {"If-Match": f'"{user.tasks[tid]["version"]}"'}

    def update(self, rng, user, tid):
        t = user.tasks[tid]
        choice = rng.random()
        if choice < 0.5:
            body = {"title": f"chaos edit {rng.randrange(10**6)}"}
        elif choice < 0.7:
            body = {"priority": rng.choice(["low", "medium", "high", "urgent"]),
                    "description": f"edited {rng.randrange(10**6)}"}
        elif not t["recurring"] and (due := self.soon(rng)):
            body = {"due_at": iso(due), "reminder_minutes_before": 0}
        else:
            body = {"tags": sorted({f"t{rng.randrange(20)}" for _ in range(3)})}
        rec, _, task = self.send(rng, "update", user, "PATCH", f"/tasks/{tid}", body,
                                 self.if_match(user, tid), task=tid)
        self.after_change(rec, user, tid, task)

    def complete(self, rng, user, tid):
        t = user.tasks[tid]
        rec, _, task = self.send(rng, "complete", user, "PATCH", f"/tasks/{tid}/complete", None,
                                 self.if_match(user, tid), task=tid)
        if rec is not None and rec["ack"] and task["recurrence"] and task["recurrence"]["active"]:
            self.completions.append({"task": tid, "series": task["series_id"],
                                     "occurrence": task["occurrence"], "t": rec["t"]})
            user.awaiting.append((task["series_id"], task["occurrence"] + 1))
        if rec is not None:
            rec.update(recurring=t["recurring"])
        self.after_change(rec, user, tid, task)

    def cancel(self, rng, user, tid):
        rec, _, task = self.send(rng, "cancel_recurrence", user, "POST",
                                 f"/tasks/{tid}/recurrence/cancel", None, task=tid)
        self.after_change(rec, user, tid, task)

    def delete(self, rng, user, tid):
        version = user.tasks[tid]["version"]
        rec, _, _ = self.send(rng, "delete", user, "DELETE", f"/tasks/{tid}", None,
                              self.if_match(user, tid), task=tid)
        if rec is not None and rec["ack"]:
            # The deleted event carries the last snapshot, one version on.
            rec.update(version=version + 1)
            user.tasks.pop(tid, None)
        elif rec is not None and rec["status"] == 404:
            user.tasks.pop(tid, None)
        else:
            user.tasks[tid]["dirty"] = True
