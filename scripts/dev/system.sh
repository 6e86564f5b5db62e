# shellcheck shell=bash
# System helpers: root, apt, TCP probes and addresses.

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
