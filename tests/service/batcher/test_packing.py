"""service.batcher.packing: the zero-copy paths give exactly what copying would, and copy only
where a later batch could overwrite a result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from service.batcher.packing import Packer
from service.runtime import OrtRuntime
from service.spec import ModelSpec
from tests.service import onnx_builders


@pytest.fixture(scope="module")
def linear(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, OrtRuntime]:
    model_dir = onnx_builders.write_model(tmp_path_factory.mktemp("packing"), "linear")
    spec = onnx_builders.spec_of(model_dir)
    return spec, OrtRuntime(model_dir / "1" / "model.onnx", spec, "cpu")


def requests(rng: np.random.Generator, rows: list[int]) -> list[dict[str, np.ndarray]]:
    return [{"input": rng.standard_normal((n, 1, 4, 4)).astype(np.float32)} for n in rows]


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("rows", [[1], [3], [1, 2, 1], [2, 3]])
def test_results_equal_the_copying_path_bit_for_bit(
    linear: tuple[ModelSpec, OrtRuntime], rng: np.random.Generator, pad: bool, rows: list[int]
) -> None:
    spec, runtime = linear
    packer = Packer(spec, pad=pad)
    parts = requests(rng, rows)
    feed = packer.pack(parts, sum(rows))
    if len(parts) == 1 and packer.bucket(rows[0]) == rows[0]:
        assert feed is parts[0]  # a lone request is fed as it is: no copy
    outputs = runtime.run(feed)
    results = packer.split(feed, outputs, rows)
    for part, result in zip(parts, results, strict=True):
        # The copying path: each request run on its own, outputs copied out.
        alone = runtime.run(part)["logits"].copy()
        np.testing.assert_array_equal(result["logits"], alone)
        # Zero copy: the row slices are views of ONNX Runtime's output array.
        assert np.shares_memory(result["logits"], outputs["logits"])


def test_padding_repeats_the_last_row_and_drops_its_outputs(
    linear: tuple[ModelSpec, OrtRuntime], rng: np.random.Generator
) -> None:
    spec, runtime = linear
    packer = Packer(spec, pad=True)
    parts = requests(rng, [2, 1])  # 3 rows: padded to the bucket 4
    feed = packer.pack(parts, 3)
    assert len(feed["input"]) == 4
    np.testing.assert_array_equal(feed["input"][3], feed["input"][2])
    results = packer.split(feed, runtime.run(feed), [2, 1])
    assert [len(r["logits"]) for r in results] == [2, 1]


def test_an_output_that_aliases_the_buffer_is_copied(
    linear: tuple[ModelSpec, OrtRuntime], rng: np.random.Generator
) -> None:
    """An Identity-like graph could hand back the input buffer itself, which the next batch
    overwrites: such an output is copied before it leaves."""
    spec, _ = linear
    echo = dataclasses.replace(spec, outputs=(dataclasses.replace(spec.inputs[0], name="y"),))
    packer = Packer(echo, pad=False)
    parts = requests(rng, [1, 2])
    feed = packer.pack(parts, 3)
    results = packer.split(feed, {"y": feed["input"]}, [1, 2])  # the buffer itself as output
    expected = [p["input"].copy() for p in parts]
    packer.pack(requests(rng, [2, 1]), 3)  # the next batch reuses the buffer
    for result, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(result["y"], want)
        assert not np.shares_memory(result["y"], feed["input"])


def test_the_buffer_is_reused_and_sized_for_the_largest_batch(
    linear: tuple[ModelSpec, OrtRuntime], rng: np.random.Generator, tmp_path: Path
) -> None:
    spec, _ = linear
    packer = Packer(spec, pad=False)
    first = packer.pack(requests(rng, [1, 1]), 2)["input"]
    second = packer.pack(requests(rng, [2, 3]), 5)["input"]
    assert first.base is second.base and len(first.base) == spec.max_batch_size
    assert second.flags.c_contiguous  # ONNX Runtime reads a leading slice without a copy
