# shellcheck shell=bash
# ./dev up [--follow] [--release]: PostgreSQL, Kafka, build, migrations, topics, the services;
# then wait.

FOLLOW_PID= # tail -F of the logs (--follow), stopped by cleanup

cmd_up() {
	local follow=0 arg t0 token logs
	# shellcheck disable=SC2034 # BUILD_PROFILE is read by services_build
	for arg in "$@"; do
		case $arg in
		-f | --follow) follow=1 ;;
		--release) BUILD_PROFILE=release ;;
		*) die "unknown option for up: $arg (see ./dev help)" ;;
		esac
	done
	t0=$(now_ms)
	on_exit_stop 0
	check_external
	services_check_ports
	ensure_infra
	from_env LOG_FORMAT || export LOG_FORMAT=pretty
	step build services_build
	step migrate run_once migrate "$BIN_DIR/backend" migrate
	step topics run_once topics "$BIN_DIR/backend" topics
	services_start

	token=$("$BIN_DIR/backend" token dev-user 2>"$LOG_DIR/token.log" | tail -n 1) || token=
	if [[ -z $token ]]; then
		show_tail "$LOG_DIR/token.log" 10
		token='<run ./dev token dev-user>'
	fi
	up_banner "$t0" "$token"
	if [[ $follow -eq 1 ]]; then
		mapfile -t logs < <(services_logs)
		tail -n 5 -F "${logs[@]}" 9>&- &
		# shellcheck disable=SC2034 # read by cleanup
		FOLLOW_PID=$!
	fi
	services_watch
}

run_once() { # run_once NAME CMD...: a one-shot command, output to .dev/logs/NAME.log
	local log=$LOG_DIR/$1.log
	shift
	say "running: $(basename -- "$1") ${*:2}"
	"$@" >"$log" 2>&1 || {
		show_tail "$log"
		die "$(basename -- "$1") ${*:2} failed (log: $(rel "$log"))"
	}
}

up_banner() { # up_banner START_MS TOKEN
	local base secret=dev
	base=$(service_url backend)
	[[ $JWT_SECRET == "$DEFAULT_JWT_SECRET" ]] || secret='from the environment'
	cat <<EOT

TaskFlow is up ($(since "$1")). Press Ctrl-C to stop.

$(step_report)

  UI           $base/#token=$2
  API          $base/api
  OpenAPI      $base/openapi.json
$(services_print)
    $(rel "$TANSU_LOG") (Tansu, when ./dev started it)
  PostgreSQL   $DATABASE_URL
  Kafka        $KAFKA_BROKERS

  Bearer token for user dev-user (JWT_SECRET: $secret):
    export TOKEN='$2'

  Try it:
    curl -sS -X POST $base/api/dev-user/tasks \\
      -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
      -d '{"title":"Try TaskFlow"}'
    curl -sS $base/api/dev-user/tasks -H "Authorization: Bearer \$TOKEN"

EOT
}
