# shellcheck shell=bash
# Helpers every ./dev command uses: output, timing, processes and pid files, the lock, defaults.
# Sourced by ./dev (REPO_ROOT is set, the working directory is the repository root).

DEV_DIR=$REPO_ROOT/.dev
DEFAULTS_ENV=$REPO_ROOT/config/defaults.env
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cargo/taskflow-target}
# shellcheck disable=SC2034 # read by the other parts of ./dev
{
	LOG_DIR=$DEV_DIR/logs
	PID_DIR=$DEV_DIR/pids
	DEFAULT_JWT_SECRET=taskflow-dev-secret-change-me
	READY_TIMEOUT=${DEV_READY_TIMEOUT:-60}
	BIN_DIR=$CARGO_TARGET_DIR/debug
	# `./dev up --release` sets it to release; services_build then points BIN_DIR there.
	BUILD_PROFILE=debug
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
