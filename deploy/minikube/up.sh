#!/usr/bin/env bash
# TaskFlow on Minikube in one command: Strimzi Kafka (one KRaft node), PostgreSQL, Dapr, KEDA and
# the Helm chart with values-minikube.yaml, then a check that the API answers.
# Needs minikube, kubectl, helm, dapr (CLI), curl, openssl. Run from anywhere:
#   deploy/minikube/up.sh            # SKIP_BUILD=1 reuses images already in the node
# Environment: MINIKUBE_PROFILE (taskflow), MINIKUBE_CPUS (4), MINIKUBE_MEMORY (8g).
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PROFILE=${MINIKUBE_PROFILE:-taskflow}
VALUES=$CHART/values-minikube.yaml
need minikube kubectl helm dapr curl openssl

step "Minikube profile $PROFILE"
if ! minikube -p "$PROFILE" status >/dev/null 2>&1; then
	minikube start -p "$PROFILE" --cpus "${MINIKUBE_CPUS:-4}" --memory "${MINIKUBE_MEMORY:-8g}"
fi
kubectl config use-context "$PROFILE"
ensure_namespace "$NAMESPACE"

install_strimzi
apply_kafka "$REPO_ROOT/deploy/kafka/kafka-cluster.yaml"
kafka_smoke_test
install_dapr
install_keda

step "PostgreSQL (throwaway, in namespace $NAMESPACE)"
if ! kubectl -n "$NAMESPACE" get secret postgres >/dev/null 2>&1; then
	kubectl -n "$NAMESPACE" create secret generic postgres --from-literal=POSTGRES_PASSWORD="$(openssl rand -hex 16)"
fi
kubectl apply -f "$REPO_ROOT/deploy/minikube/postgres.yaml"
kubectl -n "$NAMESPACE" rollout status statefulset/postgres --timeout=5m
pg_password=$(kubectl -n "$NAMESPACE" get secret postgres -o jsonpath='{.data.POSTGRES_PASSWORD}' | base64 -d)
create_app_secret "postgres://taskflow:$pg_password@postgres.$NAMESPACE:5432/taskflow"

# Images are built inside the node, so no registry is involved (pullPolicy: Never); their names
# come from the image block of the values file.
registry=$(awk '/^image:/ {in_image = 1} in_image && /^  registry:/ {print $2; exit}' "$VALUES")
tag=$(awk '/^image:/ {in_image = 1} in_image && /^  tag:/ {print $2; exit}' "$VALUES")
if [[ ${SKIP_BUILD:-} != 1 ]]; then
	for service in backend recurrence-worker notifier; do
		step "Image $registry/taskflow-$service:$tag (minikube image build)"
		(cd "$REPO_ROOT" && minikube -p "$PROFILE" image build -t "$registry/taskflow-$service:$tag" \
			-f deploy/docker/service.Dockerfile --build-opt="build-arg=SERVICE=$service" .)
	done
fi

deploy_chart "$VALUES"
check_backend

cat <<EOF

TaskFlow runs on Minikube (namespace $NAMESPACE).
  API:      kubectl -n $NAMESPACE port-forward svc/$RELEASE-backend 8000:http   then  curl localhost:8000/ready
  Scaling:  kubectl -n $NAMESPACE get pods,hpa,scaledobjects --watch
  Kafka:    kubectl -n $KAFKA_NAMESPACE get kafka,kafkanodepool,kafkatopic,kafkauser
  Dapr:     dapr dashboard -k
  Remove:   deploy/minikube/down.sh
EOF
