# shellcheck shell=bash
# ./dev token USER_ID [TTL_SECONDS]: prints only the token (backend token).

cmd_token() {
	[[ $# -ge 1 && $# -le 2 && -n $1 ]] || die "usage: ./dev token USER_ID [TTL_SECONDS]"
	ensure_build_tools
	cargo build --quiet -p backend --bin backend >&2 || die "cargo build -p backend failed"
	exec "$BIN_DIR/backend" token "$@"
}
