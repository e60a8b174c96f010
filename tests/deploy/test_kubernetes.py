"""The kustomize base in deploy/kubernetes: schema-valid, hardened, and consistent with itself,
the watcher's configuration and the Prometheus rules.

- Core kinds are validated against the Kubernetes OpenAPI schemas that ``kubernetes-validate``
  bundles (offline, strict: unknown fields fail); the CRDs (ServiceMonitor, PrometheusRule)
  and the Kustomization structurally.
- The ConfigMap's config.yaml is loaded by ``watcher.config.load_config`` with exactly the
  environment the Deployment provides, so every ``*_env`` it names must come from the Secret.
- Selectors, ports, probes and mounts are cross-checked between the manifests.
- ``kubectl kustomize`` builds the base when kubectl is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.promql import REPO, RULES, unavailable
from watcher import __version__
from watcher.config import load_config

BASE = REPO / "deploy" / "kubernetes"
GENERATOR = REPO / "deploy" / "gen_prometheusrule.py"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the base is checked against (also: latest)
CORE_KINDS = {
    "Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget",
    "ServiceAccount", "PersistentVolumeClaim",
}  # fmt: skip
STATE_DIR = "/var/lib/registry-watcher"
CONFIG_PATH = "/etc/registry-watcher/config.yaml"
NAME_LABEL = "app.kubernetes.io/name"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Kind → the (single) object of that kind in the base."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(BASE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _docs(path):
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            out[doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def _pod_labels(manifests: dict[str, dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- files and schemas --------------------------------------------------------------------


def test_every_file_parses_and_is_listed_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    files = {p.name for p in BASE.iterdir() if p.is_file()} - {"kustomization.yaml"}
    assert set(listed) == files, "kustomization.yaml must list exactly the files beside it"
    for name in listed:
        for doc in _docs(BASE / name):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), name
            assert doc["metadata"]["name"].startswith("registry-watcher"), name
            assert doc["metadata"]["labels"][NAME_LABEL] == "registry-watcher", name
            assert "namespace" not in doc["metadata"], f"{name}: the overlay sets namespaces"


@pytest.mark.parametrize("version", [K8S_VERSION, "latest"])
def test_core_kinds_validate_against_kubernetes_schemas(
    manifests: dict[str, dict[str, Any]], version: str
) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate not installed (the test extra: pip install -e '.[test]')")
        return
    target = kubernetes_validate.latest_version() if version == "latest" else version
    assert manifests.keys() >= CORE_KINDS
    errors = []
    for kind in sorted(CORE_KINDS):
        try:
            kubernetes_validate.validate(manifests[kind], target, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            errors.append(f"{kind} {where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_kubectl_kustomize_builds_a_valid_stream(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize build not run (the file checks still ran)")
    result = subprocess.run(
        [kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = sorted(d["kind"] for d in built)
    assert kinds == sorted(CORE_KINDS | {"ServiceMonitor", "PrometheusRule"})
    for doc in built:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "registry-watcher"
    deployment = next(d for d in built if d["kind"] == "Deployment")
    # Common labels must not reach the (immutable) selector.
    assert deployment["spec"]["selector"]["matchLabels"] == {NAME_LABEL: "registry-watcher"}
    try:
        import kubernetes_validate
    except ImportError:
        return
    for doc in built:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_servicemonitor_scrapes_the_service(manifests: dict[str, dict[str, Any]]) -> None:
    monitor, service = manifests["ServiceMonitor"], manifests["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    port_names = {p["name"] for p in service["spec"]["ports"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in port_names
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[sm]", endpoint["interval"])
    # The job label is the Service's name, which the rules select on.
    assert "jobLabel" not in monitor["spec"]
    assert 'job="registry-watcher"' in RULES.read_text()
    assert service["metadata"]["name"] == "registry-watcher"


def test_prometheusrule_is_generated_from_rules_yaml(manifests: dict[str, dict[str, Any]]) -> None:
    rule = manifests["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), "regenerate: gen_prometheusrule.py"
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "record", "expr", "for", "labels", "annotations"}
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_generator_round_trips(tmp_path: Path) -> None:
    """render() of rules.yaml is exactly the committed file (the --check above, in-process)."""
    sys.path.insert(0, str(GENERATOR.parent))
    try:
        import gen_prometheusrule
    finally:
        sys.path.remove(str(GENERATOR.parent))
    text = gen_prometheusrule.render(RULES.read_text(encoding="utf-8"))
    assert text == (BASE / "prometheusrule.yaml").read_text(encoding="utf-8")
    changed = gen_prometheusrule.render(RULES.read_text().replace("> 900", "> 1200"))
    assert yaml.safe_load(changed)["spec"] != yaml.safe_load(RULES.read_text())


# --- the Deployment ---------------------------------------------------------------------


def test_one_replica_and_never_two_pods_on_sqlite(manifests: dict[str, dict[str, Any]]) -> None:
    spec = manifests["Deployment"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert _selects(spec["selector"]["matchLabels"], _pod_labels(manifests))


def test_security_context(manifests: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == manifests["ServiceAccount"]["metadata"]["name"]
    assert manifests["ServiceAccount"]["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not sc.get("privileged", False)


def test_image_matches_the_release(container: dict[str, Any]) -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    image, _, tag = container["image"].rpartition(":")
    assert tag == __version__, "the image tag follows watcher.__version__"
    [override] = kustomization["images"]
    assert override["name"] == image and override["newTag"] == __version__
    assert container["args"] == ["run", "-c", CONFIG_PATH]


def test_probes_and_port(manifests: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    [port] = container["ports"]
    assert port == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    [service_port] = manifests["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == "http" and service_port["port"] == 8080
    assert _selects(manifests["Service"]["spec"]["selector"], _pod_labels(manifests))


def test_resources(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert {"cpu", "memory"} <= resources["limits"].keys()


def test_mounts_state_config_and_tmp(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    state = volumes[mounts[STATE_DIR]["name"]]
    claim = state.get("persistentVolumeClaim", {}).get("claimName")
    assert claim == manifests["PersistentVolumeClaim"]["metadata"]["name"] or "emptyDir" in state
    config_mount = mounts[str(Path(CONFIG_PATH).parent)]
    assert config_mount["readOnly"] is True
    config_volume = volumes[config_mount["name"]]["configMap"]
    assert config_volume["name"] == manifests["ConfigMap"]["metadata"]["name"]
    assert {"key": "config.yaml", "path": Path(CONFIG_PATH).name} in config_volume["items"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # read-only root: tempfiles go here
    env = {e["name"]: e for e in container["env"]}
    assert env["STATE_DIRECTORY"]["value"] == STATE_DIR


def test_secrets_come_from_the_secret_only(container: dict[str, Any]) -> None:
    for entry in container["env"]:
        if "value" in entry:
            assert not re.search(r"TOKEN|SECRET|PASSWORD|KEY|URL", entry["name"]), entry
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "registry-watcher"
        assert ref["optional"] is True
        assert re.fullmatch(r"[a-z0-9-]+", ref["key"])


# --- the configuration --------------------------------------------------------------------


def _env_settings(node: Any, path: str = "") -> dict[str, str]:
    """Every ``*_env`` setting of a config (path → variable name)."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).endswith("_env") and isinstance(value, str):
                found[where] = value
            else:
                found.update(_env_settings(value, where))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.update(_env_settings(value, f"{path}[{index}]"))
    return found


