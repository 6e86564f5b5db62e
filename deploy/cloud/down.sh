#!/usr/bin/env bash
# Deletes what deploy/cloud/up.sh PROVIDER created: load balancers and Kafka's volumes first
# (some providers keep them after the cluster is gone, and bill for them), then the cluster.
# The managed PostgreSQL is not touched.
#   deploy/cloud/down.sh doks|aks|gke
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=deploy/cloud/providers.sh
source "$REPO_ROOT/deploy/cloud/providers.sh"

PROVIDER=${1:-}
need "$(provider_tools "$PROVIDER")" kubectl helm

if kubectl get namespace ingress-nginx >/dev/null 2>&1; then
	step "Releasing the load balancer and Kafka's volumes"
	helm uninstall ingress-nginx --namespace ingress-nginx --wait || true
	kubectl delete -f "$REPO_ROOT/deploy/kafka/kafka-cluster-production.yaml" --ignore-not-found --wait
	kubectl -n "$KAFKA_NAMESPACE" delete pvc -l "strimzi.io/cluster=$KAFKA_CLUSTER" --ignore-not-found
fi
cluster_delete "$PROVIDER"
