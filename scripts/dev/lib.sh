# shellcheck shell=bash
# Helpers every ./dev command uses: output, timing, processes and pid files, the lock, defaults.
# Sourced by ./dev (REPO_ROOT is set, the working directory is the repository root).

DEV_DIR=$REPO_ROOT/.dev
LOG_DIR=$DEV_DIR/logs
PID_DIR=$DEV_DIR/pids
DEFAULTS_ENV=$REPO_ROOT/config/defaults.env
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cargo/taskflow-target}
# shellcheck disable=SC2034 # read by the other parts of ./dev
{
	DEFAULT_JWT_SECRET=taskflow-dev-secret-change-me
	READY_TIMEOUT=${DEV_READY_TIMEOUT:-60}
	BIN_DIR=$CARGO_TARGET_DIR/debug
}

# Progress goes to stderr, so `./dev token` prints only the token. `|| true`: a closed
# stderr (e.g. `./dev up | tee` after Ctrl-C) must not stop the cleanup.
say() { printf 'dev: %s\n' "$*" >&2 || true; }
warn() { printf 'dev: warning: %s\n' "$*" >&2 || true; }
die() {
	printf 'dev: error: %s\n' "$*" >&2
	exit 1
}
now_ms() { date +%s%3N; }
since() { # since START_MS -> "1.2s"
	local t=$(($(now_ms) - $1))
	printf '%d.%ds' $((t / 1000)) $((t % 1000 / 100))
}
show_tail() { # show_tail FILE [LINES]
	local file=$1 lines=${2:-30}
	[[ -s $file ]] || return 0
	printf 'dev: ---- last %s lines of %s ----\n' "$lines" "$file" >&2
	tail -n "$lines" "$file" >&2 || true
	printf 'dev: ----\n' >&2
}
rel() { # a path relative to the repository, for messages
	if [[ $1 == "$REPO_ROOT"/* ]]; then printf '%s' "${1#"$REPO_ROOT"/}"; else printf '%s' "$1"; fi
}

# step NAME CMD...: runs CMD and remembers how long it took, for step_report.
STEP_TIMES=()
step() {
	local name=$1 t0
	shift
	t0=$(now_ms)
	"$@"
	STEP_TIMES+=("$(printf '%-24s %s' "$name" "$(since "$t0")")")
}
step_report() {
	local line
	printf '  Steps\n'
	for line in "${STEP_TIMES[@]}"; do printf '    %s\n' "$line"; done
}

# ---------------------------------------------------------------------------------------
# Defaults: config/defaults.env, where a non-empty value from the environment wins.
# ENV_SET holds what the caller set; DEFAULT holds the file's values.

declare -A ENV_SET=() DEFAULT=()
load_defaults() {
	local key keys
	keys=$(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$DEFAULTS_ENV")
	for key in $keys; do
		if [[ -n ${!key:-} ]]; then ENV_SET[$key]=${!key}; fi
	done
	set -a
	# shellcheck source=config/defaults.env
	source "$DEFAULTS_ENV"
	set +a
	# shellcheck disable=SC2034 # read by the other parts of ./dev
	for key in $keys; do DEFAULT[$key]=${!key}; done
	for key in "${!ENV_SET[@]}"; do export "$key=${ENV_SET[$key]}"; done
}
from_env() { [[ -n ${ENV_SET[$1]+x} ]]; }

# ---------------------------------------------------------------------------------------
# System

as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

# apt_install PKG...: `apt-get update` once per invocation, then install. Non-zero on failure.
APT_UPDATED=0
apt_install() {
	local log=$LOG_DIR/apt.log apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
	command -v apt-get >/dev/null 2>&1 || {
		warn "apt-get not found: install $* by hand"
		return 1
	}
	mkdir -p "$LOG_DIR"
	if [[ $APT_UPDATED -eq 0 ]]; then
		say "apt-get update (needed to install: $*)"
		as_root "${apt[@]}" update >>"$log" 2>&1 || {
			show_tail "$log" 20
			warn "apt-get update failed (log: $(rel "$log"))"
			return 1
		}
		APT_UPDATED=1
	fi
	say "apt-get install $*"
	as_root "${apt[@]}" install -y --no-install-recommends "$@" >>"$log" 2>&1 || {
		show_tail "$log" 20
		warn "apt-get install $* failed (log: $(rel "$log"))"
		return 1
	}
}

# tcp_open HOST PORT: something accepts TCP connections there.
tcp_open() {
	# shellcheck disable=SC2016 # $1/$2 expand in the inner bash
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# host_port HOSTPORT DEFAULT_PORT: "host port" from host:port, [v6]:port or host.
host_port() {
	local hp=$1 host port=$2
	if [[ $hp =~ ^\[([^]]+)\](:([0-9]+))?$ ]]; then
		host=${BASH_REMATCH[1]}
		port=${BASH_REMATCH[3]:-$port}
	elif [[ $hp == *:* ]]; then
		host=${hp%:*}
		port=${hp##*:}
	else
		host=$hp
	fi
	printf '%s %s\n' "${host:-127.0.0.1}" "$port"
}

port_owner() { # a description of the process listening on PORT (best effort)
	local out=
	if command -v ss >/dev/null 2>&1; then
		out=$(ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))$/\1/p' | head -n 1) || true
	fi
	printf '%s' "${out:-unknown process}"
}

free_port_after() { # the first port above PORT that nothing listens on (for hints)
	local p=$(($1 + 1))
	while ((p < $1 + 50)) && tcp_open 127.0.0.1 "$p"; do p=$((p + 1)); done
	printf '%s' "$p"
}

# ---------------------------------------------------------------------------------------
# Processes ./dev started: .dev/pids/NAME.pid holds "PID STARTTIME" (the kernel's start time
# of that process), so a recycled pid is never taken for ours.

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
