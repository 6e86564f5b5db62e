# shellcheck shell=bash
# ./dev bench [CARGO BENCH ARGS]: PostgreSQL + Kafka, then backend/benches/throughput.rs.

cmd_bench() {
	local status=0
	on_exit_stop 130
	check_external
	ensure_infra
	ensure_build_tools
	command -v wrk >/dev/null 2>&1 || apt_install wrk || die "could not install wrk, the bench's load generator"
	# The workers' rows run the release service binaries as their own processes.
	say "cargo build --release --bins -p backend -p recurrence-worker -p notifier"
	cargo build --release --bins -p backend -p recurrence-worker -p notifier || {
		cleanup
		return 1
	}
	# Its CPU per request is then counted too (the bench's notes); not when the broker is elsewhere.
	BENCH_BROKER_PID=$(pidfile_pid tansu) && export BENCH_BROKER_PID
	say "cargo bench -p backend --bench throughput (release build; BENCH_SECONDS=${BENCH_SECONDS:-8} BENCH_LIST_SECONDS=${BENCH_LIST_SECONDS:-3})"
	cargo bench -p backend --bench throughput "$@" || status=$?
	cleanup
	return "$status"
}
