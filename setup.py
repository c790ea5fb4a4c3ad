"""Build hook: generate the protobuf/gRPC stubs from protos/ before packaging.

Everything else about the distribution lives in pyproject.toml. The generated packages are
listed explicitly because they do not exist yet when setuptools discovers packages.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithProtos(build_py):  # type: ignore[misc]
    def run(self) -> None:
        runpy.run_path(str(HERE / "scripts" / "gen_protos.py"), run_name="__main__")
        super().run()


# setuptools checks the package directories below before any build step runs, so the stubs must
# exist first on a clean tree (grpcio-tools is a build requirement in pyproject.toml).
if not (HERE / "service" / "_proto" / "inference" / "grpc_service_pb2.py").exists():
    runpy.run_path(str(HERE / "scripts" / "gen_protos.py"), run_name="__main__")

setup(
    cmdclass={"build_py": BuildPyWithProtos},
    packages=[
        "convserve",
        "service",
        "service._proto",
        "service._proto.convserve",
        "service._proto.convserve.v1",
        "service._proto.inference",
        "service.preprocess",
        "service.servicers",
        "export",
        "export.models",
        "export.data",
    ],
    package_data={"service._proto": ["**/*.pyi"], "service": ["py.typed"], "export": ["py.typed"]},
)
