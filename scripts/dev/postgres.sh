# shellcheck shell=bash
# PostgreSQL: $DATABASE_URL when the caller set it (it must answer), else a throwaway cluster.
#   .dev/pg, .dev/pg-run            its data; socket and server log
#   /var/tmp/taskflow-dev-<hash>/   the same, when the `postgres` OS user cannot reach .dev/
#                                   (a parent directory such as /root is not searchable)

PG_MAJOR=${DEV_PG_MAJOR:-15}
PG_BIN='' PG_HOME='' PGDATA_DIR='' PG_RUN_DIR='' PG_SOCK_DIR='' PG_LOG=''
STARTED_PG=0 # 1 when this invocation started the cluster (stop_infra stops it)

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

pg_fallback_home() { printf '/var/tmp/taskflow-dev-%s' "$(repo_hash)"; }

pg_set_home() {
	PG_HOME=$1
	PGDATA_DIR=$PG_HOME/pg
	PG_RUN_DIR=$PG_HOME/pg-run
	PG_LOG=$PG_RUN_DIR/postgres.log
	# A Unix socket path must fit in 107 bytes ("<dir>/.s.PGSQL.<port>").
	PG_SOCK_DIR=$PG_RUN_DIR
	((${#PG_RUN_DIR} + 20 <= 107)) || PG_SOCK_DIR=/tmp/taskflow-pg-$(repo_hash)
}

pg_find_existing() { # sets PG_HOME if this checkout already has a throwaway cluster
	local home
	for home in "$DEV_DIR" "$(pg_fallback_home)"; do
		if [[ -f $home/pg/PG_VERSION ]]; then
			pg_set_home "$home"
			return 0
		fi
	done
	return 1
}

# initdb and pg_ctl refuse root: run them as the cluster's owner.
pg_as_owner() {
	if [[ $EUID -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
pg_chown() { if [[ $EUID -eq 0 ]]; then chown -R postgres:postgres "$@"; fi; }

# pg_find_bin [MAJOR]: sets PG_BIN. An existing cluster needs the MAJOR that created it;
# a new one prefers $PG_MAJOR, else the newest installed.
pg_find_bin() {
	local dir
	if [[ -n ${1:-} ]]; then
		[[ -x /usr/lib/postgresql/$1/bin/pg_ctl ]] || return 1
		PG_BIN=/usr/lib/postgresql/$1/bin
		return 0
	fi
	dir=/usr/lib/postgresql/$PG_MAJOR/bin
	[[ -x $dir/initdb ]] || dir=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' -printf '%h\n' 2>/dev/null | sort -V | tail -n 1)
	[[ -n $dir ]] && PG_BIN=$dir
}

pg_ensure_bin() { # pg_ensure_bin [MAJOR]
	local want=${1:-}
	pg_find_bin "$want" && return 0
	say "PostgreSQL ${want:-$PG_MAJOR} server binaries not found; installing them"
	apt_install "postgresql-${want:-$PG_MAJOR}" || [[ -n $want ]] || apt_install postgresql || true
	pg_find_bin "$want" || die "could not install PostgreSQL ${want:-$PG_MAJOR}; install it (or ./dev down --purge an old cluster) and re-run"
}

# pg_choose_home: .dev/ unless we are root and the `postgres` OS user cannot reach it; then
# /var/tmp (always reachable), one folder per checkout.
pg_choose_home() {
	mkdir -p "$DEV_DIR"
	if [[ $EUID -ne 0 ]] || (cd / && runuser -u postgres -- test -x "$DEV_DIR" -a -r "$DEV_DIR") 2>/dev/null; then
		pg_set_home "$DEV_DIR"
	else
		pg_set_home "$(pg_fallback_home)"
		say "the postgres OS user cannot reach $DEV_DIR, so the throwaway cluster goes to $PG_HOME"
	fi
}

pg_prepare_dirs() {
	mkdir -p "$PG_HOME" "$PGDATA_DIR" "$PG_RUN_DIR" "$PG_SOCK_DIR"
	chmod 700 "$PGDATA_DIR" "$PG_RUN_DIR" "$PG_SOCK_DIR"
	pg_chown "$PGDATA_DIR" "$PG_RUN_DIR" "$PG_SOCK_DIR"
}

pg_initdb() {
	local log=$LOG_DIR/initdb.log
	[[ -z $(ls -A "$PGDATA_DIR" 2>/dev/null) ]] ||
		die "$PGDATA_DIR is not empty but holds no cluster (an interrupted initdb?); remove it with ./dev down --purge"
	say "creating a throwaway PostgreSQL cluster in $(rel "$PGDATA_DIR") ($("$PG_BIN/postgres" --version))"
	pg_as_owner "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres -E UTF8 --locale=C \
		--auth-local=trust --auth-host=scram-sha-256 --no-sync >"$log" 2>&1 || {
		show_tail "$log"
		die "initdb failed (log: $(rel "$log"))"
	}
	printf "\n# Added by ./dev: settings for the throwaway development cluster.\ninclude_if_exists = 'taskflow-dev.conf'\n" >>"$PGDATA_DIR/postgresql.conf"
}

# Written before every start, so DEV_PG_PORT changes take effect.
pg_write_conf() {
	[[ $PG_SOCK_DIR != *"'"* ]] || die "the socket directory path must not contain a quote: $PG_SOCK_DIR"
	cat >"$PGDATA_DIR/taskflow-dev.conf" <<CONF
# Written by ./dev on every start; edit scripts/dev/postgres.sh instead.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK_DIR'
unix_socket_permissions = 0700
max_connections = 200
password_encryption = 'scram-sha-256'
# Throwaway data: durability is traded for speed (tests create many databases).
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
	pg_chown "$PGDATA_DIR/taskflow-dev.conf"
}

pg_running() {
	[[ -n $PGDATA_DIR && -f $PGDATA_DIR/PG_VERSION && -n $PG_BIN ]] || return 1
	pg_as_owner "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}
pg_running_port() { sed -n 4p "$PGDATA_DIR/postmaster.pid" 2>/dev/null; }

pg_start() { # pg_start PORT
	tcp_open 127.0.0.1 "$1" && die "port $1 is in use by $(port_owner "$1"), not by this checkout's throwaway cluster.
  If it is another TaskFlow checkout's cluster, use it: DATABASE_URL=postgres://$PG_APP_USER:$PG_APP_PASSWORD@127.0.0.1:$1/$PG_APP_DB ./dev ...
  Otherwise pick another port: DEV_PG_PORT=$(free_port_after "$1") ./dev ..."
	pg_prepare_dirs
	pg_write_conf
	[[ ! -f $PG_LOG ]] || mv -f "$PG_LOG" "$PG_LOG.1"
	say "PostgreSQL: starting the throwaway cluster on 127.0.0.1:$1"
	# 9>&-: the server must not inherit the .dev/lock descriptor.
	pg_as_owner "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t 60 start >/dev/null 2>&1 9>&- || {
		show_tail "$PG_LOG"
		die "PostgreSQL did not start (log: $PG_LOG)"
	}
	# shellcheck disable=SC2034 # read by stop_infra
	STARTED_PG=1
}

pg_bootstrap() { # idempotent: the app role (CREATEDB, no superuser) and its database
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK_DIR" -p "$1" -U postgres -d postgres >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_APP_USER') THEN
    CREATE ROLE $PG_APP_USER LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD '$PG_APP_PASSWORD';
  ELSE
    ALTER ROLE $PG_APP_USER LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD '$PG_APP_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_APP_DB OWNER $PG_APP_USER'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_APP_DB')
\gexec
SQL
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
