"""service.dataplane.validation: the one set of input/output checks, for every protocol.

Moved here from the batcher's and the repository's tests, which checked copies of these rules;
the KServe servicer tests and the bad-input matrix check the same messages end to end.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service import datatypes
from service.dataplane import tensors, validation
from service.dataplane.records import InferInput, RequestedOutput
from service.errors import InvalidInputError
from service.spec import ModelSpec
from tests.service import onnx_builders


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    root = tmp_path_factory.mktemp("validation")
    return onnx_builders.spec_of(onnx_builders.write_model(root, "a", max_batch_size=4))


def given(name: str, x: np.ndarray, datatype: str = "FP32", **parameters: object) -> InferInput:
    raw = x.tobytes()

    def decode(dt: datatypes.Datatype, shape: tuple[int, ...]) -> np.ndarray:
        return tensors.from_raw(name, dt, shape, raw)

    return InferInput(name, datatype, tuple(x.shape), decode, parameters)


def image(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def test_valid_inputs_decode_to_their_arrays(spec: ModelSpec) -> None:
    x = image(3)
    arrays = validation.inputs(spec, [given("input", x)])
    np.testing.assert_array_equal(arrays["input"], x)
    assert arrays["input"].dtype == np.float32 and not arrays["input"].flags.writeable  # no copy


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: [given("image", x)], r"unknown input 'image' for model 'a' \(inputs: input\)"),
        (lambda x: [given("input", x), given("input", x)], "'input' is given twice"),
        (lambda x: [], r"missing input\(s\) 'input' for model 'a'"),
        (lambda x: [given("input", x.astype(np.float64), "FP64")],
         "expected datatype FP32, got FP64"),
        (lambda x: [given("input", x, shared_memory_region="r")], "shared memory"),
        (lambda x: [given("input", x.reshape(2, 16))],
         r"expected shape \[-1, 1, 4, 4\], got \[2, 16\] \(the first axis is the batch\)"),
        (lambda x: [given("input", x[0])], r"got \[1, 4, 4\]"),
        (lambda x: [given("input", image(5))], "batch size 5 exceeds max_batch_size 4"),
        (lambda x: [given("input", image(0))], "batch size 0; send 1 to 4 rows"),
    ],
)  # fmt: skip
def test_bad_inputs(spec: ModelSpec, make: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validation.inputs(spec, make(image(2)))  # type: ignore[operator]


def test_a_payload_that_does_not_fit_its_shape(spec: ModelSpec) -> None:
    x = image(2)

    def short(dt: datatypes.Datatype, shape: tuple[int, ...]) -> np.ndarray:
        return tensors.from_raw("input", dt, shape, x.tobytes()[:-4])

    with pytest.raises(InvalidInputError, match="raw content is 124 bytes, expected 128"):
        validation.inputs(spec, [InferInput("input", "FP32", (2, 1, 4, 4), short)])


def test_inputs_must_agree_on_the_batch_size(spec: ModelSpec) -> None:
    two = dataclasses.replace(
        spec, inputs=(*spec.inputs, dataclasses.replace(spec.inputs[0], name="z"))
    )
    with pytest.raises(InvalidInputError, match="disagree on the batch size"):
        validation.inputs(two, [given("input", image(2)), given("z", image(3))])


def test_outputs(spec: ModelSpec) -> None:
    assert [(t.name, k) for t, k in validation.outputs(spec, [])] == [("logits", 0)]
    asked = [RequestedOutput("logits", {"classification": 2})]
    assert [(t.name, k) for t, k in validation.outputs(spec, asked)] == [("logits", 2)]
    for bad, message in [
        (RequestedOutput("probs"), r"unknown output 'probs' for model 'a' \(outputs: logits\)"),
        (RequestedOutput("logits", {"classification": 0}), "positive integer, got 0"),
        (RequestedOutput("logits", {"classification": True}), "positive integer, got True"),
        (RequestedOutput("logits", {"shared_memory_region": "r"}), "shared memory"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            validation.outputs(spec, [bad])
