# shellcheck shell=bash
# The infrastructure the services and tests need: PostgreSQL and a Kafka broker.

# check_external: a DATABASE_URL or KAFKA_BROKERS that the caller set must answer; starting
# throwaway infrastructure instead would hide a misconfiguration (e.g. in CI).
check_external() {
	if from_env DATABASE_URL && ! db_url_answers "$DATABASE_URL"; then
		die "DATABASE_URL is set but PostgreSQL at $(db_address "$DATABASE_URL") does not answer; fix it, or unset DATABASE_URL to let ./dev start a throwaway cluster"
	fi
	if from_env KAFKA_BROKERS && ! kafka_answers "$KAFKA_BROKERS"; then
		die "KAFKA_BROKERS is set but no broker answers at ${KAFKA_BROKERS%%,*}; fix it, or unset KAFKA_BROKERS to let ./dev start Tansu"
	fi
}

# ensure_infra: PostgreSQL and Kafka up, DATABASE_URL and KAFKA_BROKERS exported (call
# check_external first). Holds the checkout's lock meanwhile, so two ./dev never start two.
ensure_infra() {
	lock_dev
	step postgres ensure_postgres
	step kafka ensure_kafka
	unlock_dev
}

# stop_infra: what this invocation started, newest first.
stop_infra() {
	if [[ $STARTED_TANSU -eq 1 ]]; then stop_named tansu || true; fi
	if [[ $STARTED_PG -eq 1 ]]; then pg_stop; fi
}

# cleanup (EXIT trap): stop what this invocation started, newest first, once.
CLEANED_UP=0
cleanup() {
	local status=$?
	[[ $CLEANED_UP -eq 0 ]] || return 0
	CLEANED_UP=1
	trap '' INT TERM HUP PIPE
	set +e
	if [[ -n ${FOLLOW_PID:-} ]]; then kill "$FOLLOW_PID" 2>/dev/null && wait "$FOLLOW_PID" 2>/dev/null; fi
	services_stop
	stop_infra
	unlock_dev
	# Children started after this (scripts/checks/* in ./dev test) must not inherit ignored signals.
	trap - INT TERM HUP PIPE
	return "$status"
}

on_signal() { # on_signal NAME STATUS: exit runs the EXIT trap (cleanup)
	trap '' PIPE
	say "$1 received: stopping what this ./dev started"
	exit "$2"
}

on_exit_stop() { # on_exit_stop STATUS_ON_SIGNAL (0 for up: a requested stop is a success)
	local sig
	trap cleanup EXIT
	for sig in INT TERM HUP; do
		# shellcheck disable=SC2064 # expand now, on purpose
		trap "on_signal SIG$sig $1" "$sig"
	done
}
