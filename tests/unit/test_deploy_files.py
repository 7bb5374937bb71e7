"""The deploy files, checked without Docker or a cluster: parse them and hold their invariants."""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from stream_rec.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"

WORKER_ENV = {
    "STREAM_REC_BOOTSTRAP_SERVERS",
    "STREAM_REC_EVENTS_TOPIC",
    "STREAM_REC_RECS_TOPIC",
    "STREAM_REC_DLQ_TOPIC",
    "STREAM_REC_BUNDLES_DIR",
    "STREAM_REC_DATA_DIR",
    "STREAM_REC_TOP_K",
    "STREAM_REC_PARTITIONS",
    "STREAM_REC_SESSION_TIMEOUT_S",
    "STREAM_REC_WORKER_PORT",
    "STREAM_REC_WORKER_HOST",
}
TOPIC_VARS = ("STREAM_REC_EVENTS_TOPIC", "STREAM_REC_RECS_TOPIC", "STREAM_REC_DLQ_TOPIC")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    """Every manifest under deploy/k8s by kind (one object of each kind)."""
    out: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in out, f"two {doc['kind']} manifests"
            out[doc["kind"]] = doc
    return out


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _default(value: str) -> str:
    """A compose value with ``${VAR:-default}`` interpolation resolved to its default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


# --------------------------------------------------------------------------- the env var names
def test_the_listed_env_vars_are_settings_of_the_app():
    known = {env_name(f) for f in Settings.__dataclass_fields__}
    assert WORKER_ENV <= known


def test_compose_worker_env_names_and_values_parse(compose):
    env = _env(compose["services"]["worker"])
    assert set(env) == WORKER_ENV
    defaults = {k: _default(v) for k, v in env.items()}
    settings = Settings.from_env(defaults)  # every value is valid for its setting
    assert settings.bootstrap_servers == "kafka:19092"
    assert (settings.events_topic, settings.recs_topic, settings.dlq_topic) == (
        "events",
        "recommendations",
        "events.dlq",
    )
    assert settings.partitions == 6


def test_k8s_configmap_holds_exactly_the_worker_env(k8s):
    data = k8s["ConfigMap"]["data"]
    assert set(data) == WORKER_ENV - {"STREAM_REC_WORKER_HOST"}  # the pod's IP, in the StatefulSet
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    Settings.from_env(data)


def test_dockerfile_env_names(compose):
    names = set()
    for line in _dockerfile_instructions("ENV"):
        names |= {m.group(1) for m in re.finditer(r"([A-Z_][A-Z0-9_]*)=", line)}
    assert {n for n in names if n.startswith("STREAM_REC_")} <= WORKER_ENV
    assert names - WORKER_ENV <= {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


# --------------------------------------------------------------------------- compose
def test_compose_kafka_runs_in_kraft_mode_without_zookeeper(compose):
    assert "zookeeper" not in json.dumps(compose).lower(), "no ZooKeeper service or setting"
    kafka = compose["services"]["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"]), "official image, pinned"
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "a KRaft cluster id is a UUID"


def test_compose_publishes_ports_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} not on 127.0.0.1"
    env = _env(compose["services"]["kafka"])
    host_listeners = [
        a for a in env["KAFKA_ADVERTISED_LISTENERS"].split(",") if "//kafka:" not in a
    ]
    assert all("//127.0.0.1:" in a for a in host_listeners)


def test_compose_build_context_and_dockerfile_exist(compose):
    builds = [s["build"] for s in compose["services"].values() if "build" in s]
    assert builds, "the worker is built from deploy/Dockerfile"
    for build in builds:
        context = (ROOT / build["context"]).resolve()
        assert context.is_dir()
        assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert source == "./bundles" or source.startswith("./deploy/"), \
                    f"unexpected host path {source}"
                assert source == "./bundles" or (ROOT / source).exists(), f"{source} is missing"
            else:
                assert source in compose["volumes"], f"undeclared volume {source}"


def test_compose_creates_the_topics_before_the_worker_starts(compose):
    init = compose["services"]["kafka-init"]
    script = " ".join(init["command"])
    for var, default in zip(TOPIC_VARS, ("events", "recommendations", "events.dlq"), strict=True):
        assert f"${{{var}:-{default}}}" in script
    assert "--if-not-exists" in script and "${STREAM_REC_PARTITIONS:-6}" in script
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    worker = compose["services"]["worker"]
    assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    mounts = {v.split(":")[1] for v in worker["volumes"]}
    env = _env(worker)
    assert {env["STREAM_REC_DATA_DIR"], env["STREAM_REC_BUNDLES_DIR"]} <= mounts


# --------------------------------------------------------------------------- Dockerfile
def _dockerfile_instructions(keyword: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(keyword + " ")]


def test_dockerfile_serves_without_the_train_extra():
    froms = _dockerfile_instructions("FROM")
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)
    assert json.loads(_dockerfile_instructions("ENTRYPOINT")[-1]) == ["stream-rec"]
    assert json.loads(_dockerfile_instructions("CMD")[-1]) == ["worker"]
    text = DOCKERFILE.read_text()
    assert "[train" not in text and "torch" not in text
    assert re.search(r"^USER \d+", text, re.M), "runs as a non-root uid"
    for copy in _dockerfile_instructions("COPY"):
        if "--from=" in copy:
            continue
        for source in shlex.split(copy)[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} missing from the build context"


# --------------------------------------------------------------------------- Kubernetes
def test_k8s_worker_is_a_statefulset_with_a_volume_per_pod(k8s):
    assert "Deployment" not in k8s, "a stateful consumer with RocksDB is not a Deployment"
    sts = k8s["StatefulSet"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    claim = spec["volumeClaimTemplates"][0]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = k8s["ConfigMap"]["data"]
    assert mounts[claim["metadata"]["name"]] == config["STREAM_REC_DATA_DIR"]
    assert mounts["bundles"] == config["STREAM_REC_BUNDLES_DIR"]
    assert container["envFrom"] == [
        {"configMapRef": {"name": k8s["ConfigMap"]["metadata"]["name"]}}
    ]
    assert spec["template"]["metadata"]["labels"] == spec["selector"]["matchLabels"]
    assert spec["replicas"] <= int(config["STREAM_REC_PARTITIONS"]), "extra workers would idle"


def test_k8s_headless_service_and_pdb_select_the_workers(k8s):
    sts, svc, pdb = k8s["StatefulSet"], k8s["Service"], k8s["PodDisruptionBudget"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"] == labels
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert pdb["spec"]["maxUnavailable"] == 1
    claim = k8s["PersistentVolumeClaim"]["metadata"]["name"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["bundles"]["persistentVolumeClaim"]["claimName"] == claim


def test_k8s_probes_resources_and_graceful_shutdown(k8s):
    pod = k8s["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60, "time for a clean faust shutdown"
    (container,) = pod["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert "STREAM_REC_WORKER_HOST" in command[-1] and "STREAM_REC_WORKER_PORT" in command[-1]
        want = "/health/ready" if probe == "readinessProbe" else "/health/live"
        assert want in command[-1], f"{probe} asks {want}"
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAM_REC_WORKER_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "room for recovery"
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(k8s["ConfigMap"]["data"]["STREAM_REC_WORKER_PORT"])
    assert container["args"] == ["worker"]


def test_k8s_topics_job_creates_the_three_topics(k8s):
    (container,) = k8s["Job"]["spec"]["template"]["spec"]["containers"]
    script = " ".join(container["args"])
    assert all(f"${var}" in script for var in TOPIC_VARS)
    assert "$STREAM_REC_PARTITIONS" in script and "--if-not-exists" in script
    assert container["envFrom"] == [
        {"configMapRef": {"name": k8s["ConfigMap"]["metadata"]["name"]}}
    ]


def test_deploy_readme_names_files_that_exist():
    text = (ROOT / "deploy" / "README.md").read_text()
    for path in set(re.findall(r"`((?:deploy/|docker-compose)[^`\s]*)`", text)):
        assert (ROOT / path).exists(), f"deploy/README.md names {path}, which does not exist"


# ---- observability (issue 14): Prometheus, Grafana and KEDA files that agree with the code
GRAFANA = ROOT / "deploy" / "grafana"


def _exported_metric_names() -> set[str]:
    """Every sample name a worker's /metrics exposes (a registry scraped once, no broker)."""
    from prometheus_client.parser import text_string_to_metric_families

    from stream_rec.serving.metrics import WorkerMetrics

    cache = {"users": 1, "positions": 2, "bytes": 3, "limit_bytes": 4, "steps": 5, "repeats": 0,
             "misses": 1, "evictions": 0}
    m = WorkerMetrics(lambda: "v", lambda: {0: 3}, lambda: {0: (1, 2)}, encoder_cache=lambda: cache)
    m.observe_batch(2, ["click"], ["not_json"], {"fold": 0.001})
    m.observe_answers([1], 2)
    text = m.exposition().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_grafana_dashboard_asks_only_for_metrics_the_workers_export():
    dash = json.loads((GRAFANA / "dashboards" / "stream-rec.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"stream_rec_[a-z_]+", e)}
    exported = _exported_metric_names()
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "stream-rec.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_runs_prometheus_and_grafana_on_the_worker_metrics(compose):
    services = compose["services"]
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    port = _default(_env(services["worker"])["STREAM_REC_WORKER_PORT"])
    assert job["dns_sd_configs"][0]["port"] == int(port)
    assert _env(services["worker"])["STREAM_REC_WORKER_HOST"] == "worker", "not a wildcard"
    for name, mount in (("prometheus", "./deploy/prometheus/prometheus.yml"),
                        ("grafana", "./deploy/grafana/provisioning")):
        assert any(v.startswith(mount) for v in services[name]["volumes"])
        assert (ROOT / mount).exists()
    assert "/health/ready" in " ".join(services["worker"]["healthcheck"]["test"])


def test_keda_scales_the_statefulset_on_lag_up_to_the_partitions(k8s):
    so = k8s["ScaledObject"]
    assert so["spec"]["scaleTargetRef"]["name"] == k8s["StatefulSet"]["metadata"]["name"]
    assert so["spec"]["maxReplicaCount"] == int(k8s["ConfigMap"]["data"]["STREAM_REC_PARTITIONS"])
    (trigger,) = so["spec"]["triggers"]
    data = k8s["ConfigMap"]["data"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == data["STREAM_REC_EVENTS_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == data["STREAM_REC_BOOTSTRAP_SERVERS"]
    assert trigger["metadata"]["consumerGroup"] == Settings().app_id


def test_k8s_gateway_is_a_deployment_with_probes_on_its_own_address():
    docs = list(yaml.safe_load_all((K8S / "gateway" / "gateway.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    dep, svc = by_kind["Deployment"], by_kind["Service"]
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["gateway"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAM_REC_GATEWAY_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "secretKeyRef" in env["STREAM_REC_GATEWAY_SECRET"]["valueFrom"]
    port = int(env["STREAM_REC_GATEWAY_PORT"]["value"])
    assert container["ports"][0]["containerPort"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == port
    names = {n for n, *_ in Settings.describe()}
    assert all(e.removeprefix("STREAM_REC_").lower() in names for e in env)


def test_k8s_learner_is_one_replica_publishing_to_the_bundles_topic():
    docs = list(yaml.safe_load_all((K8S / "learner" / "learner.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    dep = kinds["Deployment"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][0] == "learn"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["STREAM_REC_BUNDLES_TOPIC"] and env["STREAM_REC_WORKER_HOST"]
    Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    port = int(dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
    assert container["ports"][0]["containerPort"] == port
    assert str(port) in container["args"]
