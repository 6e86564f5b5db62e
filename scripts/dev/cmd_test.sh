# shellcheck shell=bash
# ./dev test [CARGO TEST ARGS]: linters, then PostgreSQL + Kafka and cargo test, the OpenAPI
# document, schemathesis against the backend, and scripts/checks/*. A summary; non-zero if anything failed.

cmd_test() {
	local t0
	t0=$(now_ms)
	on_exit_stop 130
	check_external
	# Quick checks first, while nothing is running yet.
	run_linters
	ensure_infra
	ensure_build_tools
	# Tests that must stall a broker start one of their own from this binary.
	TANSU_BIN=$(tansu_bin) || die "no tansu binary for the tests that run a broker of their own"
	export TANSU_BIN
	# What the tests leave for scripts/checks/* (metrics dumps, saved messages) must be this run's.
	rm -rf target/metrics target/cloudevents
	say "cargo test --workspace --no-fail-fast $* (DATABASE_URL=$DATABASE_URL KAFKA_BROKERS=$KAFKA_BROKERS KAFKA_ASSIGNMENT_STRATEGY=$KAFKA_ASSIGNMENT_STRATEGY)"
	run_check "cargo test" cargo test --workspace --no-fail-fast "$@"
	# Needs the backend binary, which cargo test has just built.
	run_check openapi check_openapi
	# The document fuzzed against a running backend, while PostgreSQL and Kafka are still up.
	run_check schemathesis check_schemathesis
	# Stop what this invocation started: scripts/checks/* need none of it, and the chaos run
	# starts its own.
	cleanup
	run_repo_checks
	run_check chaos chaos_short
	check_summary "$t0"
}

# The short chaos run: a minute, fixed seed, on a PostgreSQL and Tansu of its own.
CHAOS_TEST_SEED=20261201
chaos_short() {
	local busy
	if busy=$(chaos_infra_busy); then
		printf '%s\n' "$busy"
		return 77
	fi
	env -u DATABASE_URL -u KAFKA_BROKERS "$REPO_ROOT/dev" chaos --minutes 1 --seed "$CHAOS_TEST_SEED"
}
