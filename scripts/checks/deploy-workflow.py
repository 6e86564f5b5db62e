#!/usr/bin/env python3
"""Structural test of .github/workflows/deploy.yaml (and the workflow it calls per environment):
triggers, job order, image names against the Helm chart, Helm flags, the post-deploy checks,
rollback, permissions, concurrency, and that every action of every workflow and local action
is pinned to a full commit SHA with its version in a comment. Prints one line per assertion; exit 1 if any
fails."""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CHART_VALUES = ROOT / "deploy" / "helm" / "taskflow" / "values.yaml"
SERVICES = ["backend", "recurrence-worker", "notifier"]
PINNED = re.compile(r"^\s*-?\s*uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d+(\.\d+)*\s*$")

failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"{'ok' if ok else 'FAILED'}: {name}{'' if ok or not detail else f' ({detail})'}")
    failures += 0 if ok else 1


def load(path):
    doc = yaml.safe_load(path.read_text())
    # PyYAML reads the key `on` as the boolean True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def steps(job):
    return job.get("steps", [])


def step_index(job, predicate):
    return next((i for i, s in enumerate(steps(job)) if predicate(s)), -1)


def runs(fragment):
    return lambda s: fragment in s.get("run", "")


deploy = load(WORKFLOWS / "deploy.yaml")
jobs = deploy["jobs"]

# Triggers
on = deploy["on"]
check("push to main triggers", on.get("push", {}).get("branches") == ["main"])
check("v* tags trigger", "v*" in on.get("push", {}).get("tags", []))
check("manual dispatch", "workflow_dispatch" in on)

# Job order
images = jobs.get("images", {})
staging, production = jobs.get("staging", {}), jobs.get("production", {})


def needs(job):
    n = job.get("needs", [])
    return [n] if isinstance(n, str) else n


check("images need plan", "plan" in needs(images))
check("staging needs images", "images" in needs(staging), needs(staging))
check("production needs staging", "staging" in needs(production), needs(production))
for name, job in (("staging", staging), ("production", production)):
    check(f"{name} deploys to environment {name}", job.get("with", {}).get("environment") == name)
    check(f"{name} gets a kubeconfig secret", "KUBECONFIG_" + name.upper() in str(job.get("secrets")))

# Images: matrix, names, tags, Dockerfile
matrix = images.get("strategy", {}).get("matrix", {}).get("service")
check("matrix builds the three images", matrix == SERVICES, matrix)
meta = next((s for s in steps(images) if "metadata-action" in s.get("uses", "")), {})
image_template = meta.get("with", {}).get("images", "")
check("image name is <prefix>/taskflow-<service>", image_template.endswith("/taskflow-${{ matrix.service }}"), image_template)
tags = meta.get("with", {}).get("tags", "")
for tag in ("type=sha,format=long", "type=semver,pattern={{version}}", "type=ref,event=branch", "value=latest"):
    check(f"image tag {tag}", tag in tags)
build = next((s for s in steps(images) if "build-push-action" in s.get("uses", "")), {})
bw = build.get("with", {})
check("build pushes", bw.get("push") is True)
check("build uses the GitHub Actions layer cache", "type=gha" in str(bw.get("cache-from")) and "type=gha" in str(bw.get("cache-to")))
check("Buildx is set up", any("setup-buildx-action" in s.get("uses", "") for s in steps(images)))
dockerfile = bw.get("file", "").replace("${{ matrix.service }}", "backend")
if (ROOT / "deploy" / "docker").is_dir():
    check(f"Dockerfile {dockerfile} exists", (ROOT / dockerfile).is_file())
else:
    print("skipped: Dockerfile exists: deploy/docker missing")

if CHART_VALUES.is_file():
    values = yaml.safe_load(CHART_VALUES.read_text())
    for service in SERVICES:
        key = re.sub(r"-(\w)", lambda m: m.group(1).upper(), service)
        repo = (values.get(key) or {}).get("image", {}).get("repository")
        check(f"image taskflow-{service} is the chart's {key}.image.repository", repo == f"taskflow-{service}", repo)
    check("the chart takes the registry from image.registry", "registry" in (values.get("image") or {}))
else:
    print("skipped: image names vs chart: chart missing (deploy/helm/taskflow/values.yaml)")

# The per-environment deploy
callee_path = staging.get("uses", "")
check("staging and production use one deploy workflow", callee_path and callee_path == production.get("uses"), callee_path)
callee = load(ROOT / callee_path) if callee_path.startswith("./") else {"jobs": {}}
check("the deploy workflow is reusable", "workflow_call" in (callee.get("on") or {}))
deploy_job = next(iter(callee["jobs"].values()), {})
check("deploy job runs in the given environment", "inputs.environment" in str(deploy_job.get("environment")))
conc = deploy_job.get("concurrency", {})
check("deploys never overlap (concurrency, no cancelling)", "inputs.environment" in str(conc.get("group")) and conc.get("cancel-in-progress") is False)

i_helm = step_index(deploy_job, runs("helm upgrade --install"))
helm = steps(deploy_job)[i_helm] if i_helm >= 0 else {}
for flag in ("--atomic", "--wait", "--timeout 10m", "deploy/helm/taskflow", 'image.tag="$IMAGE_TAG"', 'image.registry="$IMAGE_REGISTRY"'):
    check(f"helm upgrade {flag}", flag in helm.get("run", "") + str(deploy_job.get("env")))
check("the image tag is the commit SHA", helm.get("env", {}).get("IMAGE_TAG") == "${{ github.sha }}")
i_kube = step_index(deploy_job, lambda s: "secrets.kubeconfig" in str(s.get("env")))
check("kubeconfig from the secret before helm", 0 <= i_kube < i_helm)
i_rollout = step_index(deploy_job, runs("rollout status"))
check("rollout status after helm", i_rollout > i_helm >= 0)
i_health = step_index(deploy_job, runs("deploy/scripts/health-check.sh"))
check("health check runs deploy/scripts/health-check.sh after the rollout", i_health > i_rollout)
script = ROOT / "deploy" / "scripts" / "health-check.sh"
check("deploy/scripts/health-check.sh is executable", script.is_file() and script.stat().st_mode & 0o111)
i_back = step_index(deploy_job, runs("helm rollback"))
rollback = steps(deploy_job)[i_back] if i_back >= 0 else {}
check("rollback on failure, after the health check", i_back > i_health and "failure()" in str(rollback.get("if")))

# Permissions and pinning, in every workflow
for path in sorted(WORKFLOWS.glob("*.y*ml")):
    wf = load(path)
    check(f"{path.name}: no default permissions", wf.get("permissions") == {}, wf.get("permissions"))
    for name, job in wf["jobs"].items():
        perms = job.get("permissions")
        check(f"{path.name}: job {name} declares its permissions", isinstance(perms, dict), perms)
        writes = sorted(k for k, v in (perms or {}).items() if v == "write")
        allowed = ["packages"] if name == "images" else []
        check(f"{path.name}: job {name} writes only {allowed or 'nothing'}", writes == allowed, writes)
for path in sorted(WORKFLOWS.glob("*.y*ml")) + sorted((ROOT / ".github" / "actions").glob("*/action.y*ml")):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"^\s*-?\s*uses:", line) and "uses: ./" not in line:
            check(f"{path.relative_to(ROOT)}:{n}: action pinned by commit SHA with its version", bool(PINNED.match(line)), line.strip())

print(f"{failures} failed" if failures else "all deploy workflow checks ok")
sys.exit(1 if failures else 0)
