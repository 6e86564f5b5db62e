# shellcheck shell=bash
# The throwaway PostgreSQL cluster: where it lives, its binaries, initdb, settings, start and the
# app role. Used by ensure_postgres (postgres.sh).

PG_MAJOR=${DEV_PG_MAJOR:-15}
PG_BIN='' PG_HOME='' PGDATA_DIR='' PG_RUN_DIR='' PG_SOCK_DIR='' PG_LOG=''
STARTED_PG=0 # 1 when this invocation started the cluster (stop_infra stops it)

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
# PostgreSQL's default of 128MB no longer held the pages the bench's relay reads when it runs
# behind (35 % of its session's time in IO:DataFileRead at c=16 creates).
shared_buffers = 512MB
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
  -- To see every session in pg_stat_activity, autovacuum too (./dev bench samples it).
  IF NOT pg_has_role('$PG_APP_USER', 'pg_read_all_stats', 'MEMBER') THEN
    GRANT pg_read_all_stats TO $PG_APP_USER;
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_APP_DB OWNER $PG_APP_USER'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_APP_DB')
\gexec
SQL
}
