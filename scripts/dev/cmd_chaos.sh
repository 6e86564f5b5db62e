# shellcheck shell=bash
# ./dev chaos [--minutes N] [--seed S]: the stack twice over (two backends, two recurrence
# workers, two notifiers) and a webhook receiver, under load and a seeded fault schedule, then
# the invariants (scripts/chaos/). It restarts PostgreSQL and pauses the broker, so it only runs
# on a throwaway PostgreSQL and Tansu that it starts itself.

CHAOS_REQUIREMENTS=scripts/tools/chaos-requirements.txt
CHAOS_VENV=${TASKFLOW_CACHE:-$HOME/.cache/taskflow}/chaos-venv

# chaos_infra_busy: prints why ./dev chaos cannot have the infrastructure to itself, if so.
chaos_infra_busy() {
	local pid
	if from_env DATABASE_URL || from_env KAFKA_BROKERS; then
		printf 'DATABASE_URL or KAFKA_BROKERS is set: ./dev chaos restarts PostgreSQL and pauses the broker, so it only runs on the throwaway ones it starts (unset them)'
	elif pid=$(pidfile_pid tansu); then
		printf "this checkout's Tansu (pid %s) is running for another ./dev: stop it first (./dev down)" "$pid"
	elif pg_find_existing && pg_find_bin "$(cat "$PGDATA_DIR/PG_VERSION")" && pg_running; then
		printf "this checkout's PostgreSQL is running for another ./dev: stop it first (./dev down)"
	else
		return 1
	fi
}

chaos_venv() {
	if [[ ! -f $CHAOS_VENV/.installed || $CHAOS_REQUIREMENTS -nt $CHAOS_VENV/.installed ]]; then
		say "installing $CHAOS_REQUIREMENTS into ${CHAOS_VENV/#"$HOME"/\~}"
		command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv || return 1
		python3 -m venv "$CHAOS_VENV" >&2 || { apt_install python3-venv && python3 -m venv "$CHAOS_VENV" >&2; } || return 1
		"$CHAOS_VENV/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r "$CHAOS_REQUIREMENTS" >&2 || return 1
		touch "$CHAOS_VENV/.installed"
	fi
}

cmd_chaos() {
	local busy status=0
	busy=$(chaos_infra_busy) && die "$busy"
	on_exit_stop 130
	step "chaos venv" chaos_venv || die "could not install $CHAOS_REQUIREMENTS"
	ensure_infra
	step build services_build
	step migrate run_once migrate "$BIN_DIR/backend" migrate
	step topics run_once topics "$BIN_DIR/backend" topics
	# What the runner needs to restart PostgreSQL and pause the broker ./dev started.
	CHAOS_PG_CTL=$PG_BIN/pg_ctl CHAOS_PGDATA=$PGDATA_DIR CHAOS_PG_LOG=$PG_LOG \
		CHAOS_PG_OWNER=$([[ $EUID -eq 0 ]] && printf postgres) \
		CHAOS_TANSU_PID=$(pidfile_pid tansu) CHAOS_BIN_DIR=$BIN_DIR CHAOS_LOG_DIR=$LOG_DIR/chaos \
		"$CHAOS_VENV/bin/python" scripts/chaos/chaos.py "$@" 9>&- || status=$?
	cleanup
	return "$status"
}
