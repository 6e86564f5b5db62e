"""The processes under test: two of each service, the webhook receiver, and the handles on
PostgreSQL and Tansu that ./dev started (restart, pause). Nothing here decides what to break."""

import ctypes
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # A chaos runner that is killed must not leave services behind.
    os.setsid()
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def http_get(url, timeout=2.0):
    """(status, body bytes); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError):
        return 0, b""


def metric_values(text, name):
    """Every sample of metric `name` in a Prometheus text page: [(labels, value)]."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, labels = head.partition("{")
        if metric != name:
            continue
        out.append((labels.rstrip("}"), float(value)))
    return out


class Service:
    """One service process: started, SIGKILLed and started again with the same settings."""

    def __init__(self, name, binary, addr_var, port, env, log_dir):
        self.name, self.binary, self.port = name, binary, port
        self.env = dict(env, **{addr_var: f"127.0.0.1:{port}"})
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.proc = None
        self.starts = 0
        self.crashes = []  # exits that were not our SIGKILL

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        if self.proc is not None and self.proc.poll() not in (None, -signal.SIGKILL):
            self.crashes.append(f"{self.name} exited on its own with status {self.proc.returncode}")
        log = open(self.log_path, "ab")
        log.write(f"---- chaos: start {self.starts + 1} at {time.time():.3f}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [self.binary], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, close_fds=True)
        log.close()
        self.starts += 1

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout=15):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def ready(self, timeout=1.0):
        status, body = http_get(self.url + "/ready", timeout)
        if status != 200:
            return False, None
        try:
            return True, json.loads(body)
        except ValueError:
            return False, None

    def metrics(self, timeout=3.0):
        status, body = http_get(self.url + "/metrics", timeout)
        return body.decode() if status == 200 else None


class Stack:
    """Two backends (relay and reminder scheduler each), two recurrence workers, two notifiers."""

    KINDS = (("backend", "HTTP_ADDR"), ("recurrence-worker", "METRICS_ADDR"),
             ("notifier", "METRICS_ADDR"))

    def __init__(self, bin_dir, log_dir, port_base, common_env, receiver_host):
        # This run's logs only: they are searched for panics.
        if os.path.isdir(log_dir):
            shutil.rmtree(log_dir)
        os.makedirs(log_dir)
        self.log_dir = log_dir
        env = dict(common_env)
        # The receiver listens on loopback, which the SSRF policy refuses unless allowed.
        env.update({
            "WEBHOOK_ALLOWED_HOSTS": receiver_host,
            "WEBHOOK_TIMEOUT_MS": "2000",
            "WEBHOOK_BACKOFF_MS": "500",
            "WEBHOOK_MAX_BACKOFF_MS": "4000",
            # Enough attempts to outlast any receiver outage of the schedule several times.
            "WEBHOOK_MAX_ATTEMPTS": "20",
            # Sent rows kept (by default the relay deletes them): invariant 1 checks every
            # event on Kafka against a committed outbox row, and every row against Kafka.
            "OUTBOX_RETENTION_HOURS": "1",
        })
        self.services = []
        port = port_base
        for kind, var in self.KINDS:
            for i in (1, 2):
                self.services.append(Service(f"{kind}-{i}", os.path.join(bin_dir, kind), var, port,
                                             env, log_dir))
                port += 1
        self.by_name = {s.name: s for s in self.services}

    def of(self, kind):
        return [s for s in self.services if s.name.rsplit("-", 1)[0] == kind]

    def start(self, timeout):
        for s in self.services:
            s.start()
        deadline = time.time() + timeout
        for s in self.services:
            while not s.ready()[0]:
                if not s.running():
                    raise RuntimeError(f"{s.name} exited at start-up (log {s.log_path})")
                if time.time() > deadline:
                    raise RuntimeError(f"{s.name} not ready within {timeout:.0f}s (log {s.log_path})")
                time.sleep(0.25)

    def stop(self):
        for s in reversed(self.services):
            s.stop()

    def restart_exited(self):
        """Start what is not running (it exited on its own); every such exit, for the report."""
        for s in self.services:
            if not s.running():
                s.start()
        return [c for s in self.services for c in s.crashes]

    def panics(self):
        """Lines of the service logs where a process panicked."""
        found = []
        for s in self.services:
            with open(s.log_path, errors="replace") as f:
                found += [f"{s.name}: {line.strip()[:300]}" for line in f if "panicked" in line]
        return found


class PostgresHandle:
    """The throwaway cluster ./dev started: restarted the way an operator would."""

    def __init__(self, pg_ctl, pgdata, log, owner):
        self.cmd = [pg_ctl, "-D", pgdata, "-l", log, "-m", "fast", "-w", "-t", "60", "restart"]
        if owner:
            self.cmd = ["runuser", "-u", owner, "--"] + self.cmd

    def restart(self):
        r = subprocess.run(self.cmd, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, timeout=120, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {r.stderr.decode(errors='replace')}")


class BrokerHandle:
    """Tansu, memory engine: paused and resumed, never killed (a kill loses its data by design)."""

    def __init__(self, pid):
        self.pid = pid
        self.paused = False

    def pause(self):
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def alive(self):
        try:
            os.kill(self.pid, 0)
            return True
        except OSError:
            return False


class Receiver:
    """The users' webhook endpoint: records every request; answers 200, 500 or hangs on
    schedule. Each user's URL is /hook/<user>, so the signature is checked with its secret."""

    def __init__(self, port, secrets):
        self.port, self.secrets = port, secrets
        self.mode, self.hang_seconds = "ok", 0.0
        self.requests = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                receiver.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, user):
        return f"http://127.0.0.1:{self.port}/hook/{user}"

    def start(self):
        self.thread.start()

    def stop(self):
        self.server.shutdown()

    def set_mode(self, mode, hang_seconds=0.0):
        self.mode, self.hang_seconds = mode, hang_seconds

    def handle(self, req):
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        user = req.path.rsplit("/", 1)[-1]
        ts = req.headers.get("X-TaskFlow-Timestamp", "")
        secret = self.secrets.get(user, "").encode()
        expected = "sha256=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(expected, req.headers.get("X-TaskFlow-Signature", ""))
        mode = self.mode
        record = {"t": time.time(), "user": user, "key": req.headers.get("Idempotency-Key"),
                  "signed": signed, "mode": mode, "answer": None}
        with self.lock:
            self.requests.append(record)
        if mode == "hang":
            # Longer than the notifier's timeout: it gives up and retries with the same key.
            time.sleep(self.hang_seconds)
            record["answer"] = "hung"
            status = 200
        elif mode == "error":
            record["answer"] = status = 500
        else:
            record["answer"] = status = 200
        try:
            req.send_response(status)
            req.send_header("Content-Length", "0")
            req.end_headers()
        except OSError:
            pass
