#!/usr/bin/env bash
# health-check.sh BASE_URL: poll BASE_URL/health and BASE_URL/ready until both answer 200,
# or fail when the deadline passes. Used after a deploy (.github/workflows/deploy.yaml).
#   HEALTH_TIMEOUT   seconds until giving up (default 180)
#   HEALTH_INTERVAL  seconds between rounds (default 5)
# Exit 0 when healthy, 1 when the deadline passed, 2 on bad usage.
set -euo pipefail

[[ $# -eq 1 && -n $1 ]] || {
	echo "usage: $0 BASE_URL" >&2
	exit 2
}
base=${1%/}
timeout=${HEALTH_TIMEOUT:-180}
interval=${HEALTH_INTERVAL:-5}
deadline=$((SECONDS + timeout))

status_of() { # the HTTP status of URL ("000" when nothing answers), within the time left
	local left=$((deadline - SECONDS))
	((left > 0)) || left=1
	curl -s -o /dev/null -w '%{http_code}' --max-time "$((left < 10 ? left : 10))" "$1" 2>/dev/null || true
}

while true; do
	health=$(status_of "$base/health")
	ready=$(status_of "$base/ready")
	echo "health-check: $base/health $health, /ready $ready"
	if [[ $health == 200 && $ready == 200 ]]; then
		echo "health-check: healthy"
		exit 0
	fi
	if ((SECONDS + interval > deadline)); then
		echo "health-check: not healthy within ${timeout}s" >&2
		exit 1
	fi
	sleep "$interval"
done
