# shellcheck shell=bash
# ./dev test [CARGO TEST ARGS]: linters and scripts/checks/*, then PostgreSQL + Kafka and
# cargo test, then the OpenAPI document. A summary; non-zero if anything failed.

cmd_test() {
	local t0
	t0=$(now_ms)
	on_exit_stop 130
	check_external
	# Quick checks first, while nothing is running yet.
	run_static_checks
	ensure_infra
	ensure_build_tools
	say "cargo test --workspace --no-fail-fast $* (DATABASE_URL=$DATABASE_URL KAFKA_BROKERS=$KAFKA_BROKERS KAFKA_ASSIGNMENT_STRATEGY=$KAFKA_ASSIGNMENT_STRATEGY)"
	run_check "cargo test" cargo test --workspace --no-fail-fast "$@"
	# Needs the backend binary, which cargo test has just built.
	run_check openapi check_openapi
	# Stop what this invocation started now, so the summary is the last thing printed.
	cleanup
	check_summary "$t0"
}
