# shellcheck shell=bash
# ./dev fuzz [SECONDS] [TARGET...]: each cargo-fuzz target of fuzz/ (all by default) for SECONDS
# (default 30), from its seeds and the corpus of earlier runs; a table of executions per target.
# Needs the nightly toolchain and cargo-fuzz, which it installs when missing. Not part of
# ./dev test. A crash leaves its input in fuzz/artifacts/TARGET/ and fails the run.

FUZZ_DIR=$REPO_ROOT/fuzz
# Its own target dir: nightly and the sanitizer-coverage flags must not touch the stable cache.
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}

ensure_cargo_fuzz() {
	rustup toolchain list | grep -q '^nightly' || {
		say "installing the nightly toolchain (rustup toolchain install nightly --profile minimal)"
		rustup toolchain install nightly --profile minimal >&2 || die "could not install nightly"
	}
	command -v cargo-fuzz >/dev/null 2>&1 || {
		say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
		cargo install cargo-fuzz --locked >&2 || die "could not install cargo-fuzz"
	}
}

cmd_fuzz() {
	local seconds=30 targets=() target log execs failed=0 lines=()
	if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
		seconds=$1
		shift
	fi
	targets=("$@")
	ensure_cargo_fuzz
	cd "$FUZZ_DIR" || die "no $FUZZ_DIR"
	[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < <(cargo +nightly fuzz list)
	say "building ${targets[*]} (cargo +nightly fuzz build -s none, CARGO_TARGET_DIR=$(rel "$FUZZ_TARGET_DIR"))"
	# -s none: the targets are safe Rust, so panics (including overflow checks) are the findings.
	CARGO_TARGET_DIR=$FUZZ_TARGET_DIR cargo +nightly fuzz build -s none || die "cargo fuzz build failed"
	mkdir -p "$LOG_DIR/fuzz"
	for target in "${targets[@]}"; do
		log=$LOG_DIR/fuzz/$target.log
		mkdir -p "corpus/$target"
		say "fuzzing $target for ${seconds}s (log $(rel "$log"))"
		if CARGO_TARGET_DIR=$FUZZ_TARGET_DIR cargo +nightly fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
			-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
			execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
			lines+=("$(printf '%-22s ok      %10s execs in %ss' "$target" "${execs:-?}" "$seconds")")
		else
			failed=1
			show_tail "$log" 30
			lines+=("$(printf '%-22s FAILED  see %s and fuzz/artifacts/%s/' "$target" "$(rel "$log")" "$target")")
		fi
	done
	printf '\ndev fuzz summary:\n'
	printf '  %s\n' "${lines[@]}"
	[[ $failed -eq 0 ]] || die "a fuzz target failed: turn its artifact into a unit test, then fix it"
}
