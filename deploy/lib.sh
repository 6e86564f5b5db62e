# shellcheck shell=bash
# Steps shared by deploy/minikube/up.sh and deploy/cloud/up.sh (sourced, not run). Each step is
# idempotent: running an up.sh again converges instead of failing on what already exists.

# Pinned versions; each matches the CRDs in ../shared/crds the manifests are checked against.
STRIMZI_VERSION=${STRIMZI_VERSION:-1.2.0}
KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
DAPR_VERSION=${DAPR_VERSION:-1.18.3}
KEDA_VERSION=${KEDA_VERSION:-2.20.2}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.21.1}
INGRESS_NGINX_VERSION=${INGRESS_NGINX_VERSION:-4.14.1}

NAMESPACE=${NAMESPACE:-taskflow}
RELEASE=${RELEASE:-taskflow}
KAFKA_NAMESPACE=kafka
KAFKA_CLUSTER=taskflow-kafka
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$REPO_ROOT/deploy/helm/taskflow

step() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

need() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (see README, Deploy)"
	done
}

ensure_namespace() {
	kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f -
}

install_strimzi() {
	step "Strimzi operator $STRIMZI_VERSION in namespace $KAFKA_NAMESPACE"
	helm upgrade --install strimzi oci://quay.io/strimzi-helm/strimzi-kafka-operator \
		--version "$STRIMZI_VERSION" --namespace "$KAFKA_NAMESPACE" --create-namespace --wait
}

# apply_kafka CLUSTER_FILE: the cluster, then its topics and users, each waited for until Ready.
apply_kafka() {
	step "Kafka cluster $KAFKA_CLUSTER ($(basename "$1")), topics and users"
	kubectl apply -f "$1"
	kubectl -n "$KAFKA_NAMESPACE" wait "kafka/$KAFKA_CLUSTER" --for=condition=Ready --timeout=15m
	kubectl apply -f "$REPO_ROOT/deploy/kafka/topics.yaml" -f "$REPO_ROOT/deploy/kafka/users.yaml"
	kubectl -n "$KAFKA_NAMESPACE" wait kafkatopic,kafkauser -l "strimzi.io/cluster=$KAFKA_CLUSTER" \
		--for=condition=Ready --timeout=5m
}

# A message through a throwaway topic with the console tools of Strimzi's own Kafka image.
kafka_smoke_test() {
	local image=quay.io/strimzi/kafka:$STRIMZI_VERSION-kafka-$KAFKA_VERSION
	local bootstrap=$KAFKA_CLUSTER-kafka-bootstrap:9092 marker got
	marker="smoke-$(date +%s)"
	step "Kafka smoke test: produce and consume '$marker'"
	kubectl apply -f - <<-EOF
		apiVersion: kafka.strimzi.io/v1
		kind: KafkaTopic
		metadata:
		  name: smoke-test
		  namespace: $KAFKA_NAMESPACE
		  labels:
		    strimzi.io/cluster: $KAFKA_CLUSTER
		spec:
		  partitions: 1
	EOF
	kubectl -n "$KAFKA_NAMESPACE" wait kafkatopic/smoke-test --for=condition=Ready --timeout=2m
	echo "$marker" | kubectl -n "$KAFKA_NAMESPACE" run kafka-smoke-producer --rm -i --restart=Never \
		--image="$image" -- bin/kafka-console-producer.sh --bootstrap-server "$bootstrap" --topic smoke-test
	got=$(kubectl -n "$KAFKA_NAMESPACE" run kafka-smoke-consumer --rm -i --restart=Never --image="$image" -- \
		bin/kafka-console-consumer.sh --bootstrap-server "$bootstrap" --topic smoke-test \
		--from-beginning --max-messages 1 --timeout-ms 60000)
	kubectl -n "$KAFKA_NAMESPACE" delete kafkatopic/smoke-test --wait=false
	[[ $got == *"$marker"* ]] || die "smoke test: consumed '$got', expected '$marker'"
	echo "smoke test passed: '$marker' went through $bootstrap"
}

install_dapr() {
	step "Dapr $DAPR_VERSION control plane"
	if dapr status -k >/dev/null 2>&1; then
		echo "Dapr is already installed"
	else
		dapr init -k --runtime-version "$DAPR_VERSION" --wait --timeout 600
	fi
	dapr status -k
}

install_keda() {
	step "KEDA $KEDA_VERSION"
	helm repo add kedacore https://kedacore.github.io/charts --force-update >/dev/null
	helm upgrade --install keda kedacore/keda --version "$KEDA_VERSION" \
		--namespace keda --create-namespace --wait
}

# create_app_secret DATABASE_URL: the chart's existingSecret; an existing JWT secret is kept so
# issued tokens stay valid across runs.
create_app_secret() {
	local jwt
	jwt=$(kubectl -n "$NAMESPACE" get secret taskflow-secrets -o jsonpath='{.data.JWT_SECRET}' 2>/dev/null | base64 -d || true)
	[[ -n $jwt ]] || jwt=$(openssl rand -hex 32)
	kubectl -n "$NAMESPACE" create secret generic taskflow-secrets \
		--from-literal=DATABASE_URL="$1" --from-literal=JWT_SECRET="$jwt" \
		--dry-run=client -o yaml | kubectl apply -f -
}

# deploy_chart VALUES_FILE [HELM ARGS...]: the Dapr components, then the chart (its pre-install
# hook migrates the database before any pod starts).
deploy_chart() {
	local values=$1
	shift
	step "Dapr components and Helm release $RELEASE ($(basename "$values"))"
	kubectl -n "$NAMESPACE" apply -f "$REPO_ROOT/dapr-components/"
	helm upgrade --install "$RELEASE" "$CHART" --namespace "$NAMESPACE" -f "$values" "$@" \
		--wait --timeout 10m
}

# Every backend pod runs the API and its Dapr sidecar, and /ready answers through a port-forward.
check_backend() {
	local pods bad local_port=${CHECK_PORT:-18000} forward ready
	step "Check: backend pods have 2 containers and /ready answers"
	pods=$(kubectl -n "$NAMESPACE" get pods -l app.kubernetes.io/component=backend,app.kubernetes.io/instance="$RELEASE" \
		-o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.containers[*].name}{"\n"}{end}')
	echo "$pods"
	[[ -n $pods ]] || die "no backend pods"
	bad=$(awk 'NF != 3' <<<"$pods")
	[[ -z $bad ]] || die "backend pods without exactly 2 containers (API and daprd): $bad"
	kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-backend" "$local_port:http" >/dev/null &
	forward=$!
	# shellcheck disable=SC2064 # expand the PID now
	trap "kill $forward 2>/dev/null || true" EXIT
	ready=$(curl -fsS --retry 10 --retry-delay 2 --retry-connrefused "http://127.0.0.1:$local_port/ready") ||
		die "/ready did not answer 200"
	kill "$forward"
	trap - EXIT
	echo "/ready: $ready"
}