def test_configmap_is_a_valid_config_with_the_deployments_environment(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any], tmp_path: Path
) -> None:
    text = manifests["ConfigMap"]["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    # The environment the container gets: literal values as they are, each secret a
    # placeholder of the right shape (URLs must look like URLs).
    environ = {}
    for entry in container["env"]:
        name = entry["name"]
        environ[name] = entry.get("value") or (
            "https://hooks.example/x" if name.endswith("URL") else f"test-{name.lower()}"
        )
    needed = set(_env_settings(yaml.safe_load(text)).values())
    assert needed, "the example config should show how secrets are passed"
    assert needed <= environ.keys(), f"not provided by the Deployment: {needed - environ.keys()}"
    config = load_config(path, environ=environ)
    assert config.server.listen_host in ("0.0.0.0", "::", "")
    assert config.server.listen_port == container["ports"][0]["containerPort"]
    assert config.store.sqlite_path is not None
    assert str(config.store.sqlite_path).startswith(STATE_DIR + "/")
    assert config.registries and config.policies and config.alerts
    # Every registry is polled at least as often as RegistryWatcherPollStale assumes (5m).
    for registry in config.registries:
        if registry.poll_interval is not None:
            assert registry.poll_interval.total_seconds() <= 300, registry.name


def test_networkpolicy(manifests: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    policy = manifests["NetworkPolicy"]["spec"]
    assert _selects(policy["podSelector"]["matchLabels"], _pod_labels(manifests))
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    # Ingress: the HTTP port, from anywhere (webhooks come from outside the cluster).
    [ingress] = policy["ingress"]
    assert "from" not in ingress
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP")} <= egress_ports
    # Every HTTP(S) endpoint of the example config is reachable.
    config = yaml.safe_load(manifests["ConfigMap"]["data"]["config.yaml"])
    urls = [r["url"] for r in config["registries"]]
    urls += [a["alertmanager"]["url"] for a in config["alerts"] if "alertmanager" in a]
    for url in urls:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}[parts.scheme]
        assert (port, "TCP") in egress_ports, f"egress to {url} is not allowed"


def test_pdb_selects_the_pod_and_allows_drains(manifests: dict[str, dict[str, Any]]) -> None:
    pdb = manifests["PodDisruptionBudget"]["spec"]
    assert _selects(pdb["selector"]["matchLabels"], _pod_labels(manifests))
    # One replica: minAvailable 1 would block every node drain.
    assert pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb
