# shellcheck shell=bash
# ./dev down [--purge]: stop what a crashed ./dev left running (by its pid files), and with
# --purge delete the throwaway database and the logs.

cmd_down() {
	local purge=0 arg name stopped=0
	for arg in "$@"; do
		case $arg in
		--purge) purge=1 ;;
		*) die "unknown option for down: $arg (see ./dev help)" ;;
		esac
	done
	lock_dev
	for name in "${SERVICES[@]}" tansu; do
		if stop_named "$name"; then stopped=1; fi
	done
	if pg_stop_leftover; then stopped=1; fi
	[[ $stopped -eq 1 ]] || say "nothing of this checkout's dev stack was running"
	if [[ $purge -eq 1 ]]; then
		pg_purge
		say "deleting logs in $(rel "$LOG_DIR") and $(rel "$TANSU_LOG")"
		rm -rf "$LOG_DIR" "$PID_DIR" "$TANSU_LOG" "$TANSU_LOG.1"
	fi
	unlock_dev
}
