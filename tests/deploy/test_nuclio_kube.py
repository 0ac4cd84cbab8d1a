"""Nuclio functions on the kube platform: each function's function-kube[-gpu].yaml overlay merged over
its function[-gpu].yaml by deploy/nuclio/kube_config.py, and the merge rules themselves."""

from __future__ import annotations

import importlib.util
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from .chart import REPO

FUNCTIONS = sorted(p.parent.name for p in (REPO / "nuclio_functions").glob("*/function.yaml"))
OVERLAY_KEYS = {"platform", "minReplicas", "maxReplicas", "targetCPU", "readinessTimeoutSeconds", "resources",
                "affinity", "nodeSelector", "tolerations", "triggers", "env"}


def _load_tool():
    spec = importlib.util.spec_from_file_location("kube_config", REPO / "deploy" / "nuclio" / "kube_config.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kube_config = _load_tool()


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _as_pod(spec: dict) -> dict:
    """The scheduling fields Nuclio copies into the function's pod, as a Pod to schema-check."""
    pod_spec = {"containers": [{"name": "fn", "image": "x", "resources": spec.get("resources", {})}]}
    for key in ("affinity", "nodeSelector", "tolerations"):
        if key in spec:
            pod_spec[key] = spec[key]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fn"}, "spec": pod_spec}


def test_every_function_has_both_overlays():
    assert {"coralseg", "gridcorners", "gridpose", "lama", "sam2", "sam2_auto"} <= set(FUNCTIONS)
    for name in FUNCTIONS:
        for overlay in ("function-kube.yaml", "function-kube-gpu.yaml"):
            assert (REPO / "nuclio_functions" / name / overlay).is_file(), f"{name}/{overlay} missing"


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_kube_config_of_each_function(name, gpu):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra)")

    base_path = REPO / "nuclio_functions" / name / ("function-gpu.yaml" if gpu else "function.yaml")
    base = _yaml(base_path)
    merged = kube_config.build(base_path, kube_config.overlay_for(base_path))
    spec = merged["spec"]
    assert merged["metadata"]["name"] == base["metadata"]["name"]
    assert "namespace" not in merged["metadata"]  # nuctl --namespace decides
    assert "platform" not in spec  # no Docker network, restart policy or mount mode on kube
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    trigger = spec["triggers"]["myHttpTrigger"]
    assert trigger["attributes"]["serviceType"] == "ClusterIP"
    base_trigger = base["spec"]["triggers"]["myHttpTrigger"]
    assert trigger["maxWorkers"] == base_trigger["maxWorkers"]
    assert trigger["attributes"]["maxRequestBodySize"] == base_trigger["attributes"]["maxRequestBodySize"]
    # the function itself (code, build, labels, timeouts) is untouched
    for key in set(base["spec"]) - OVERLAY_KEYS:
        assert spec[key] == base["spec"][key], key
    assert merged["metadata"]["annotations"] == base["metadata"]["annotations"]
    kubernetes_validate.validate(_as_pod(spec), "1.30.0", strict=True)
    env = {e["name"]: e.get("value") for e in spec.get("env", [])}
    base_env = {e["name"]: e.get("value") for e in base["spec"].get("env", [])}
    if gpu:
        assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert "NVIDIA_VISIBLE_DEVICES" not in env  # the device plugin assigns the GPU
        assert env == {k: v for k, v in base_env.items() if not k.startswith("NVIDIA_")}
    else:
        assert "nvidia.com/gpu" not in spec["resources"].get("limits", {})
        (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"]
        assert term["matchExpressions"] == [{"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}]
        assert env == base_env


def test_merge_patch_rules():
    base = {"metadata": {"name": "f", "namespace": "cvat"},
            "spec": {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "platform": {"attributes": {"network": "cvat_cvat"}},
                     "triggers": {"t": {"maxWorkers": 2, "attributes": {"size": 1}}},
                     "build": {"directives": {"preCopy": [{"kind": "RUN", "value": "x"}]}}}}
    patch = {"metadata": {"namespace": None},
             "spec": {"env": [{"name": "B", "value": None}, {"name": "A", "value": "9"}, {"name": "C", "value": "3"}],
                      "platform": None, "triggers": {"t": {"attributes": {"serviceType": "ClusterIP"}}},
                      "build": {"directives": {"preCopy": []}}, "nodeSelector": {"k": "v"}}}
    out = kube_config.merge_patch(base, patch)
    assert out == {"metadata": {"name": "f"},
                   "spec": {"env": [{"name": "A", "value": "9"}, {"name": "C", "value": "3"}],
                            "triggers": {"t": {"maxWorkers": 2, "attributes": {"size": 1, "serviceType": "ClusterIP"}}},
                            "build": {"directives": {"preCopy": []}}, "nodeSelector": {"k": "v"}}}
    assert base["spec"]["env"][1] == {"name": "B", "value": "2"}  # the base is not modified
    with pytest.raises(kube_config.OverlayError, match="need a name"):
        kube_config.merge_patch(base, {"spec": {"env": [{"value": "x"}]}})


def test_cli_writes_the_merged_config_and_refuses_a_foreign_overlay(tmp_path):
    base = REPO / "nuclio_functions" / "lama" / "function-gpu.yaml"
    out = io.StringIO()
    with redirect_stdout(out):
        assert kube_config.main([str(base)]) == 0
    merged = yaml.safe_load(out.getvalue())
    assert merged["metadata"]["name"] == "pth-lama" and merged["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    foreign = tmp_path / "function-kube.yaml"
    foreign.write_text("metadata: {name: pth-sam2}\n")
    err = io.StringIO()
    with redirect_stderr(err):
        assert kube_config.main([str(base), str(foreign)]) == 2
    assert "is for function 'pth-sam2', but" in err.getvalue()
    with redirect_stderr(io.StringIO()):
        assert kube_config.main([str(tmp_path / "missing.yaml")]) == 2


def test_deploy_sh_platform_kube_merges_the_overlay_and_pushes_to_the_registry(tmp_path):
    """`deploy.sh --platform kube`: every function deployed from config + its kube overlay, no docker network."""
    import subprocess

    script = Path(__file__).resolve().parents[2] / "nuclio_functions" / "deploy.sh"
    out = subprocess.run(["bash", str(script), "--platform", "kube", "--registry", "reg.example:5000", "--dry-run"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    deploys = [ln for ln in out.splitlines() if ln.startswith("nuctl deploy")]
    assert len(deploys) >= 7
    assert all("--platform kube --namespace nuclio --registry reg.example:5000" in ln for ln in deploys)
    assert all("-kube.yaml" in ln.split("--file ")[1].split()[0] for ln in deploys)
    assert not any("--platform-config" in ln or "cvat_cvat" in ln for ln in deploys)
    refused = subprocess.run(["bash", str(script), "--platform", "kube", "--dry-run"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "--registry" in refused.stderr
