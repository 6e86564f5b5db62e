#!/usr/bin/env python3
"""Static checks of everything under deploy/ and dapr-components/ (run by scripts/checks/deploy.sh).

Renders the Helm chart with real Helm (helm-python-sdk) for each values set, validates every
object against the Kubernetes schemas (kubernetes-validate) or its CRD (../shared/crds), and
asserts the project's policies on what was rendered. Prints one line per assertion and a summary.
Usage: deploy_checks.py (from the repository root; TASKFLOW_CRDS_DIR, TASKFLOW_METRICS_DIR).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate_manifests  # noqa: E402  (the CRD half of the validation, shared with ./dev)

CHART = Path("deploy/helm/taskflow")
KUBERNETES_VERSION = "1.33.0"
RELEASE, NAMESPACE = "taskflow", "taskflow"
# Values sets rendered: the chart's defaults, the two environments, every feature at once.
VALUES_SETS = {
    "default": None,
    "minikube": CHART / "values-minikube.yaml",
    "production": CHART / "values-production.yaml",
    "dapr+keda+serviceMonitor": CHART / "ci/all-features-values.yaml",
}
WORKERS = {"recurrence-worker": "recurrenceWorker", "notifier": "notifier"}
COMPONENT_KEYS = {"backend": "backend", **WORKERS}
# What each service reads from its environment (README "Configuration" and the workers' settings).
REQUIRED_ENV = {
    "backend": {"DATABASE_URL", "KAFKA_BROKERS", "LOG_FORMAT", "RUST_LOG", "HTTP_ADDR", "JWT_SECRET",
                "EVENT_PUBLISHER", "DAPR_HTTP_ENDPOINT", "DAPR_PUBSUB_NAME"},
    "worker": {"DATABASE_URL", "KAFKA_BROKERS", "KAFKA_TOPIC_PREFIX", "KAFKA_ASSIGNMENT_STRATEGY",
               "LOG_FORMAT", "RUST_LOG", "METRICS_ADDR", "KAFKA_GROUP_ID"},
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan"}


class Report:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def check(self, name, problems):
        """Record one assertion; `problems` is a list of strings (empty: it holds)."""
        problems = [p for p in problems if p]
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"     {p}")
        else:
            self.passed += 1
            print(f"ok   {name}")

    def skip(self, name, reason):
        self.skipped += 1
        print(f"SKIPPED {name}: {reason}")


def run_tool(args, files):
    result = subprocess.run([*args, *map(str, files)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()] or (
        [f"exit {result.returncode}"] if result.returncode else [])


def yaml_files():
    found = []
    for top in ("deploy", "dapr-components"):
        found += [p for p in sorted(Path(top).rglob("*.y*ml")) if "templates" not in p.parts]
    return found


def validate_object(doc, crds):
    """Problems with one object: its CRD's schema, or the Kubernetes schema of a built-in kind."""
    if validate_manifests.is_builtin(doc):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"]
        except kubernetes_validate.SchemaNotFoundError as e:
            return [e.message]
        return []
    if crds is None:
        return [f"{doc['apiVersion']} {doc['kind']}: no CRD folder to validate against"]
    return validate_manifests.check(doc, crds)


