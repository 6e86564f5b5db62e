#!/usr/bin/env bash
# The web UI end to end: Debian's Chromium driven by playwright-core (e2e/, pinned in its
# package-lock.json) against a stack of its own, started with `./dev up` on free ports (./dev
# test has stopped its infrastructure by now). Screenshots go to target/ui-screenshots/.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$REPO_ROOT"
# shellcheck source=scripts/dev/lib.sh
source scripts/dev/lib.sh
# shellcheck source=scripts/dev/system.sh
source scripts/dev/system.sh
# shellcheck source=scripts/dev/pids.sh
source scripts/dev/pids.sh

# A ./dev up of this checkout keeps its pid files in .dev/pids, which a second one would take over.
for name in backend recurrence-worker notifier tansu; do
	if pid=$(pidfile_pid "$name"); then
		echo "this checkout's ./dev up is running ($name, pid $pid): stop it to run the browser tests"
		exit 77
	fi
done

# The browser and Node from Debian's packages: never a browser that playwright downloads.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
[[ ${#need[@]} -eq 0 ]] || apt_install "${need[@]}" || die "could not install ${need[*]}"
if [[ ! -f e2e/node_modules/.installed || e2e/package-lock.json -nt e2e/node_modules/.installed ]]; then
	say "npm ci in e2e/"
	(cd e2e && npm ci --no-audit --no-fund --loglevel=error)
	touch e2e/node_modules/.installed
fi

# Five ports nothing listens on, so that this never meets another checkout's stack.
read -r pg kafka backend worker notifier < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
up_log=$LOG_DIR/web-ui-up.log
mkdir -p "$LOG_DIR"
up_pid=
stop_stack() {
	if [[ -n $up_pid ]]; then
		kill -TERM "$up_pid" 2>/dev/null || true
		wait "$up_pid" 2>/dev/null || true
	fi
}
trap stop_stack EXIT

# Its own throwaway PostgreSQL and Tansu: whatever the caller's DATABASE_URL/KAFKA_BROKERS said
# was for cargo test, and ./dev test has stopped what it started.
env -u DATABASE_URL -u KAFKA_BROKERS DEV_PG_PORT="$pg" DEV_KAFKA_PORT="$kafka" \
	DEV_BACKEND_ADDR="127.0.0.1:$backend" DEV_RECURRENCE_WORKER_ADDR="127.0.0.1:$worker" \
	DEV_NOTIFIER_ADDR="127.0.0.1:$notifier" ./dev up </dev/null >"$up_log" 2>&1 &
up_pid=$!
for ((i = 0; i < 600; i++)); do
	grep -q '^TaskFlow is up' "$up_log" && break
	kill -0 "$up_pid" 2>/dev/null || { show_tail "$up_log" 40; die "./dev up exited before the stack was ready"; }
	sleep 1
done
grep -q '^TaskFlow is up' "$up_log" || { show_tail "$up_log" 40; die "./dev up not ready within 600 s"; }
grep -q "UI  *http://127.0.0.1:$backend/#token=" "$up_log" || die "./dev up did not print the UI URL with a token"

say "e2e/ui.test.mjs against http://127.0.0.1:$backend"
rm -rf target/ui-screenshots
(cd e2e && TASKFLOW_URL="http://127.0.0.1:$backend" JWT_SECRET="${JWT_SECRET:-$DEFAULT_JWT_SECRET}" \
	SCREENSHOT_DIR="$REPO_ROOT/target/ui-screenshots" CHROMIUM="$(command -v chromium)" \
	node --test --test-concurrency=1 ui.test.mjs)
