#!/usr/bin/env python3
"""Validate the project's Kubernetes custom resources against the upstream CRDs in ../shared/crds.

Each document's apiVersion must be served by the CRD of its kind, and the document must match
that version's openAPIV3Schema (the check is looser than an API server: see shared/crds/README.md).
Built-in kinds (core and *.k8s.io groups) and files of a Helm chart (values, not manifests) are
left to scripts/checks/deploy.sh, which validates them with kubernetes-validate and real Helm.
Usage: validate_manifests.py CRD_DIR FILE...
"""
import sys
from pathlib import Path

import jsonschema
import yaml


def load_crds(crd_dir):
    crds = {}
    for path in Path(crd_dir).rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                spec = doc["spec"]
                crds[(spec["group"], spec["names"]["kind"])] = spec
    return crds


def is_builtin(doc):
    group = doc.get("apiVersion", "").rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def in_helm_chart(path):
    return any((d / "Chart.yaml").is_file() for d in Path(path).resolve().parents)


def check(doc, crds):
    group, _, version = doc.get("apiVersion", "").rpartition("/")
    spec = crds.get((group, doc.get("kind")))
    if spec is None:
        return [f"no CRD for {doc.get('apiVersion')} {doc.get('kind')}"]
    served = [v for v in spec["versions"] if v["name"] == version and v.get("served")]
    if not served:
        return [f"{group}/{version} is not served by the {doc['kind']} CRD"]
    schema = served[0]["schema"]["openAPIV3Schema"]
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]


def main(argv):
    crds = load_crds(argv[1])
    failures = 0
    for name in argv[2:]:
        if in_helm_chart(name):
            print(f"skip {name}: part of a Helm chart (rendered by scripts/checks/deploy.sh)")
            continue
        for doc in yaml.safe_load_all(Path(name).read_text()):
            if not doc:
                continue
            if is_builtin(doc):
                print(f"skip {name}: {doc.get('kind')} is built in (scripts/checks/deploy.sh)")
                continue
            errors = check(doc, crds)
            label = f"{name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            if errors:
                failures += 1
                print(f"FAIL {label}")
                for e in errors:
                    print(f"  {e}")
            else:
                print(f"ok   {label}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
