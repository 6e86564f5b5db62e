# shellcheck shell=bash
# The services ./dev up runs, defined once; build, start, readiness, stop and the printed
# URLs all come from this table. DEV_<NAME>_ADDR (e.g. DEV_RECURRENCE_WORKER_ADDR) moves one.

#  name               binary             listen-address variable  address         ready path
SERVICE_TABLE='
   backend            backend            HTTP_ADDR                127.0.0.1:8000  /ready
   recurrence-worker  recurrence-worker  METRICS_ADDR             127.0.0.1:9101  /ready
   notifier           notifier           METRICS_ADDR             127.0.0.1:9102  /ready
'
SERVICES=()
declare -A SVC_BIN=() SVC_VAR=() SVC_ADDR=() SVC_READY=()
STARTED_SERVICES=()

load_services() {
	local name bin var addr ready knob
	while read -r name bin var addr ready; do
		[[ -n $name ]] || continue
		knob=DEV_$(tr 'a-z-' 'A-Z_' <<<"$name")_ADDR
		SERVICES+=("$name")
		SVC_BIN[$name]=$bin
		SVC_VAR[$name]=$var
		SVC_ADDR[$name]=${!knob:-$addr}
		SVC_READY[$name]=$ready
	done <<<"$SERVICE_TABLE"
}
load_services

service_url() { # service_url NAME [PATH]: where to reach it (0.0.0.0 binds answer on loopback)
	printf 'http://%s%s' "${SVC_ADDR[$1]/0.0.0.0/127.0.0.1}" "${2:-}"
}

# ensure_build_tools: what the workspace's C parts need (librdkafka is built from source with
# make; libz-sys wants zlib). All present on the usual image; installed if missing.
ensure_build_tools() {
	local missing=()
	command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"
	command -v cc >/dev/null 2>&1 || missing+=(gcc g++)
	command -v make >/dev/null 2>&1 || missing+=(make)
	command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
	[[ -f /usr/include/zlib.h ]] || missing+=(zlib1g-dev)
	command -v curl >/dev/null 2>&1 || missing+=(curl)
	[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}" || die "could not install build tools: ${missing[*]}"
}

services_build() {
	local name args=()
	for name in "${SERVICES[@]}"; do args+=(--bin "${SVC_BIN[$name]}"); done
	ensure_build_tools
	if [[ $BUILD_PROFILE == release ]]; then
		args+=(--release)
		BIN_DIR=$CARGO_TARGET_DIR/release
	fi
	say "building: cargo build --workspace ${args[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
	cargo build --workspace "${args[@]}" || die "cargo build failed"
}

services_check_ports() { # die if a service's address is taken
	local name hp pid
	for name in "${SERVICES[@]}"; do
		read -r -a hp < <(host_port "${SVC_ADDR[$name]/0.0.0.0/127.0.0.1}" 80)
		tcp_open "${hp[0]}" "${hp[1]}" || continue
		if pid=$(pidfile_pid "$name"); then
			die "$name from another ./dev up is still running (pid $pid) on ${SVC_ADDR[$name]}: stop that one (Ctrl-C there, or ./dev down)"
		fi
		die "port ${hp[1]} ($name) is in use by $(port_owner "${hp[1]}"); free it or set DEV_$(tr 'a-z-' 'A-Z_' <<<"$name")_ADDR"
	done
}

service_start() { # service_start NAME
	local name=$1 addr=${SVC_ADDR[$1]} bin=$BIN_DIR/${SVC_BIN[$1]}
	[[ -x $bin ]] || die "$bin not found after the build"
	start_daemon "$name" "$LOG_DIR/$name.log" env "${SVC_VAR[$name]}=$addr" "$bin"
	STARTED_SERVICES+=("$name")
	say "started $name (pid $DAEMON_PID, ${SVC_VAR[$name]}=$addr), log $(rel "$LOG_DIR/$name.log")"
}

service_died() { # service_died NAME WHAT: if it is no longer running, show its log and die
	local status=0
	pidfile_pid "$1" >/dev/null && return 1
	wait "$(cut -d' ' -f1 "$PID_DIR/$1.pid")" 2>/dev/null || status=$?
	pidfile_remove "$1"
	show_tail "$LOG_DIR/$1.log"
	die "$1 exited (status $status) $2 (log: $(rel "$LOG_DIR/$1.log"))"
}

service_wait_ready() { # service_wait_ready NAME: until its ready URL answers 200
	local name=$1 url code i
	url=$(service_url "$name" "${SVC_READY[$name]}")
	for ((i = 0; i < READY_TIMEOUT * 4; i++)); do
		service_died "$name" "before answering $url" || true
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null) || true
		if [[ $code == 200 ]]; then
			say "$name is ready ($url answered 200)"
			return 0
		fi
		sleep 0.25
	done
	show_tail "$LOG_DIR/$name.log"
	die "$name did not answer $url with 200 within ${READY_TIMEOUT}s (last status: ${code:-none}; log: $(rel "$LOG_DIR/$name.log"))"
}

services_start() {
	local name
	for name in "${SERVICES[@]}"; do service_start "$name"; done
	for name in "${SERVICES[@]}"; do step "ready $name" service_wait_ready "$name"; done
}

services_stop() { # what this invocation started, newest first
	local i
	for ((i = ${#STARTED_SERVICES[@]} - 1; i >= 0; i--)); do stop_named "${STARTED_SERVICES[i]}" || true; done
	STARTED_SERVICES=()
}

services_watch() { # returns only by dying, when a service exits on its own
	local name
	while true; do
		for name in "${SERVICES[@]}"; do service_died "$name" "unexpectedly; stopping the rest" || true; done
		sleep 1 &
		wait $! || true
	done
}

services_print() { # the URL and log lines of the ready banner
	local name
	for name in "${SERVICES[@]}"; do
		printf '  %-18s %s   metrics %s\n' "$name" "$(service_url "$name" "${SVC_READY[$name]}")" "$(service_url "$name" /metrics)"
	done
	printf '  Logs\n'
	for name in "${SERVICES[@]}"; do printf '    %s\n' "$(rel "$LOG_DIR/$name.log")"; done
}

services_logs() { # every service's log file
	local name
	for name in "${SERVICES[@]}"; do printf '%s\n' "$LOG_DIR/$name.log"; done
}
