"""Render the Helm chart offline with Helm's own engine and validate the manifests.

``helm-python-sdk`` binds Helm's Go SDK (``helm template`` without a binary or a cluster);
``kubernetes-validate`` carries the Kubernetes JSON schemas. CRD kinds the core schemas do not
know (KEDA ``ScaledObject``, Prometheus Operator ``ServiceMonitor``) are checked against the small
schemas below, written from those projects' CRDs for the fields this chart sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "cvat-bridge"
RELEASE, NAMESPACE = "bridge", "cvat"
FULLNAME = f"{RELEASE}-cvat-bridge"

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": _STR_MAP, "matchExpressions": {"type": "array"}},
    "additionalProperties": False,
}
_META = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "labels": _STR_MAP}}
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object", "required": ["name"], "additionalProperties": False,
                        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                       "name": {"type": "string"}, "envSourceContainerName": {"type": "string"}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "idleReplicaCount": {"type": "integer"},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "fallback": {"type": "object"},
                    "advanced": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"restoreToOriginalReplicaCount": {"type": "boolean"},
                                       "horizontalPodAutoscalerConfig": {
                                           "type": "object", "additionalProperties": False,
                                           "properties": {"name": {"type": "string"},
                                                          "behavior": {"type": "object"}}},
                                       "scalingModifiers": {"type": "object"}},
                    },
                    "triggers": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                            "properties": {"type": {"type": "string"}, "name": {"type": "string"},
                                           "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                           "useCachedMetrics": {"type": "boolean"},
                                           "authenticationRef": {"type": "object"},
                                           # KEDA's metadata is map[string]string: numbers must be quoted
                                           "metadata": _STR_MAP},
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _META,
            "spec": {
                "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
                "properties": {
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"},
                                       "matchNames": {"type": "array", "items": {"type": "string"}}},
                    },
                    "endpoints": {
                        "type": "array", "minItems": 1,
                        "items": {"type": "object", "additionalProperties": False,
                                  "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                                 "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                                 "scheme": {"enum": ["http", "https"]}}},
                    },
                },
            },
        },
    },
}


@dataclass
class Rendered:
    """One render: every manifest parsed, plus the NOTES."""

    docs: list[dict[str, Any]]
    notes: str

    def find(self, kind: str, name: str | None = None) -> dict[str, Any]:
        hits = self.all(kind, name)
        assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
        return hits[0]

    def all(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}


def values_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / name).read_text(encoding="utf-8")) or {}


def render(*values: dict[str, Any]) -> Rendered:
    """``helm template bridge CHART -n cvat -f a -f b``: values dicts merged like repeated ``-f``."""
    import helm_python as helm

    merged: dict[str, Any] = {}
    for v in values:
        merged = coalesce(merged, v)
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(merged, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return Rendered(docs, notes)


def coalesce(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files: maps merge recursively, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = coalesce(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def validate(doc: dict[str, Any], kube_version: str) -> None:
    """Strict schema validation (unknown fields fail); CRD kinds against ``CRD_SCHEMAS``."""
    import jsonschema
    import kubernetes_validate

    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[key])
        return
    kubernetes_validate.validate(doc, kube_version, strict=True)


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions In/NotIn/Exists) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_env(workload: dict[str, Any], rendered: Rendered) -> dict[str, str]:
    """The environment the bridge container starts with: ConfigMap and Secret envFrom, then env."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(rendered.find("ConfigMap", src["configMapRef"]["name"])["data"])
        elif "secretRef" in src:
            env.update(rendered.find("Secret", src["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = rendered.find("Secret", ref["name"])["stringData"][ref["key"]]
    return env
