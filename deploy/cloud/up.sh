#!/usr/bin/env bash
# TaskFlow on a managed Kubernetes cluster in one command:
#   DATABASE_URL=postgres://... TASKFLOW_HOST=tasks.example.org ACME_EMAIL=ops@example.org \
#   IMAGE_TAG=<pushed tag> deploy/cloud/up.sh doks|aks|gke
# Creates a 3-node cluster (providers.sh), installs ingress-nginx, cert-manager with a Let's Encrypt
# issuer, kube-prometheus-stack, KEDA, Dapr and Strimzi with the production Kafka cluster, then
# the chart with values-production.yaml, and prints the public URL.
# Optional: KAFKA_BROKERS (a Kafka outside the cluster: no Strimzi; the services speak plaintext
# only, so it must be reachable without SASL), KAFKA_CIDR (where it is, for the egress policy),
# POSTGRES_CIDR (the managed database's range, default 10.0.0.0/8), KUBE_PROMETHEUS_STACK_VERSION.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=deploy/cloud/providers.sh
source "$REPO_ROOT/deploy/cloud/providers.sh"

PROVIDER=${1:-}
need "$(provider_tools "$PROVIDER")" kubectl helm dapr curl openssl
: "${DATABASE_URL:?the managed PostgreSQL, postgres://user:password@host:5432/db?sslmode=require}"
: "${TASKFLOW_HOST:?the public DNS name of the API}"
: "${ACME_EMAIL:?the ACME account address, for certificate expiry mail}"
: "${IMAGE_TAG:?the tag of the pushed images (the CI deploy workflow pushes them)}"

cluster_create "$PROVIDER"
ensure_namespace "$NAMESPACE"

step "ingress-nginx $INGRESS_NGINX_VERSION"
helm repo add ingress-nginx https://kubernetes.github.io/ingress-nginx --force-update >/dev/null
helm upgrade --install ingress-nginx ingress-nginx/ingress-nginx --version "$INGRESS_NGINX_VERSION" \
	--namespace ingress-nginx --create-namespace --wait

step "cert-manager $CERT_MANAGER_VERSION and the letsencrypt-prod ClusterIssuer"
helm repo add jetstack https://charts.jetstack.io --force-update >/dev/null
helm upgrade --install cert-manager jetstack/cert-manager --version "$CERT_MANAGER_VERSION" \
	--namespace cert-manager --create-namespace --set crds.enabled=true --wait
sed "s/acme@example.com/$ACME_EMAIL/" "$REPO_ROOT/deploy/cloud/cluster-issuer.yaml" | kubectl apply -f -

step "kube-prometheus-stack ${KUBE_PROMETHEUS_STACK_VERSION:-(latest)}: Prometheus Operator, Grafana"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
	${KUBE_PROMETHEUS_STACK_VERSION:+--version "$KUBE_PROMETHEUS_STACK_VERSION"} \
	--namespace monitoring --create-namespace --wait --timeout 10m \
	--set grafana.sidecar.dashboards.searchNamespace=ALL

install_keda
install_dapr

chart_args=(--set image.tag="$IMAGE_TAG" --set ingress.host="$TASKFLOW_HOST"
	--set-json "networkPolicy.postgres.to=[{\"ipBlock\":{\"cidr\":\"${POSTGRES_CIDR:-10.0.0.0/8}\"}}]")
if [[ -n ${KAFKA_BROKERS:-} ]]; then
	step "Kafka: using $KAFKA_BROKERS (no Strimzi)"
	chart_args+=(--set kafka.brokers="$KAFKA_BROKERS"
		--set-json "networkPolicy.kafka.to=[{\"ipBlock\":{\"cidr\":\"${KAFKA_CIDR:-0.0.0.0/0}\"}}]")
else
	install_strimzi
	apply_kafka "$REPO_ROOT/deploy/kafka/kafka-cluster-production.yaml"
	kafka_smoke_test
fi

create_app_secret "$DATABASE_URL"
deploy_chart "$CHART/values-production.yaml" "${chart_args[@]}"

step "Public address"
address=
for _ in $(seq 60); do
	address=$(kubectl -n ingress-nginx get service ingress-nginx-controller \
		-o jsonpath='{.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}')
	[[ -n $address ]] && break
	sleep 5
done
[[ -n $address ]] || die "the ingress controller's load balancer has no address yet: kubectl -n ingress-nginx get svc"

cat <<EOF

TaskFlow is deployed on $PROVIDER (cluster $CLUSTER_NAME, namespace $NAMESPACE).
  1. Point DNS for $TASKFLOW_HOST at $address (an A record for an IP, a CNAME for a host name).
  2. cert-manager then obtains the certificate: kubectl -n $NAMESPACE get certificate --watch
  URL:      https://$TASKFLOW_HOST/openapi.json   (until DNS is there: curl -H 'Host: $TASKFLOW_HOST' http://$address/ready)
  Scaling:  kubectl -n $NAMESPACE get pods,hpa,scaledobjects --watch
  Grafana:  kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80   (dashboard "TaskFlow")
  Remove:   deploy/cloud/down.sh $PROVIDER
EOF
