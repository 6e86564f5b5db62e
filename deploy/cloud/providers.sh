# shellcheck shell=bash
# Cluster creation and deletion per provider, for deploy/cloud/up.sh and down.sh (sourced).
# Each cluster has 3 nodes of 4 vCPU / 16 GiB over zones where the provider has them, with a CNI
# that enforces NetworkPolicies. CLUSTER_NAME (taskflow), REGION and NODE_SIZE override defaults.

CLUSTER_NAME=${CLUSTER_NAME:-taskflow}
NODE_COUNT=${NODE_COUNT:-3}
(( NODE_COUNT >= 2 )) || die "NODE_COUNT must be at least 2 (PodDisruptionBudget and spread)"

provider_tools() {
	case $1 in
	doks) echo doctl ;;
	aks) echo az ;;
	gke) echo gcloud ;;
	*) die "PROVIDER must be doks, aks or gke (got '$1')" ;;
	esac
}

# cluster_create PROVIDER: create the cluster unless it exists, then point kubectl at it.
cluster_create() {
	step "Cluster $CLUSTER_NAME on $1 ($NODE_COUNT nodes)"
	case $1 in
	doks)
		# DigitalOcean Kubernetes runs Cilium, which enforces NetworkPolicies.
		doctl kubernetes cluster get "$CLUSTER_NAME" >/dev/null 2>&1 ||
			doctl kubernetes cluster create "$CLUSTER_NAME" --region "${REGION:-fra1}" \
				--node-pool "name=default;size=${NODE_SIZE:-s-4vcpu-16gb-amd};count=$NODE_COUNT" --wait
		doctl kubernetes cluster kubeconfig save "$CLUSTER_NAME"
		;;
	aks)
		az group create --name "$CLUSTER_NAME" --location "${REGION:-westeurope}" --output none
		az aks show --resource-group "$CLUSTER_NAME" --name "$CLUSTER_NAME" --output none 2>/dev/null ||
			az aks create --resource-group "$CLUSTER_NAME" --name "$CLUSTER_NAME" \
				--node-count "$NODE_COUNT" --node-vm-size "${NODE_SIZE:-Standard_D4s_v5}" --zones 1 2 3 \
				--network-plugin azure --network-policy cilium --network-dataplane cilium \
				--generate-ssh-keys --output none
		az aks get-credentials --resource-group "$CLUSTER_NAME" --name "$CLUSTER_NAME" --overwrite-existing
		;;
	gke)
		# A regional cluster: --num-nodes is per zone, so one node in each of the region's zones.
		gcloud container clusters describe "$CLUSTER_NAME" --region "${REGION:-europe-west1}" >/dev/null 2>&1 ||
			gcloud container clusters create "$CLUSTER_NAME" --region "${REGION:-europe-west1}" \
				--num-nodes 1 --machine-type "${NODE_SIZE:-e2-standard-4}" --enable-dataplane-v2
		gcloud container clusters get-credentials "$CLUSTER_NAME" --region "${REGION:-europe-west1}"
		;;
	esac
}

cluster_delete() {
	step "Deleting cluster $CLUSTER_NAME on $1"
	case $1 in
	doks) doctl kubernetes cluster delete "$CLUSTER_NAME" --force --dangerous ;;
	aks) az group delete --name "$CLUSTER_NAME" --yes ;;
	gke) gcloud container clusters delete "$CLUSTER_NAME" --region "${REGION:-europe-west1}" --quiet ;;
	esac
}