def label(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def component(doc):
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def containers(doc):
    return doc["spec"]["template"]["spec"]["containers"]


def env_names(docs, container):
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        names |= {k for cm in by_kind(docs, "ConfigMap") if cm["metadata"]["name"] == ref for k in cm["data"]}
    return names


def env_value(container, name):
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


# --- policy assertions on one render -------------------------------------------------------------

def pod_security(doc):
    pod = doc["spec"]["template"]["spec"]
    problems = [] if pod.get("securityContext", {}).get("runAsNonRoot") is True else [
        f"{label(doc)}: pod securityContext.runAsNonRoot is not true"]
    for c in pod["containers"]:
        sc, where = c.get("securityContext", {}), f"{label(doc)} container {c['name']}"
        seccomp = sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile") or {}
        problems += [
            f"{where}: runAsNonRoot" if sc.get("runAsNonRoot") is not True else "",
            f"{where}: readOnlyRootFilesystem" if sc.get("readOnlyRootFilesystem") is not True else "",
            f"{where}: allowPrivilegeEscalation" if sc.get("allowPrivilegeEscalation") is not False else "",
            f"{where}: capabilities.drop ALL" if "ALL" not in sc.get("capabilities", {}).get("drop", []) else "",
            f"{where}: seccompProfile RuntimeDefault" if seccomp.get("type") != "RuntimeDefault" else "",
            f"{where}: resources.requests" if not c.get("resources", {}).get("requests") else "",
            f"{where}: resources.limits.memory" if not c.get("resources", {}).get("limits", {}).get("memory") else "",
        ]
    return problems


def probes(doc):
    problems = []
    for c in containers(doc):
        where = f"{label(doc)} container {c['name']}"
        for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            got = c.get(probe, {}).get("httpGet", {}).get("path")
            if got != path:
                problems.append(f"{where}: {probe} path {got!r}, want {path!r}")
    return problems


def dapr_annotations(deployment, values):
    """Sidecar annotations exactly when dapr.enabled, on the backend and the notifier only."""
    name = component(deployment)
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    dapr = {k: v for k, v in annotations.items() if k.startswith("dapr.io/")}
    app_ids = {"backend": values["dapr"]["backendAppId"], "notifier": values["dapr"]["notifierAppId"]}
    if not (values["dapr"]["enabled"] and name in app_ids):
        return [f"{label(deployment)}: unexpected Dapr annotations {sorted(dapr)}" if dapr else ""]
    port = containers(deployment)[0]["ports"][0]["containerPort"]
    want = {"dapr.io/enabled": "true", "dapr.io/app-id": app_ids[name], "dapr.io/app-port": str(port),
            "dapr.io/enable-metrics": "true", "dapr.io/app-health-check-path": "/health"}
    return [f"{label(deployment)}: {k}={dapr.get(k)!r}, want {v!r}" for k, v in want.items() if dapr.get(k) != v]


def event_publisher(deployment, values):
    want = "dapr" if values["dapr"]["enabled"] else values["backend"]["eventPublisher"]
    got = env_value(containers(deployment)[0], "EVENT_PUBLISHER")
    return [] if got == want else [f"EVENT_PUBLISHER={got!r}, want {want!r}"]


def image_tags(docs, values, app_version):
    problems = []
    for doc in by_kind(docs, "Deployment") + by_kind(docs, "Job"):
        key = COMPONENT_KEYS.get(component(doc), "backend")  # the migrations Job runs the backend image
        tag = values[key]["image"]["tag"] or values["image"]["tag"] or app_version
        want = f"{values['image']['registry']}/{values[key]['image']['repository']}:{tag}"
        problems += [f"{label(doc)}: image {c['image']}, want {want}" for c in containers(doc) if c["image"] != want]
    return problems


def consumer_groups(docs, values, code_groups):
    problems = []
    deployments = {component(d): d for d in by_kind(docs, "Deployment")}
    scaled = {component(s): s for s in by_kind(docs, "ScaledObject")}
    for name, key in WORKERS.items():
        group = env_value(containers(deployments[name])[0], "KAFKA_GROUP_ID")
        if group != code_groups[name]:
            problems.append(f"{name}: KAFKA_GROUP_ID {group!r}, the worker's group is {code_groups[name]!r}")
        if name in scaled:
            trigger = scaled[name]["spec"]["triggers"][0]["metadata"]
            if trigger["consumerGroup"] != group:
                problems.append(f"{name}: ScaledObject consumerGroup {trigger['consumerGroup']!r} != {group!r}")
    return problems


def keda(docs, values):
    """ScaledObjects exactly when keda.enabled, never above the topic's partitions, on the right topic."""
    scaled = {component(s): s for s in by_kind(docs, "ScaledObject")}
    deployments = {component(d): d for d in by_kind(docs, "Deployment")}
    if not values["keda"]["enabled"]:
        return [f"unexpected ScaledObjects {sorted(scaled)}" if scaled else ""] + [
            f"{n}: fixed replicas missing" for n in WORKERS if "replicas" not in deployments[n]["spec"]]
    problems = []
    for name, key in WORKERS.items():
        if name not in scaled:
            problems.append(f"{name}: no ScaledObject")
            continue
        spec, topic = scaled[name]["spec"], values["kafka"]["topics"][values[key]["topic"]]
        trigger = spec["triggers"][0]["metadata"]
        want_topic = values["kafka"]["topicPrefix"] + topic["name"]
        problems += [
            f"{name}: maxReplicaCount {spec['maxReplicaCount']} > {topic['partitions']} partitions"
            if spec["maxReplicaCount"] > topic["partitions"] else "",
            f"{name}: trigger topic {trigger['topic']!r}, want {want_topic!r}" if trigger["topic"] != want_topic else "",
            f"{name}: scaleTargetRef {spec['scaleTargetRef']['name']}" if spec["scaleTargetRef"]["name"] != deployments[name]["metadata"]["name"] else "",
            f"{name}: Deployment sets replicas while KEDA owns them" if "replicas" in deployments[name]["spec"] else "",
        ]
    return problems


def service_monitors(docs, values):
    monitors = by_kind(docs, "ServiceMonitor")
    if not values["metrics"]["serviceMonitor"]["enabled"]:
        return [f"unexpected ServiceMonitors {[label(m) for m in monitors]}" if monitors else ""]
    problems = [] if {component(m) for m in monitors} == set(COMPONENT_KEYS) else [
        f"ServiceMonitors for {sorted(component(m) for m in monitors)}, want {sorted(COMPONENT_KEYS)}"]
    services = {component(s): s for s in by_kind(docs, "Service")}
    for m in monitors:
        ports = {p["name"] for p in services[component(m)]["spec"]["ports"]}
        for endpoint in m["spec"]["endpoints"]:
            if endpoint.get("port") != "metrics" or "metrics" not in ports:
                problems.append(f"{label(m)}: endpoint port {endpoint.get('port')!r}, Service ports {sorted(ports)}")
    return problems


def network_policies(docs, values):
    """Only the ingress controller (and Prometheus, on the metrics port) reach the backend; the
    workers accept scrapes on their metrics port and nothing else."""
    if not values["networkPolicy"]["enabled"]:
        return []
    policies = {component(p): p for p in by_kind(docs, "NetworkPolicy")}
    allowed = {values["networkPolicy"]["ingressControllerNamespace"], values["networkPolicy"]["monitoringNamespace"]}
    problems = []
    for name in COMPONENT_KEYS:
        if name not in policies:
            problems.append(f"{name}: no NetworkPolicy")
            continue
        for rule in policies[name]["spec"].get("ingress", []):
            sources = [f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") for f in rule.get("from", [])]
            ports = [p.get("port") for p in rule.get("ports", [])]
            if not sources or any(s not in allowed for s in sources):
                problems.append(f"{name}: ingress from {sources}")
            if name != "backend" and ports != ["metrics"]:
                problems.append(f"{name}: ingress on ports {ports}, want only metrics")
    return problems


def migrations_hook(docs):
    jobs = by_kind(docs, "Job")
    if len(jobs) != 1:
        return [f"{len(jobs)} Jobs, want the migrations hook"]
    hook = jobs[0]["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    args = containers(jobs[0])[0].get("args")
    return [f"hook {hook!r}" if set(hook.split(",")) != {"pre-install", "pre-upgrade"} else "",
            f"args {args}, want ['migrate']" if args != ["migrate"] else ""]


def required_env(docs):
    problems = []
    for d in by_kind(docs, "Deployment"):
        want = REQUIRED_ENV["backend" if component(d) == "backend" else "worker"]
        missing = want - env_names(docs, containers(d)[0])
        problems += [f"{label(d)}: missing {sorted(missing)}"] if missing else []
    return problems


ALERTS = {"TaskflowOutboxBacklogAge", "TaskflowConsumerLag", "TaskflowDeadLetters", "TaskflowHttp5xxRate", "TaskflowReminderDeliveryLag"}


def alerts(docs, values):
    """When enabled: the outbox age, consumer lag, dead-letter, reminder delivery and 5xx alerts exist."""
    rules = by_kind(docs, "PrometheusRule")
    if not values["metrics"]["prometheusRule"]["enabled"]:
        return [f"unexpected {label(r)}" for r in rules]
    names = {r.get("alert") for rule in rules for g in rule["spec"]["groups"] for r in g["rules"]}
    return [f"missing alerts {sorted(ALERTS - names)}" if ALERTS - names else ""]


def dashboard(docs, values):
    """When enabled: one ConfigMap that Grafana's sidecar picks up, holding a dashboard JSON."""
    boards = [c for c in by_kind(docs, "ConfigMap") if "grafana_dashboard" in c["metadata"].get("labels", {})]
    if not values["metrics"]["dashboard"]["enabled"]:
        return [f"unexpected dashboard {label(b)}" for b in boards]
    if len(boards) != 1 or boards[0]["metadata"]["labels"]["grafana_dashboard"] != "1":
        return [f"want one ConfigMap labelled grafana_dashboard=\"1\", got {[label(b) for b in boards]}"]
    try:
        return [] if all(json.loads(t).get("panels") for t in boards[0]["data"].values()) else ["a dashboard without panels"]
    except json.JSONDecodeError as e:
        return [f"dashboard JSON: {e}"]


# --- metric names ------------------------------------------------------------------------------

def promql_metric_names(expr):
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels."""
    expr = re.sub(r'"(\\.|[^"\\])*"', "", expr)       # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)              # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)             # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def exported_metric_names(directory):
    names = set()
    for service in ("backend", "recurrence-worker", "notifier"):
        dump = directory / f"{service}.txt"
        if not dump.is_file():
            raise SystemExit(f"deploy checks: {dump} is missing (the {service} tests write it)")
        for line in dump.read_text().splitlines():
            if line.startswith("# TYPE "):
                names.add(line.split()[2])
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def used_metric_names(docs):
    exprs = [r["expr"] for rule in by_kind(docs, "PrometheusRule") for g in rule["spec"]["groups"] for r in g["rules"]]
    for cm in by_kind(docs, "ConfigMap"):
        if "grafana_dashboard" not in cm["metadata"].get("labels", {}):
            continue
        for text in cm["data"].values():
            try:
                exprs += [t["expr"] for p in json.loads(text)["panels"] for t in p.get("targets", [])]
            except json.JSONDecodeError:
                pass  # reported by the dashboard assertion
    return set().union(*map(promql_metric_names, exprs)) if exprs else set()


# --- agreement between the chart, deploy/kafka and the code -------------------------------------

def code_topics():
    source = Path("shared-events/src/topics.rs").read_text()
    constants = dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', source))
    table = source[source.index("pub const TOPICS"):].split("];")[0]
    partitions = {constants[n]: int(p) for n, p in re.findall(r"name: (\w+),\s*partitions: (\d+)", table)}
    groups = {"recurrence-worker": constants["RECURRENCE_WORKER_GROUP"], "notifier": constants["NOTIFIER_GROUP"]}
    return partitions, groups


def partition_agreement(values, code_partitions):
    strimzi = {d["spec"]["topicName"]: d["spec"]["partitions"] for d in kafka_documents("topics.yaml")}
    problems = [f"deploy/kafka/topics.yaml {t}: {strimzi.get(t)} partitions, shared-events/src/topics.rs {p}"
                for t, p in code_partitions.items() if strimzi.get(t) != p]
    for key, topic in values["kafka"]["topics"].items():
        if strimzi.get(topic["name"]) != topic["partitions"]:
            problems.append(f"chart kafka.topics.{key}: {topic['partitions']} partitions, "
                            f"deploy/kafka/topics.yaml {strimzi.get(topic['name'])}")
    return problems


def kafka_documents(name):
    return [d for d in yaml.safe_load_all(Path("deploy/kafka", name).read_text()) if d]


def kafka_users(code_groups):
    """Each service's ACLs name only topics that exist; a consumer's group is its worker's group."""
    topics = {d["spec"]["topicName"] for d in kafka_documents("topics.yaml")}
    problems = []
    for user in kafka_documents("users.yaml"):
        for acl in user["spec"]["authorization"]["acls"]:
            kind, name = acl["resource"]["type"], acl["resource"]["name"]
            if kind == "topic" and name not in topics:
                problems.append(f"{label(user)}: ACL on unknown topic {name!r}")
            if kind == "group" and user["metadata"]["name"] != f"taskflow-{name}":
                problems.append(f"{label(user)}: ACL on group {name!r}")
            if kind == "group" and name not in code_groups.values():
                problems.append(f"{label(user)}: group {name!r} is no worker's group")
    return problems


def kafka_clusters():
    """No auto-created topics; production: replication 3, min.insync.replicas 2, brokers by zone."""
    problems = []
    for name, replication, min_isr in (("kafka-cluster.yaml", 1, 1), ("kafka-cluster-production.yaml", 3, 2)):
        kafka = next(d for d in kafka_documents(name) if d["kind"] == "Kafka")
        config = kafka["spec"]["kafka"].get("config", {})
        problems += [
            f"{name}: auto.create.topics.enable is not false" if config.get("auto.create.topics.enable") is not False else "",
            f"{name}: default.replication.factor {config.get('default.replication.factor')}, want {replication}"
            if config.get("default.replication.factor") != replication else "",
            f"{name}: min.insync.replicas {config.get('min.insync.replicas')}, want {min_isr}"
            if config.get("min.insync.replicas") != min_isr else "",
        ]
        if replication > 1 and "rack" not in kafka["spec"]["kafka"]:
            problems.append(f"{name}: no rack awareness")
    return problems


def dapr_component(values):
    docs = [d for f in sorted(Path("dapr-components").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    pubsub = [d for d in docs if d["kind"] == "Component" and d["metadata"]["name"] == values["dapr"]["pubsubName"]]
    if not pubsub:
        return [f"no Component {values['dapr']['pubsubName']!r} in dapr-components/"]
    meta = {m["name"]: m.get("value") for m in pubsub[0]["spec"]["metadata"]}
    return [
        f"brokers {meta.get('brokers')!r}, chart kafka.brokers {values['kafka']['brokers']!r}"
        if meta.get("brokers") != values["kafka"]["brokers"] else "",
        f"scopes {pubsub[0].get('scopes')} lack {values['dapr']['backendAppId']!r}"
        if values["dapr"]["backendAppId"] not in pubsub[0].get("scopes", []) else "",
    ]


def main():
    report = Report()
    crd_dir = Path(os.environ.get("TASKFLOW_CRDS_DIR", "../shared/crds"))
    metrics_dir = Path(os.environ.get("TASKFLOW_METRICS_DIR", "target/metrics"))
    crds = validate_manifests.load_crds(crd_dir) if crd_dir.is_dir() else None
    if crds is None:
        print(f"!!! no CRD folder {crd_dir} (set TASKFLOW_CRDS_DIR): every custom resource FAILS validation")
    code_partitions, code_groups = code_topics()

    report.check("hadolint deploy/docker/*.Dockerfile",
                 run_tool(["hadolint"], sorted(Path("deploy/docker").glob("*.Dockerfile"))))
    scripts = sorted(Path("deploy").rglob("*.sh")) + [Path("scripts/checks/deploy.sh")]
    report.check(f"shellcheck ({len(scripts)} scripts)", run_tool(["shellcheck", "-x"], scripts))
    report.check("yamllint deploy/ dapr-components/",
                 run_tool(["yamllint", "-c", ".yamllint", "--strict"], ["deploy", "dapr-components"]))

    for path in yaml_files():
        if validate_manifests.in_helm_chart(path):
            continue
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            report.check(f"schema {path}: {label(doc)}", validate_object(doc, crds))

    with helm.Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
        for set_name, values_file in VALUES_SETS.items():
            overrides = yaml.safe_load(values_file.read_text()) if values_file else None
            lint = helm.lint(CHART, overrides, strict=True, namespace=NAMESPACE)
            report.check(f"[{set_name}] helm lint --strict",
                         lint["errors"] + [f"{m['path']}: {m['error']}" for m in lint["messages"] if m["severity"] >= 2])
            values = chart.merge_values(overrides)
            try:
                rendered = chart.render(overrides, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as e:
                report.check(f"[{set_name}] helm template", [str(e)])
                continue
            docs = [d for name, text in sorted(rendered.items()) if not name.endswith("NOTES.txt")
                    for d in yaml.safe_load_all(text) if d]
            report.check(f"[{set_name}] rendered {len(docs)} objects against their schemas",
                         [f"{label(d)}: {p}" for d in docs for p in validate_object(d, crds)])
            workloads = by_kind(docs, "Deployment") + by_kind(docs, "Job")
            report.check(f"[{set_name}] resources and non-root read-only securityContext on every container",
                         [p for w in workloads for p in pod_security(w)])
            report.check(f"[{set_name}] startup, liveness /health and readiness /ready probes",
                         [p for d in by_kind(docs, "Deployment") for p in probes(d)])
            report.check(f"[{set_name}] Dapr annotations exactly when enabled, app-port = container port",
                         [p for d in by_kind(docs, "Deployment") for p in dapr_annotations(d, values)])
            backend = next(d for d in by_kind(docs, "Deployment") if component(d) == "backend")
            report.check(f"[{set_name}] EVENT_PUBLISHER follows dapr.enabled", event_publisher(backend, values))
            report.check(f"[{set_name}] KEDA ScaledObjects: max replicas <= partitions, topic, target",
                         keda(docs, values))
            report.check(f"[{set_name}] consumer groups equal the workers' groups", consumer_groups(docs, values, code_groups))
            report.check(f"[{set_name}] image tags from values", image_tags(docs, values, app_version))
            report.check(f"[{set_name}] ServiceMonitors on the named metrics port", service_monitors(docs, values))
            report.check(f"[{set_name}] NetworkPolicy ingress", network_policies(docs, values))
            report.check(f"[{set_name}] migrations Job is a pre-install/pre-upgrade hook running migrate",
                         migrations_hook(docs) if values["migrations"]["enabled"] else [])
            report.check(f"[{set_name}] every service gets the variables it reads", required_env(docs))
            report.check(f"[{set_name}] PrometheusRule alerts", alerts(docs, values))
            report.check(f"[{set_name}] Grafana dashboard ConfigMap", dashboard(docs, values))
            used = used_metric_names(docs)
            if not used:
                continue
            if not metrics_dir.is_dir():
                report.skip(f"[{set_name}] {len(used)} metric names in alerts and dashboard are exported",
                            f"no {metrics_dir} (the Rust tests write the services' /metrics there; set TASKFLOW_METRICS_DIR)")
                continue
            exported = exported_metric_names(metrics_dir)
            report.check(f"[{set_name}] {len(used)} metric names in alerts and dashboard are exported",
                         [f"{n} is not in {metrics_dir}/*.txt" for n in sorted(used - exported)])
        defaults = chart.values
    report.check("partitions agree: chart kafka.topics, deploy/kafka/topics.yaml, shared-events",
                 partition_agreement(defaults, code_partitions))
    report.check("KafkaUser ACLs: existing topics, each worker's own group", kafka_users(code_groups))
    report.check("Kafka clusters: no auto-created topics, replication and min.insync.replicas",
                 kafka_clusters())
    report.check("dapr-components pub/sub matches the chart (brokers, scope)", dapr_component(defaults))

    print(f"deploy: {report.passed} passed, {report.failed} failed, {report.skipped} skipped")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
