# shellcheck shell=bash
# ./dev bench [CARGO BENCH ARGS]: PostgreSQL + Kafka, then backend/benches/throughput.rs.

cmd_bench() {
	local status=0
	on_exit_stop 130
	check_external
	ensure_infra
	ensure_build_tools
	say "cargo bench -p backend --bench throughput (release build; BENCH_N=${BENCH_N:-5000} BENCH_GETS=${BENCH_GETS:-1000})"
	cargo bench -p backend --bench throughput "$@" || status=$?
	cleanup
	return "$status"
}
