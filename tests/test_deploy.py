"""The Kubernetes manifests (``deploy/``), checked offline: every overlay renders with
``kubectl kustomize``, every object validates against the Kubernetes OpenAPI schemas
(``kubernetes-validate``, strict), and what the manifests run is what the code accepts:
commands and arguments parse, every ``RT_*`` variable they set is one the code reads,
ports and probe paths are the ones the services serve, and the nodes the environment
describes are the pods and Services the manifests make."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rtcommon.cluster import DEPLOYMENT_PORTS, ClusterSpec

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ["one-node", "three-node", "info-service"]
KUBERNETES = "1.32.0"  # the kubectl on these machines; the schemas of that release
SOURCES = [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]


def render(overlay: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed to render the manifests (kubectl kustomize)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        container
        for obj in objects
        if obj["kind"] in ("StatefulSet", "Deployment")
        for container in obj["spec"]["template"]["spec"]["containers"]
    ]


def environment(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates(overlay: str) -> None:
    objects = render(overlay)
    assert of_kind(objects, "StatefulSet"), overlay
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']} {obj['metadata']['name']}: {exc.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_the_manifests_run_is_what_the_code_accepts(overlay: str) -> None:
    from rt_info_service.__main__ import parse_args as info_service_args
    from rt_supervisor.__main__ import parse_args as supervisor_args

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]', dockerfile, re.M)
    assert entrypoint and entrypoint[1] == "rt-supervisor"
    exposed = {int(port) for port in re.search(r"^EXPOSE (.*)$", dockerfile, re.M)[1].split()}
    assert exposed == set(DEPLOYMENT_PORTS.values())
    parsers = {"rt-supervisor": supervisor_args, "rt-info-service": info_service_args}
    for container in containers(render(overlay)):
        program = container.get("command", [entrypoint[1]])[0]
        parsers[program](container.get("args", []))  # SystemExit(2) if they do not parse
        for name in environment(container):
            if name.startswith("RT_"):
                assert any(f'"{name}"' in path.read_text() for path in SOURCES), name
        named = {port["name"]: port["containerPort"] for port in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            check = container[probe]["httpGet"]
            assert check["path"] == "/health"
            assert check["port"] in named
        if program == "rt-supervisor":
            for name, port in named.items():
                assert DEPLOYMENT_PORTS[name] == port, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_nodes_the_environment_names_are_the_pods_and_services(overlay: str) -> None:
    objects = render(overlay)
    [statefulset] = of_kind(objects, "StatefulSet")
    [node] = statefulset["spec"]["template"]["spec"]["containers"]
    env = environment(node)
    stream = node["args"][node["args"].index("--cluster") + 1].removeprefix("env:")
    spec = ClusterSpec.from_env(stream, env)
    replicas = statefulset["spec"]["replicas"]
    assert len(spec.nodes) == replicas
    pods = [f"{statefulset['metadata']['name']}-{n}" for n in range(replicas)]
    assert [n.name for n in spec.nodes] == pods
    services = {svc["metadata"]["name"]: svc for svc in of_kind(objects, "Service")}
    container_ports = {port["name"] for port in node["ports"]}
    for n, pod in enumerate(pods):
        service = services[pod]
        assert service["spec"]["selector"] == {"statefulset.kubernetes.io/pod-name": pod}
        ports = {port["port"]: port["targetPort"] for port in service["spec"]["ports"]}
        for role in ("push", "pull", "peer", "rest", "control"):
            address = getattr(spec.nodes[n], role)
            assert address == f"{pod}:{DEPLOYMENT_PORTS[role]}"
            assert ports[DEPLOYMENT_PORTS[role]] == role and role in container_ports
    # The session ConfigMap the nodes use exists, and their Role lets them raise it.
    configmap = env["RT_SESSION_CONFIGMAP"]
    assert configmap in {c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")}
    [role] = [
        role
        for role in of_kind(objects, "Role")
        if any(configmap in rule.get("resourceNames", []) for rule in role["rules"])
    ]
    account = statefulset["spec"]["template"]["spec"]["serviceAccountName"]
    [binding] = [
        binding
        for binding in of_kind(objects, "RoleBinding")
        if binding["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    if overlay == "info-service":
        assert spec.tls_secret and spec.internal_tls and "external" in container_ports
        for pod in pods:
            assert services[f"{pod}-external"]["spec"]["type"] == "LoadBalancer"
        # Whoever reads the TLS Secret through the API may: the nodes and the info-service.
        readers = {
            subject["name"]
            for binding in of_kind(objects, "RoleBinding")
            for role in of_kind(objects, "Role")
            if role["metadata"]["name"] == binding["roleRef"]["name"]
            and any(spec.tls_secret in rule.get("resourceNames", []) for rule in role["rules"])
            for subject in binding["subjects"]
        }
        [info] = of_kind(objects, "Deployment")
        assert readers == {account, info["spec"]["template"]["spec"]["serviceAccountName"]}


def test_the_readme_deploys_with_the_commands_checked_here() -> None:
    section = (ROOT / "README.md").read_text().split("## Deploy on Kubernetes", 1)[1]
    section = section.split("\n## ", 1)[0]
    rendered = re.findall(r"kubectl kustomize deploy/overlays/([\w-]+)", section)
    applied = re.findall(r"kubectl apply -k deploy/overlays/([\w-]+)", section)
    assert rendered and applied
    assert set(rendered + applied) <= set(OVERLAYS)
    assert "docker build -f deploy/Dockerfile" in section


def test_the_image_s_install_step_carries_every_source_file(tmp_path: Path) -> None:
    """The Dockerfile's build stage installs the seven packages as wheels, not editable:
    run that pip command here (no Docker engine on these machines), into a folder, and
    check every file of each package's source tree is in what it installed, so the
    image lacks no module, stub or page, and its console scripts are the ones named."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    packages = re.findall(r"\./((?:libs|services)/[\w-]+)", dockerfile)
    assert sorted(packages) == sorted(
        str(path.parent.relative_to(ROOT)) for path in ROOT.glob("*/*/pyproject.toml")
    )
    # From a copy as a fresh clone has it: no build/ or egg-info left by earlier builds
    # (setuptools would take files from them).
    leftovers = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    for package in packages:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=leftovers)
    target = tmp_path / "image"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--no-deps", "--no-build-isolation", "--target", str(target)]
    result = subprocess.run(
        [*command, *(str(tmp_path / package) for package in packages)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for package in packages:
        source = ROOT / package / "src"
        for path in source.rglob("*"):
            relative = path.relative_to(source)
            if path.is_file() and not any(
                part.endswith((".egg-info", "__pycache__")) for part in relative.parts
            ):
                assert (target / relative).is_file(), f"{relative} is not installed"
    scripts = {path.name for path in (target / "bin").iterdir()}
    assert scripts >= {"rt", "rt-supervisor", "rt-sequencer", "rt-archiver", "rt-info-service"}
