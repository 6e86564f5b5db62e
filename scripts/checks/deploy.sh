#!/usr/bin/env bash
# Static checks of the deployment (images, Helm chart, Strimzi, Dapr, scripts): see
# scripts/deploy_checks.py. Run from anywhere; exits non-zero when any assertion fails.
# Tools live in a venv under TASKFLOW_CACHE (default ~/.cache/taskflow), reinstalled when
# scripts/tools/deploy-requirements.txt changes. TASKFLOW_CRDS_DIR: the upstream CRDs
# (default ../shared/crds); TASKFLOW_METRICS_DIR: the services' /metrics dumps (target/metrics).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
requirements=scripts/tools/deploy-requirements.txt
venv=${TASKFLOW_CACHE:-$HOME/.cache/taskflow}/deploy-venv
stamp=$venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ ! -x $venv/bin/python || $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
	echo "deploy: installing $requirements into $venv" >&2
	rm -rf "$venv"
	if ! python3 -m venv "$venv" >&2; then
		# Debian splits venv out of python3; as root (CI) install it, else say what is missing.
		[[ $EUID -eq 0 ]] || { echo "deploy: python3 -m venv failed: apt-get install python3-venv" >&2; exit 1; }
		apt-get update -qq && apt-get install -y -qq python3-venv >&2
		python3 -m venv "$venv"
	fi
	"$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
	printf '%s\n' "$want" >"$stamp"
fi

# The venv's hadolint, shellcheck and yamllint come first on PATH.
PATH=$venv/bin:$PATH exec "$venv/bin/python" scripts/deploy_checks.py "$@"
