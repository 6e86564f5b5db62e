# shellcheck shell=bash
# Processes ./dev started, and the checkout's lock. .dev/pids/NAME.pid holds "PID STARTTIME"
# (the kernel's start time of that process), so a recycled pid is never taken for ours.

pid_starttime() { # field 22 of /proc/PID/stat; fails for a dead pid or a zombie
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	# shellcheck disable=SC2086 # split the fields on purpose
	set -- $stat
	[[ $1 != Z ]] || return 1
	printf '%s' "${20}"
}
pid_running() { [[ $1 =~ ^[0-9]+$ ]] && pid_starttime "$1" >/dev/null; }

pidfile_write() { # pidfile_write NAME PID
	mkdir -p "$PID_DIR"
	printf '%s %s\n' "$2" "$(pid_starttime "$2")" >"$PID_DIR/$1.pid"
}
pidfile_pid() { # pidfile_pid NAME: prints the pid if that very process still runs
	local pid start
	[[ -f $PID_DIR/$1.pid ]] || return 1
	read -r pid start <"$PID_DIR/$1.pid" || return 1
	[[ $pid =~ ^[0-9]+$ && -n $start && $(pid_starttime "$pid") == "$start" ]] || return 1
	printf '%s' "$pid"
}
pidfile_remove() { rm -f "$PID_DIR/$1.pid"; }

# start_daemon NAME LOG CMD...: CMD in its own session (a Ctrl-C reaches ./dev only, which
# then stops things in order), not holding the .dev/lock descriptor; sets DAEMON_PID.
start_daemon() {
	local name=$1 log=$2
	shift 2
	[[ ! -f $log ]] || mv -f "$log" "$log.1"
	setsid "$@" >"$log" 2>&1 </dev/null 9>&- &
	DAEMON_PID=$!
	pidfile_write "$name" "$DAEMON_PID"
}

# stop_pid PID NAME [TIMEOUT_S]: SIGTERM, wait, then SIGKILL.
stop_pid() {
	local pid=$1 name=$2 timeout=${3:-15} i
	pid_running "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < timeout * 10; i++)); do
		pid_running "$pid" || break
		sleep 0.1
	done
	if pid_running "$pid"; then
		warn "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	wait "$pid" 2>/dev/null || true
}

# stop_named NAME [TIMEOUT_S]: stop the process in NAME's pid file, if it still runs.
stop_named() {
	local pid t0
	t0=$(now_ms)
	if pid=$(pidfile_pid "$1"); then
		say "stopping $1 (pid $pid)"
		stop_pid "$pid" "$1" "${2:-15}"
		say "$1 stopped ($(since "$t0"))"
	fi
	pidfile_remove "$1"
	[[ -n $pid ]]
}

repo_hash() { printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12; }

LOCK_HELD=0
lock_dev() {
	mkdir -p "$DEV_DIR" "$LOG_DIR" "$PID_DIR"
	exec 9>"$DEV_DIR/lock"
	if ! flock -n 9; then
		say "waiting for another ./dev in this checkout (lock $(rel "$DEV_DIR/lock"))"
		flock -w 3600 9 || die "timed out waiting for $(rel "$DEV_DIR/lock")"
	fi
	LOCK_HELD=1
}
unlock_dev() {
	[[ $LOCK_HELD -eq 1 ]] || return 0
	flock -u 9 || true
	LOCK_HELD=0
}
