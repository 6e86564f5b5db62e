#!/usr/bin/env bash
# deploy/scripts/health-check.sh against a local HTTP server that is healthy, turns healthy
# after a while, is unhealthy (/ready 503) and is down: exit 0, 0, non-zero, non-zero, each
# within its deadline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

script=deploy/scripts/health-check.sh
tmp=$(mktemp -d)
server_pid=
trap 'if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi; rm -rf "$tmp"' EXIT
failed=0

# serve MODE: starts the server in the background, sets PORT. MODE: healthy, unhealthy, or
# late (/ready 503 for the first 1.5 s).
serve() {
	python3 - "$1" >"$tmp/port" 2>"$tmp/server.log" <<'PY' &
import http.server, sys, time
mode, started = sys.argv[1], time.time()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = mode == "healthy" or (mode == "late" and time.time() - started > 1.5)
        code = 200 if self.path == "/health" or (self.path == "/ready" and ready) else 503
        self.send_response(code)
        self.end_headers()
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
	server_pid=$!
	for _ in $(seq 50); do
		[[ -s $tmp/port ]] && break
		sleep 0.1
	done
	PORT=$(cat "$tmp/port")
}
stop_server() {
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}

# expect NAME WANT(ok|fail) URL: runs the script with a 4 s deadline.
expect() {
	local name=$1 want=$2 url=$3 status=0 t0=$SECONDS took
	HEALTH_TIMEOUT=4 HEALTH_INTERVAL=1 "$script" "$url" >"$tmp/out" 2>&1 || status=$?
	took=$((SECONDS - t0))
	if [[ ($want == ok && $status -eq 0) || ($want == fail && $status -ne 0) ]] && ((took <= 6)); then
		echo "ok: $name: exit $status in ${took}s"
	else
		echo "FAILED: $name: wanted $want, got exit $status in ${took}s (deadline 4s):"
		cat "$tmp/out"
		failed=1
	fi
}

serve healthy
expect healthy ok "http://127.0.0.1:$PORT"
stop_server
serve late
expect "healthy after 1.5s" ok "http://127.0.0.1:$PORT/"
stop_server
serve unhealthy
expect "unhealthy (/ready 503)" fail "http://127.0.0.1:$PORT"
stop_server
# Nothing listens on the port the last server had.
expect down fail "http://127.0.0.1:$PORT"
exit "$failed"
