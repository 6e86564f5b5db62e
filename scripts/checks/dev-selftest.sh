#!/usr/bin/env bash
# ./dev must not paper over a misconfiguration: a DATABASE_URL or KAFKA_BROKERS that is set
# but does not answer makes `./dev up` and `./dev test` exit non-zero at once, naming the
# variable and the address, instead of starting throwaway infrastructure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# A port nothing listens on: one the kernel just handed out and that was closed again.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
out=$(mktemp)
trap 'rm -f "$out"' EXIT
failed=0

# expect_refusal VAR VALUE ADDRESS COMMAND: ./dev COMMAND with only VAR set fails within 30 s
# and its message names VAR and ADDRESS.
expect_refusal() {
	local var=$1 value=$2 addr=$3 cmd=$4 status=0
	env -u DATABASE_URL -u KAFKA_BROKERS "$var=$value" timeout 30 ./dev "$cmd" </dev/null >"$out" 2>&1 || status=$?
	if [[ $status -ne 0 && $status -ne 124 ]] && grep -q "$var" "$out" && grep -qF "$addr" "$out"; then
		echo "ok: $var=$value ./dev $cmd: exit $status: $(grep -m1 error "$out")"
	else
		echo "FAILED: $var=$value ./dev $cmd: exit $status (124: still running after 30 s), output:"
		tail -n 20 "$out"
		failed=1
	fi
}

expect_refusal DATABASE_URL "postgres://taskflow:taskflow@127.0.0.1:$port/taskflow" "127.0.0.1:$port" up
expect_refusal KAFKA_BROKERS "127.0.0.1:$port" "127.0.0.1:$port" up
expect_refusal DATABASE_URL "postgres://taskflow:taskflow@127.0.0.1:$port/taskflow" "127.0.0.1:$port" test
expect_refusal KAFKA_BROKERS "127.0.0.1:$port" "127.0.0.1:$port" test
exit "$failed"
