"""deploy/kubernetes, checked without a cluster (issue 27): every overlay builds with kustomize, every resource is
valid against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: no unknown field) and the KServe ones
against the kserve SDK's models, checkov finds nothing (each skip carries its reason), and the manifests agree with
the server they run: probes on its health routes, its variables, its user, its drain, the metric the autoscaler
reads.

Tools: `kubectl kustomize` (kubectl comes with the machine image; a standalone `kustomize` works too), checkov from
its own venv (scripts/k8s_tools.sh makes .venv-checkov). A missing tool fails these tests, saying what to install:
CI must run them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from morphserve.settings import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu", "dev")
#: The oldest Kubernetes these manifests are written for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.28.0", "latest")
#: Kinds no Kubernetes schema describes (CRDs of the Prometheus Operator): checked by hand below.
CRD_KINDS = {"ServiceMonitor"}


def kustomize_command() -> list[str]:
    """`kubectl kustomize`, else `kustomize build`; fails (never skips) when neither is there."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.fail(
        "neither kubectl nor kustomize is installed: install kubectl >= 1.27 (kustomize 5) to build the overlays"
    )


@functools.cache
def build(directory: str) -> list[dict[str, Any]]:
    r = subprocess.run([*kustomize_command(), directory], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"kustomize {directory}: {r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str = "morphserve") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [(d["kind"], d["metadata"]["name"]) for d in docs])
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


# -- builds and schemas -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_each_overlay_builds_and_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    docs = build(str(K8S / ("base" if overlay == "base" else f"overlays/{overlay}")))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    assert "ServiceMonitor" in kinds and "ConfigMap" not in kinds  # params.yaml is local-config: never applied
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        assert doc["metadata"].get("namespace") == "morphserve" or doc["kind"] == "Namespace", doc["metadata"]
        for version in KUBERNETES_VERSIONS:
            wanted = kubernetes_validate.latest_version() if version == "latest" else version
            try:
                kubernetes_validate.validate(doc, wanted, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} on Kubernetes {wanted}: {e.message}")


def test_an_invalid_manifest_is_caught() -> None:
    """The check above can fail: an unknown field and a wrong type are refused."""
    import kubernetes_validate

    deployment = json.loads(json.dumps(one(build(str(K8S / "overlays/cpu")), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.28.0", strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0].pop("readinesProbe")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.28.0", strict=True)


def test_the_service_monitor_scrapes_the_services_named_port() -> None:
    docs = build(str(K8S / "overlays/cpu"))
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # the params' default


# -- the manifests agree with the server -------------------------------------------------------------------------
def test_probes_resources_user_and_state_are_the_servers() -> None:
    docs = build(str(K8S / "overlays/cpu"))
    deployment = one(docs, "Deployment")
    pod, c = deployment["spec"]["template"]["spec"], container(docs)
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    variables = env(c)
    assert variables["MORPHSERVE_PORT"] == str(port)
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # model loading + 30 s of database retries
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    # Every MORPHSERVE_* variable is a setting (a typo would be ignored silently by the server).
    for name in variables:
        if name.startswith("MORPHSERVE_"):
            assert name.removeprefix("MORPHSERVE_").lower() in Settings.model_fields, name
    assert variables["MORPHSERVE_ADMIN_TOKEN"]["secretKeyRef"]["name"] == "morphserve-admin"
    assert variables["MORPHSERVE_JOURNAL"]["secretKeyRef"]["name"] == "morphserve-journal"
    # Non-root as the image's user, read-only root, the state dir and /tmp as volumes.
    dockerfile_user = re.search(r"^USER (\d+):(\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile_user is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(dockerfile_user.group(1)) == c["securityContext"]["runAsUser"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert variables["MORPHSERVE_STATE_DIR"] in mounts and "/tmp" in mounts
    assert all("emptyDir" in volumes[name] for name in mounts.values())


def test_a_rolling_update_never_drops_a_request() -> None:
    """maxUnavailable 0 / maxSurge 1, a preStop that outlasts the endpoints' update, and a grace period that covers
    the preStop, the server's drain (uvicorn's graceful shutdown) and its close."""
    from morphserve.settings import GRACEFUL_SHUTDOWN_S

    deployment = one(build(str(K8S / "overlays/cpu")), "Deployment")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    c = container([deployment])
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert pre_stop >= 5
    follower_join_s = 10  # the registry's close: Follower.stop joins its thread for at most this long
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + GRACEFUL_SHUTDOWN_S + follower_join_s, grace


def test_the_budget_hpa_and_policy_select_the_pods_and_the_service_reaches_them() -> None:
    docs = build(str(K8S / "overlays/cpu"))
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert one(docs, "Service")["spec"]["selector"].items() <= pod_labels.items()
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted = [
        rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] for rule in policy["spec"]["ingress"]
    ]
    assert admitted == [["ingress-nginx"], ["monitoring"]]
    ports = {p["name"] for p in container(docs)["ports"]}
    assert all(p["port"] in ports for rule in policy["spec"]["ingress"] for p in rule["ports"])
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "morphserve"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_the_namespaces_admitted_are_parameters(tmp_path: Path) -> None:
    """An overlay of its own merges other values into the params: the NetworkPolicy and ServiceMonitor follow."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / "base", tmp_path)],
                "configMapGenerator": [
                    {
                        "name": "morphserve-params",
                        "behavior": "merge",
                        "literals": [
                            "ingressNamespace=traefik",
                            "prometheusNamespaceLabel=team",
                            "prometheusRelease=prom",
                        ],
                        "options": {"disableNameSuffixHash": True},
                    }
                ],
                "components": [os.path.relpath(K8S / "components/params", tmp_path)],
            }
        )
    )
    docs = build(str(tmp_path))
    rules = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert rules[0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["traefik"]
    assert rules[1]["from"][0]["namespaceSelector"]["matchExpressions"][0]["key"] == "team"
    assert one(docs, "ServiceMonitor")["metadata"]["labels"]["release"] == "prom"


def test_queue_depth_autoscaling_reads_the_servers_metric_through_the_adapter(tmp_path: Path) -> None:
    from morphserve.serving.metrics import Metrics

    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / "overlays/cpu", tmp_path)],
                "components": [os.path.relpath(K8S / "components/queue-depth-autoscaling", tmp_path)],
            }
        )
    )
    hpa = one(build(str(tmp_path)), "HorizontalPodAutoscaler")
    (queue,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    name = queue["pods"]["metric"]["name"]
    rules = yaml.safe_load((K8S / "prometheus-adapter/rules.yaml").read_text())["rules"]["custom"]
    assert [r["name"]["as"] for r in rules] == [name]
    assert rules[0]["seriesQuery"].startswith(name + "{")
    assert name in {m.name for m in Metrics().registry.collect()}  # a gauge the server exports


def test_the_gpu_overlay_asks_for_a_gpu_and_runs_on_cuda() -> None:
    c = container(build(str(K8S / "overlays/gpu")))
    assert c["image"] == "morphserve:cu126"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and env(c)["MORPHSERVE_DEVICE"] == "cuda"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"  # the base's, kept by the patch
    assert container(build(str(K8S / "overlays/cpu")))["image"] == "morphserve:cpu"


def test_the_dev_overlay_brings_the_secrets_and_database_the_base_reads() -> None:
    docs = build(str(K8S / "overlays/dev"))
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    variables = env(container(docs))
    for variable in ("MORPHSERVE_ADMIN_TOKEN", "MORPHSERVE_JOURNAL"):
        ref = variables[variable]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["data"], variable
    import base64

    url = base64.b64decode(secrets["morphserve-journal"]["data"]["url"]).decode()
    database = one(docs, "StatefulSet", "morphserve-postgres")
    service = one(docs, "Service", "morphserve-postgres")
    assert f"@{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/" in url
    Settings(journal=url)  # a journal URL the server accepts
    assert database["spec"]["replicas"] == 1


# -- KServe ------------------------------------------------------------------------------------------------------
def _kserve_check(data: Any, type_name: str) -> dict[str, Any]:
    """`data` checked as the kserve SDK's model `type_name` (tests/deploy/kserve_sdk.py), in a process of its own:
    the SDK registers KServe's gRPC messages in protobuf's default pool under the very names tritonclient.grpc
    registers there (both are the v2 protocol's `inference.*`), and the test session has imported tritonclient."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.deploy.kserve_sdk", type_name],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def kserve_docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for f in sorted((K8S / "kserve").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())}


def test_the_kserve_resources_are_valid_against_the_kserve_sdk() -> None:
    docs = kserve_docs()
    assert set(docs) == {"ClusterServingRuntime", "InferenceService"}
    runtime = _kserve_check(docs["ClusterServingRuntime"], "V1alpha1ClusterServingRuntime")
    isvc = _kserve_check(docs["InferenceService"], "V1beta1InferenceService")
    assert runtime["problem"] is None and isvc["problem"] is None, (runtime, isvc)
    # what the SDK's objects hold (read back from them, so the field names are the SDK's)
    assert runtime["object"]["spec"]["containers"][0]["name"] == "kserve-container"
    assert isvc["object"]["spec"]["predictor"]["model"]["storage_uri"].endswith(".zip")
    bad = json.loads(json.dumps(docs["InferenceService"]))
    bad["spec"]["predictor"]["model"]["storageURI"] = bad["spec"]["predictor"]["model"].pop("storageUri")
    refused = _kserve_check(bad, "V1beta1InferenceService")  # the check can fail
    assert refused["problem"] is not None and "storageURI" in refused["problem"], refused


def test_the_kserve_runtime_launches_the_server_on_the_model_kserve_mounts() -> None:
    """The runtime's arguments parse as `morphserve serve`'s own (with KServe's {{.Name}} filled in): the model
    directory KServe fills, the port its protocol v2 container must listen on, the name it routes by."""
    import typer.main
    from typer.testing import CliRunner

    from morphserve.cli import cli

    docs = kserve_docs()
    runtime, isvc = docs["ClusterServingRuntime"], docs["InferenceService"]
    (c,) = runtime["spec"]["containers"]
    assert c["name"] == "kserve-container" and [p["containerPort"] for p in c["ports"]] == [8080]
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert isvc["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] == "morphserve" and "morphserve" in formats
    annotations = runtime["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == "8080" and annotations["prometheus.kserve.io/path"] == "/metrics"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    args = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in c["args"]]
    serve = typer.main.get_command(cli).commands["serve"]  # type: ignore[attr-defined]
    given = serve.make_context("serve", list(args)).params
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    assert settings.model_dir == Path("/mnt/models") and settings.model_name == isvc["metadata"]["name"]
    assert settings.port == 8080 and settings.host == "0.0.0.0" and settings.models == []
    assert CliRunner().invoke(cli, ["serve", "--help"]).exit_code == 0
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and {"/tmp", "/var/lib/morphserve"} <= mounts
