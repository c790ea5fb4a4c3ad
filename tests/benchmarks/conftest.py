"""Fixtures for the benchmark harness tests: a tiny model repository (onnx.helper models, no
torch) and a real `convserve serve` process on 127.0.0.1 with gRPC and HTTP, started through
service.process like every benchmark server.

  tiny_image   input [N,1,4,4] → logits [N,3]; image parameters: 4×4 grayscale (ClassifyImage)
  tiny_speech  audio [N,1600] → logits [N,2], loud windows are speech; 16 kHz, hop 800
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.process import ServerProcess, loopback_env, serve_command
from tests.service.onnx_builders import write_model

IMAGE_PARAMETERS = """
parameters { key: "image_size" value: { string_value: "4" } }
parameters { key: "color" value: { string_value: "grayscale" } }
parameters { key: "mean" value: { string_value: "0.5" } }
parameters { key: "std" value: { string_value: "0.25" } }
"""
SPEECH_PARAMETERS = """
parameters { key: "speech_index" value: { string_value: "1" } }
parameters { key: "threshold" value: { string_value: "0.5" } }
"""


@pytest.fixture(scope="module")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-repo")
    write_model(root, "tiny_image", "linear", delay_us=500, extra_config=IMAGE_PARAMETERS)
    write_model(
        root, "tiny_speech", "speech", max_batch_size=4, delay_us=500,
        extra_config=SPEECH_PARAMETERS,
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def server(tiny_repository: Path) -> Iterator[ServerProcess]:
    cmd = serve_command(tiny_repository, "--device", "cpu", "--log-level", "WARNING")
    proc = ServerProcess(cmd, name="bench-test", env=loopback_env()).wait_ready(120)
    yield proc
    assert proc.stop() == 0, proc.tail()
