"""The fault schedule, drawn from the seed alone (the same seed and length give the same
schedule, so a failing run can be replayed), and the thread that injects it."""

import random
import threading
import time

KINDS = {  # kind: weight
    "kill": 5,            # SIGKILL a service process, start it again after a moment
    "broker_pause": 2,    # SIGSTOP Tansu for seconds, then SIGCONT
    "pg_restart": 2,      # pg_ctl restart -m fast
    "webhook_500": 1,     # the receiver answers 500
    "webhook_hang": 1,    # the receiver holds requests past the notifier's timeout
}
# A 503 (JSON) is declared expected from a PostgreSQL restart until this long after it is back:
# pooled connections are found broken, and requests queue for new ones on a loaded machine.
OUTAGE_GRACE = 15.0
# How long a restarted backend may take to answer /ready with 200.
READY_WAIT = 60.0


def schedule(seed, duration, services):
    """[(at seconds from the start, kind, params)], one fault every 3-7 s after a 5 s warm-up,
    the last at least 5 s before the load stops."""
    rng = random.Random(f"chaos-{seed}")
    kinds, weights = zip(*KINDS.items())
    out, at = [], 5.0
    while at < duration - 5:
        kind = rng.choices(kinds, weights)[0]
        if kind == "kill":
            params = {"target": rng.choice(services), "down": round(rng.uniform(0.5, 3.0), 2)}
        elif kind == "pg_restart":
            params = {}
        else:
            params = {"seconds": round(rng.uniform(1.0, 5.0), 2)}
        out.append((round(at, 2), kind, params))
        at += rng.uniform(3.0, 7.0)
    return out


class Injector:
    def __init__(self, plan, stack, postgres, broker, receiver, start_at, log):
        self.plan, self.stack, self.postgres = plan, stack, postgres
        self.broker, self.receiver, self.start_at, self.log = broker, receiver, start_at, log
        self.done = []      # {"kind", "params", "start", "end"} (wall-clock seconds)
        self.outages = []   # (from, to, port or None for all): when a JSON 503 is expected
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            for at, kind, params in self.plan:
                delay = self.start_at + at - time.time()
                if delay > 0:
                    time.sleep(delay)
                start = time.time()
                getattr(self, kind)(**params)
                end = time.time()
                self.done.append({"kind": kind, "params": params, "start": start, "end": end})
                self.log(f"fault {len(self.done):>3} {kind:<13} {params} "
                         f"at +{start - self.start_at:6.1f}s ({end - start:.1f}s)")
        except Exception as e:  # noqa: BLE001 - reported as the run's failure
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.heal()

    def heal(self):
        """Whatever a fault left undone: the broker resumed, the receiver answering."""
        if self.broker.paused:
            self.broker.resume()
        self.receiver.set_mode("ok")

    def kill(self, target, down):
        service = self.stack.by_name[target]
        start = time.time()
        service.kill()
        time.sleep(down)
        service.start()
        if target.startswith("backend"):
            # Until its /ready answers 200 a replica declares itself unavailable (a load balancer
            # would not send it requests yet); its pool is still connecting, so 503s are expected.
            deadline = time.time() + READY_WAIT
            while not service.ready()[0] and time.time() < deadline:
                time.sleep(0.2)
            self.outages.append((start, time.time() + 1.0, service.port))

    def broker_pause(self, seconds):
        self.broker.pause()
        try:
            time.sleep(seconds)
        finally:
            self.broker.resume()

    def pg_restart(self):
        start = time.time()
        try:
            self.postgres.restart()
        finally:
            self.outages.append((start, time.time() + OUTAGE_GRACE, None))

    def webhook_500(self, seconds):
        self.receiver.set_mode("error")
        time.sleep(seconds)
        self.receiver.set_mode("ok")

    def webhook_hang(self, seconds):
        self.receiver.set_mode("hang", hang_seconds=3.0)
        time.sleep(seconds)
        self.receiver.set_mode("ok")
