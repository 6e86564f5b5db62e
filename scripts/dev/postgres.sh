# shellcheck shell=bash
# PostgreSQL: $DATABASE_URL when the caller set it (it must answer), else a throwaway cluster.
#   .dev/pg, .dev/pg-run            its data; socket and server log
#   /var/tmp/taskflow-dev-<hash>/   the same, when the `postgres` OS user cannot reach .dev/
#                                   (a parent directory such as /root is not searchable)

# Role, password, database and port of the throwaway cluster: those of the default DATABASE_URL.
pg_defaults() {
	local re='^postgres(ql)?://([^:@/]+):([^@/]*)@[^/:]+:([0-9]+)/([^?]+)$'
	[[ ${DEFAULT[DATABASE_URL]} =~ $re ]] ||
		die "config/defaults.env: DATABASE_URL must look like postgres://USER:PASSWORD@HOST:PORT/DB"
	PG_APP_USER=${BASH_REMATCH[2]}
	PG_APP_PASSWORD=${BASH_REMATCH[3]}
	PG_PORT=${DEV_PG_PORT:-${BASH_REMATCH[4]}}
	PG_APP_DB=${BASH_REMATCH[5]}
}

psql_bin() {
	command -v psql 2>/dev/null ||
		find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/psql' 2>/dev/null | sort -V | tail -n 1
}

db_address() { # host:port of a PostgreSQL URL (no credentials, for messages)
	local hp=${1#*://}
	hp=${hp##*@}
	hp=${hp%%/*}
	hp=${hp%%\?*}
	[[ $hp == *:* ]] || hp=$hp:5432
	printf '%s' "$hp"
}

db_url_answers() { # db_url_answers URL
	local psql hp
	psql=$(psql_bin) || true
	if [[ -n $psql ]]; then
		PGCONNECT_TIMEOUT=5 "$psql" -X -Atq -d "$1" -c 'select 1' >/dev/null 2>&1
		return
	fi
	# No client: settle for a TCP connect.
	read -r -a hp < <(host_port "$(db_address "$1")" 5432)
	tcp_open "${hp[0]}" "${hp[1]}"
}

# ensure_postgres: exports DATABASE_URL, the caller's (checked by check_external) or the
# throwaway cluster's, created or started as needed.
ensure_postgres() {
	local port
	if from_env DATABASE_URL; then
		say "PostgreSQL: using DATABASE_URL from the environment ($(db_address "$DATABASE_URL"))"
		return 0
	fi
	pg_defaults
	if pg_find_existing; then
		pg_ensure_bin "$(cat "$PGDATA_DIR/PG_VERSION")"
	else
		pg_ensure_bin
		pg_choose_home
		pg_prepare_dirs
		pg_initdb
	fi
	if pg_running; then
		port=$(pg_running_port)
		[[ $port == "$PG_PORT" ]] || warn "the throwaway cluster already runs on port $port (not $PG_PORT); using $port"
		say "PostgreSQL: throwaway cluster already running on 127.0.0.1:$port (left running on exit)"
	else
		port=$PG_PORT
		pg_start "$port"
	fi
	pg_bootstrap "$port" || die "could not create role/database $PG_APP_USER in the throwaway cluster (log: $PG_LOG)"
	export DATABASE_URL=postgres://$PG_APP_USER:$PG_APP_PASSWORD@127.0.0.1:$port/$PG_APP_DB
	db_url_answers "$DATABASE_URL" || die "PostgreSQL runs but $DATABASE_URL does not answer (log: $PG_LOG)"
	say "PostgreSQL ready: $DATABASE_URL"
}

pg_stop() {
	pg_running || return 0
	say "stopping the throwaway PostgreSQL ($(rel "$PGDATA_DIR"))"
	pg_as_owner "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null 2>&1 ||
		warn "pg_ctl stop failed (log: $PG_LOG)"
}

# pg_stop_leftover: stop this checkout's throwaway cluster, whoever started it (./dev down).
pg_stop_leftover() {
	pg_find_existing && pg_find_bin "$(cat "$PGDATA_DIR/PG_VERSION")" && pg_running || return 1
	pg_stop
}

pg_purge() {
	local home
	for home in "$DEV_DIR" "$(pg_fallback_home)"; do
		[[ -d $home/pg || -d $home/pg-run ]] || continue
		say "deleting the throwaway PostgreSQL data in $home/pg"
		rm -rf "$home/pg" "$home/pg-run"
	done
	rmdir "$(pg_fallback_home)" 2>/dev/null || true
	rm -rf "/tmp/taskflow-pg-$(repo_hash)"
}
