"""The Helm chart in deploy/helm/cvat-bridge, rendered by Helm's engine for the default, GPU and
external-PostgreSQL values; every manifest validated against the Kubernetes JSON schemas (strict)."""

from __future__ import annotations

import json

import pytest

from bridge.config import Settings

from .chart import (
    CHART,
    FULLNAME,
    NAMESPACE,
    Rendered,
    container_env,
    pod_labels,
    render,
    selects,
    validate,
    values_file,
)

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) holds the schemas")

VARIANTS = {
    "default": [],
    "gpu": ["values-gpu.yaml"],
    "external-postgres": ["values-external-postgres.yaml"],
}
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    return {name: render(*map(values_file, files)) for name, files in VARIANTS.items()}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_validates(rendered, variant, kube_version):
    docs = rendered[variant].docs
    assert len(docs) >= 10
    for doc in docs:
        try:
            validate(doc, kube_version)
        except Exception as exc:  # name the manifest in the failure
            pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']} invalid for {kube_version}: {exc}")


def test_the_validation_is_strict(rendered):
    """The checks can fail: an unknown field, a wrong type and an unquoted KEDA value are caught."""
    import copy

    api = copy.deepcopy(rendered["default"].find("Deployment", f"{FULLNAME}-api"))
    api["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(Exception, match="livenessProbes"):
        validate(api, KUBE_VERSIONS[0])
    api = copy.deepcopy(rendered["default"].find("Deployment", f"{FULLNAME}-api"))
    api["spec"]["replicas"] = "2"
    with pytest.raises(Exception, match="is not of type 'integer'"):
        validate(api, KUBE_VERSIONS[-1])
    so = copy.deepcopy(rendered["default"].find("ScaledObject"))
    so["spec"]["triggers"][0]["metadata"]["threshold"] = 2
    with pytest.raises(Exception, match="is not of type 'string'"):
        validate(so, KUBE_VERSIONS[-1])


def test_lint_is_clean():
    report = helm.lint(str(CHART), strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_api_replicas_probes_and_service(rendered):
    r = rendered["default"]
    api = r.find("Deployment", f"{FULLNAME}-api")
    assert api["spec"]["replicas"] >= 2
    (c,) = api["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["serve", "--workers", "0"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health?deep=false", "port": "http"}
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in c["ports"]
    svc = r.find("Service", FULLNAME)
    assert svc["spec"]["selector"] == {k: v for k, v in pod_labels(api).items()}
    spread = api["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and selects(spread["labelSelector"], pod_labels(api))
    pdb = r.find("PodDisruptionBudget", f"{FULLNAME}-api")
    assert pdb["spec"]["minAvailable"] == 1 and selects(pdb["spec"]["selector"], pod_labels(api))


def test_worker_scaled_by_keda_on_the_jobs_gauge(rendered):
    r = rendered["default"]
    worker = r.find("Deployment", f"{FULLNAME}-worker")
    assert "replicas" not in worker["spec"]  # the autoscaler owns it
    (c,) = worker["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["worker"] and "readinessProbe" not in c
    assert {"name": "BRIDGE_WORKERS", "value": "2"} in c["env"]
    so = r.find("ScaledObject", f"{FULLNAME}-worker")
    assert so["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    # the gauge the API exports (bridge.metrics), scoped to this release's Service
    assert "bridge_jobs{" in query and 'status=~"queued|running"' in query
    assert f'service="{FULLNAME}"' in query and f'namespace="{NAMESPACE}"' in query
    assert trigger["metadata"]["threshold"] == "2"  # pending jobs per pod = its worker threads
    sm = r.find("ServiceMonitor", FULLNAME)
    assert selects(sm["spec"]["selector"], r.find("Service", FULLNAME)["metadata"]["labels"])
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    pdb = r.find("PodDisruptionBudget", f"{FULLNAME}-worker")
    assert pdb["spec"]["maxUnavailable"] == 1 and selects(pdb["spec"]["selector"], pod_labels(worker))


def test_the_metric_the_scaler_reads_is_exported():
    """The query's gauge and label values are what the bridge's /metrics really serves."""
    from bridge.metrics import BridgeMetrics

    text = BridgeMetrics(lambda: {"queued": 3, "running": 1, "succeeded": 7}).render().decode()
    assert 'bridge_jobs{status="queued"} 3.0' in text
    assert 'bridge_jobs{status="running"} 1.0' in text


def test_autoscaling_alternatives():
    hpa = render({"worker": {"autoscaling": {"kind": "hpa", "hpa": {"selector": {"matchLabels": {"ns": "cvat"}}}}}})
    assert "ScaledObject" not in hpa.kinds()
    h = hpa.find("HorizontalPodAutoscaler", f"{FULLNAME}-worker")
    metric = h["spec"]["metrics"][0]["external"]
    assert metric["metric"]["name"] == "bridge_jobs_pending" and metric["target"]["averageValue"] == "2"
    for version in KUBE_VERSIONS:
        validate(h, version)
    pg = render({"worker": {"autoscaling": {"keda": {"trigger": "postgresql"}, "targetJobsPerReplica": 3}}})
    (trigger,) = pg.find("ScaledObject")["spec"]["triggers"]
    assert trigger == {"type": "postgresql", "metadata": {
        "connectionFromEnv": "BRIDGE_DATABASE_URL", "targetQueryValue": "3", "activationTargetQueryValue": "0",
        "query": "SELECT count(*) FROM bridge_jobs WHERE status IN ('queued', 'running')"}}
    fixed = render({"worker": {"autoscaling": {"enabled": False}, "replicas": 5}})
    assert {"ScaledObject", "HorizontalPodAutoscaler"}.isdisjoint(fixed.kinds())
    assert fixed.find("Deployment", f"{FULLNAME}-worker")["spec"]["replicas"] == 5


def test_the_scaler_query_counts_pending_jobs(tmp_path):
    """KEDA's postgresql trigger query runs against the real job table and counts queued + running."""
    from bridge.jobs.store import JobStore

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    for i in range(3):
        store.enqueue(pipeline="detect", params={}, trigger={"i": i}, dedupe_key=f"k{i}", flight_key=f"f{i}",
                      max_attempts=3)
    store.enqueue(pipeline="detect", params={}, trigger={}, dedupe_key="done", flight_key="f9", max_attempts=3)
    store.claim("w1", 60)
    q = render({"worker": {"autoscaling": {"keda": {"trigger": "postgresql"}}}}).find("ScaledObject")
    sql = q["spec"]["triggers"][0]["metadata"]["query"]
    from sqlalchemy import text

    with store.engine.begin() as conn:
        conn.execute(text("UPDATE bridge_jobs SET status = 'succeeded' WHERE dedupe_key = 'done'"))
    with store.engine.connect() as conn:
        assert conn.execute(text(sql)).scalar_one() == 3  # 1 running + 2 queued; the finished one not
    store.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_bridge_starts_with_the_rendered_environment(rendered, variant, monkeypatch):
    """Every variable the chart sets is one the bridge reads, and together they pass its checks."""
    r = rendered[variant]
    known = {alias for f in Settings.model_fields.values()
             if f.validation_alias is not None for alias in f.validation_alias.choices}
    for name in (f"{FULLNAME}-api", f"{FULLNAME}-worker"):
        deployment = r.find("Deployment", name)
        if variant == "external-postgres":
            # the URL lives in a Secret the operator creates; stand it in as kubectl would
            r.docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bridge-db"},
                           "stringData": {"BRIDGE_DATABASE_URL": "postgresql://bridge:pw@db.example.internal/bridge"}})
        env = container_env(deployment, r)
        if variant == "external-postgres":
            r.docs.pop()
        unknown = set(env) - known - {"POSTGRES_PASSWORD"}
        assert not unknown, f"{name} sets variables the bridge does not read: {sorted(unknown)}"
        for key in list(known):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        s = Settings(_env_file=None)
        assert s.database_url and s.database_url.startswith("postgresql://")
        assert s.secret_bytes() and len(s.secret_bytes()) == 64
        assert s.public_url == f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:8000"
        assert "{name}" in s.nuclio_function_url


def test_bundled_postgresql_and_its_url(rendered):
    r = rendered["default"]
    sts = r.find("StatefulSet", f"{FULLNAME}-postgresql")
    secret = r.find("Secret", f"{FULLNAME}-database")["stringData"]
    password = secret["POSTGRES_PASSWORD"]
    assert len(password) == 32
    assert secret["BRIDGE_DATABASE_URL"] == f"postgresql://bridge:{password}@{FULLNAME}-postgresql:5432/bridge"
    pg_svc = r.find("Service", f"{FULLNAME}-postgresql")
    assert selects({"matchLabels": pg_svc["spec"]["selector"]}, pod_labels(sts))
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    ext = rendered["external-postgres"]
    assert "StatefulSet" not in ext.kinds() and not ext.all("Secret", f"{FULLNAME}-database")
    (c,) = ext.find("Deployment", f"{FULLNAME}-worker")["spec"]["template"]["spec"]["containers"]
    db = next(e for e in c["env"] if e["name"] == "BRIDGE_DATABASE_URL")
    assert db["valueFrom"]["secretKeyRef"] == {"name": "bridge-db", "key": "BRIDGE_DATABASE_URL"}
    url = render({"postgresql": {"enabled": False}, "database": {"url": "postgresql://u:p@h/db"}})
    assert url.find("Secret", f"{FULLNAME}-database")["stringData"] == {"BRIDGE_DATABASE_URL": "postgresql://u:p@h/db"}


def test_secrets_and_existing_secret():
    r = render({"secrets": {"webhookSecret": "s" * 40, "cvatAccessToken": "pat", "apiToken": "tok"}})
    assert r.find("Secret", FULLNAME)["stringData"] == {
        "WEBHOOK_SECRET": "s" * 40, "CVAT_ACCESS_TOKEN": "pat", "BRIDGE_API_TOKEN": "tok"}
    assert "WARNING: no CVAT credentials" not in r.notes
    own = render({"secrets": {"existingSecret": "my-bridge"}})
    assert not own.all("Secret", FULLNAME)
    (c,) = own.find("Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": "my-bridge"}} in c["envFrom"]


def _ports(rule: dict) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for p in rule.get("ports", [])}


def test_network_policy_only_cvat_in_and_known_peers_out(rendered):
    r = rendered["default"]
    api_np = r.find("NetworkPolicy", f"{FULLNAME}-api")
    api = r.find("Deployment", f"{FULLNAME}-api")
    assert selects(api_np["spec"]["podSelector"], pod_labels(api))
    webhook_rule, metrics_rule = api_np["spec"]["ingress"]
    senders = webhook_rule["from"]
    # CVAT chart pod labels: worker-webhooks sends deliveries, the server sends pings
    cvat_webhooks = {"app": "cvat-app", "tier": "backend", "component": "worker-webhooks"}
    cvat_server = {"app": "cvat-app", "tier": "backend", "component": "server"}
    assert [selects(p["podSelector"], cvat_webhooks) for p in senders] == [True, False]
    assert [selects(p["podSelector"], cvat_server) for p in senders] == [False, True]
    assert all(p["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "cvat"} for p in senders)
    assert not any(selects(p["podSelector"], {"app": "cvat-app", "component": "worker-export"}) for p in senders)
    assert _ports(webhook_rule) == _ports(metrics_rule) == {("TCP", 8000)}
    worker_np = r.find("NetworkPolicy", f"{FULLNAME}-worker")
    assert worker_np["spec"]["ingress"] == [] and "Ingress" in worker_np["spec"]["policyTypes"]
    for np in (api_np, worker_np):
        rules = np["spec"]["egress"]
        assert all("to" in rule for rule in rules), "no egress rule may be open to everything"
        by_port = {port: rule for rule in rules for port in _ports(rule)}
        assert {("UDP", 53), ("TCP", 53), ("TCP", 8080), ("TCP", 8070), ("TCP", 5432)} <= set(by_port)
        nuclio_fn = next(rule for rule in rules
                         if any(selects(p.get("podSelector", {}), {"nuclio.io/class": "function"})
                                and p.get("namespaceSelector") for p in rule["to"]))
        assert _ports(nuclio_fn) == {("TCP", 8080)}
        pg_rule = by_port[("TCP", 5432)]
        assert selects(pg_rule["to"][0]["podSelector"], pod_labels(r.find("StatefulSet")))
    pg_np = r.find("NetworkPolicy", f"{FULLNAME}-postgresql")
    (pg_in,) = pg_np["spec"]["ingress"]
    assert [selects(pg_in["from"][0]["podSelector"], pod_labels(r.find("Deployment", f"{FULLNAME}-{c}")))
            for c in ("api", "worker")] == [True, True]
    assert not selects(pg_in["from"][0]["podSelector"], {"app": "cvat-app"})
    ext = rendered["external-postgres"].find("NetworkPolicy", f"{FULLNAME}-worker")
    pg_out = [rule for rule in ext["spec"]["egress"] if ("TCP", 5432) in _ports(rule)]
    assert pg_out == [{"to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}], "ports": [{"protocol": "TCP", "port": 5432}]}]


def test_smokescreen_allowance_follows_the_pinned_cluster_ip():
    r = render({"service": {"clusterIP": "10.96.200.10"}})
    assert r.find("Service", FULLNAME)["spec"]["clusterIP"] == "10.96.200.10"
    assert 'opts: "--allow-address=10.96.200.10"' in r.notes
    assert "kubectl -n cvat get svc" in render().notes  # unpinned: how to read the IP


def test_gpu_values_keep_the_bridge_off_gpu_nodes_and_match_gpu_functions(rendered):
    r = rendered["gpu"]
    term = {"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}
    for workload in (r.find("Deployment", f"{FULLNAME}-api"), r.find("Deployment", f"{FULLNAME}-worker"),
                     r.find("StatefulSet")):
        affinity = workload["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [{"matchExpressions": [term]}]
    config = r.find("ConfigMap", FULLNAME)["data"]
    assert config["NUCLIO_CONCURRENCY"] == "1"
    assert json.loads(config["NUCLIO_FUNCTION_TIMEOUTS"])["pth-sam2"] == 30
    so = r.find("ScaledObject")
    assert so["spec"]["maxReplicaCount"] == 4 and so["spec"]["triggers"][0]["metadata"]["threshold"] == "1"
    assert so["spec"]["triggers"][0]["type"] == "prometheus"  # -f merges, it does not replace the map
    cpu = rendered["default"].find("ConfigMap", FULLNAME)["data"]
    assert json.loads(cpu["NUCLIO_FUNCTION_TIMEOUTS"])["pth-yolo-coralsegv4"] == 180
    assert "affinity" not in rendered["default"].find("Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]


@pytest.mark.parametrize(("values", "message"), [
    ({"postgresql": {"enabled": False}}, "set database.url or database.existingSecret"),
    ({"database": {"url": "postgresql://x@y/z"}}, "choose one"),
    ({"cvat": {"url": "http://cvat_server:8080"}}, "without underscores"),
    ({"cvat": {"url": "cvat-server:8080"}}, "needs http://"),
    ({"nuclio": {"functionUrl": "http://nuclio-fn:8080"}}, "must contain {name}"),
    ({"worker": {"autoscaling": {"kind": "cron"}}}, "must be keda or hpa"),
    ({"worker": {"enabled": False}}, "nothing would run the jobs"),
])
def test_bad_values_fail_with_what_to_fix(values, message):
    with pytest.raises(helm.HelmRenderError, match=message.replace("{", r"\{").replace("}", r"\}")):
        render(values)


def test_cvat_in_the_bridge_namespace_and_no_workers():
    r = render({"networkPolicy": {"cvat": {"namespace": ""}}, "worker": {"enabled": False},
                "api": {"inProcessWorkers": 2}})
    (c,) = r.find("Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["serve", "--workers", "2"]
    api_np = r.find("NetworkPolicy", f"{FULLNAME}-api")
    senders = api_np["spec"]["ingress"][0]["from"]
    assert [set(p) for p in senders] == [{"podSelector"}, {"podSelector"}]  # the release namespace only
    assert not r.all("Deployment", f"{FULLNAME}-worker") and not r.all("NetworkPolicy", f"{FULLNAME}-worker")
    assert {"ScaledObject", "HorizontalPodAutoscaler"}.isdisjoint(r.kinds())
    for doc in r.docs:
        validate(doc, KUBE_VERSIONS[-1])
