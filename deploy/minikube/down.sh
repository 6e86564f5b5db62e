#!/usr/bin/env bash
# Removes what deploy/minikube/up.sh created: the Minikube profile, with everything in it.
#   deploy/minikube/down.sh          # KEEP_CLUSTER=1 removes only the release, Kafka and PostgreSQL
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PROFILE=${MINIKUBE_PROFILE:-taskflow}
need minikube kubectl helm

if [[ ${KEEP_CLUSTER:-} == 1 ]]; then
	kubectl config use-context "$PROFILE"
	helm uninstall "$RELEASE" --namespace "$NAMESPACE" --ignore-not-found
	kubectl delete -f "$REPO_ROOT/deploy/minikube/postgres.yaml" --ignore-not-found
	kubectl delete -f "$REPO_ROOT/deploy/kafka/users.yaml" -f "$REPO_ROOT/deploy/kafka/topics.yaml" \
		-f "$REPO_ROOT/deploy/kafka/kafka-cluster.yaml" --ignore-not-found
	echo "Removed the release, PostgreSQL and Kafka; the operators and profile $PROFILE stay."
else
	minikube delete -p "$PROFILE"
fi
