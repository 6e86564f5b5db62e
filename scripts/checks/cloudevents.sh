#!/usr/bin/env bash
# Reads the Kafka messages the Rust event tests saved (target/cloudevents/*.json: headers, key and
# value as published by the native and the Dapr path) with the official CloudEvents Python SDK's
# auto-detecting Kafka reader, which must take them as structured-mode CloudEvents.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dir=${TASKFLOW_CLOUDEVENTS_DIR:-target/cloudevents}
venv=${XDG_CACHE_HOME:-$HOME/.cache}/taskflow/cloudevents-venv
requirements=scripts/tools/cloudevents-requirements.txt
if ! "$venv/bin/python" -c 'import cloudevents.core.bindings.kafka' 2>/dev/null; then
	python3 -m venv "$venv"
	"$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$requirements"
fi
exec "$venv/bin/python" scripts/checks/cloudevents_reader.py "$dir"
