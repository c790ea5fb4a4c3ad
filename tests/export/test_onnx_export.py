"""export.onnx_export: every registered architecture → one .onnx file, checked, with parity.

As pytorch/vision's test/test_onnx.py: export, run in ONNX Runtime (CPU), compare with PyTorch at
stated tolerances, at batch 1 and again at batch 7 (the dynamic axis). Inputs are fresh random
draws on every run. Parametrized over ``list_models()``, so a new architecture is tested without
editing this file. The 224-px giants run at 64 px (same graph, a fraction of the compute); the
ones whose weights alone are hundreds of MB (AlexNet, VGG: ~0.25-0.6 GB files) are skipped here —
their families are covered by alexnet_small / vgg_small, and test_models.py builds them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import export.onnx_export as ox
from export.errors import ExportError
from export.models import get_model, get_model_info, list_models
from export.models.zoo import count_parameters
from export.onnx_export import (
    ExportSource,
    calibrate_batchnorm,
    export_to_repository,
    imagenet_labels,
    ort_session,
    source_from_arch,
)
from export.repository import AudioInput, ImageInput, versions

torch.set_num_threads(2)
MAX_PARAMS = 30_000_000  # above this the export alone writes >120 MB: skipped (see docstring)
GIANT_SIZE = 64  # 224-px architectures are exported at this input size


def source_for(arch: str) -> ExportSource:
    info = get_model_info(arch)
    if info.task == "speech_detection":
        spec: ImageInput | AudioInput = AudioInput(window_samples=info.input_shape[0])
        shape = info.input_shape
    else:
        channels, size = info.input_shape[0], min(info.input_shape[-1], GIANT_SIZE)
        spec = ImageInput(size=size, channels=channels, mean=(0.5,), std=(0.5,))
        shape = (channels, size, size)
    torch.manual_seed(0)
    model = calibrate_batchnorm(get_model(arch), shape)
    classes = [f"c{i}" for i in range(info.num_classes)]
    return ExportSource(model, arch, classes, spec, origin="test")


def assert_meaningful(model_path: Path, source: ExportSource) -> None:
    """The graph has one input/one output with a dynamic batch axis, and outputs depend on input
    (a parity check of a constant function would prove nothing)."""
    graph = onnx.load(str(model_path)).graph
    assert [i.name for i in graph.input] == [ox.input_name_for(source.input)]
    assert [o.name for o in graph.output] == ["logits"]  # GoogLeNet: no aux heads in eval export
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim[1:]] == [
        len(source.classes)
    ]
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in graph.initializer)
    x = np.random.default_rng().standard_normal((3, *source.input.dims)).astype(np.float32)
    session = ort_session(model_path)
    assert session.get_providers() == ["CPUExecutionProvider"]  # parity is measured on the CPU EP
    out = session.run(None, {ox.input_name_for(source.input): x})[0]
    assert out.shape == (3, len(source.classes))
    assert np.abs(out[0] - out[1]).max() > 1e-5, "outputs do not depend on the input"


def _too_big(arch: str) -> bool:
    return count_parameters(arch) > MAX_PARAMS


@pytest.mark.parametrize("arch", list_models())
def test_export_and_parity(arch: str, tmp_path: Path) -> None:
    if _too_big(arch):
        pytest.skip(f"{arch}: {count_parameters(arch):,} parameters; family covered by *_small")
    source = source_for(arch)
    result = export_to_repository(source, tmp_path, arch)
    assert [p.batch_size for p in result.parity] == [1, 7]
    for p in result.parity:
        assert p.max_abs_diff <= 1e-4 + 1e-4 * p.max_abs_ref, p
    assert result.version == 1
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert files == [arch, f"{arch}/1", f"{arch}/1/model.onnx", f"{arch}/config.pbtxt",
                     f"{arch}/labels.txt"]  # fmt: skip
    assert_meaningful(result.model_path, source)


def test_googlenet_trained_with_aux_heads_exports_without_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_model("googlenet_small", aux_logits=True)
    model.train()
    outputs = model(torch.randn(2, 1, 32, 32))
    assert len(outputs) == 3  # (logits, aux2, aux1) in train mode
    model = calibrate_batchnorm(model, (1, 32, 32))
    assert any("aux" in name for name, _ in model.named_parameters())
    spec = ImageInput(size=32, channels=1, mean=(0.5,), std=(0.5,))
    source = ExportSource(model, "googlenet_small", [str(i) for i in range(10)], spec, "test")
    result = export_to_repository(source, tmp_path, "g")
    assert_meaningful(result.model_path, source)


@pytest.mark.parametrize("arch", ["lenet5", "resnet_small", "mobilenet_v2_small", "speech_cnn"])
def test_fp16_export(arch: str, tmp_path: Path) -> None:
    source = source_for(arch)
    result = export_to_repository(source, tmp_path, arch, fp16=True)
    for p in result.parity:
        assert p.ok and p.tolerance == pytest.approx(3e-2 * max(1.0, p.max_abs_ref))
    model = onnx.load(str(result.model_path))
    # FP32 in and out (the serving config is unchanged), FP16 weights inside.
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [i for i in model.graph.initializer if len(i.dims) > 1]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    assert "TYPE_FP32" in (tmp_path / arch / "config.pbtxt").read_text()
    # The caller's model is still the FP32 reference.
    assert all(p.dtype == torch.float32 for p in source.model.parameters())


def _imagenet_input(image: np.ndarray) -> np.ndarray:
    """What the config says: shorter side → 256 (bilinear), centre crop 224, ImageNet mean/std."""
    img = Image.fromarray(image)
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def test_pretrained_mobilenet_v2_recognises_real_photos(tmp_path: Path) -> None:
    data = pytest.importorskip("skimage.data")
    source = source_from_arch("mobilenet_v2", pretrained=True)
    result = export_to_repository(source, tmp_path, "mobilenet_v2")
    for p in result.parity:  # 224 px, batch 1 and 7
        assert p.max_abs_diff <= 1e-4 + 1e-4 * p.max_abs_ref, p
    config = (tmp_path / "mobilenet_v2" / "config.pbtxt").read_text()
    assert 'key: "resize_size" value: { string_value: "256" }' in config
    assert 'key: "color" value: { string_value: "rgb" }' in config
    labels = (tmp_path / "mobilenet_v2" / "labels.txt").read_text().splitlines()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[281] == "tabby"
    session = ort_session(result.model_path)
    expected = {"chelsea": {"tabby", "tiger cat", "Egyptian cat"}, "coffee": {"espresso", "cup"}}
    for name, wanted in expected.items():
        logits = session.run(None, {"input": _imagenet_input(getattr(data, name)())})[0][0]
        top3 = {labels[i] for i in np.argsort(logits)[::-1][:3]}
        assert top3 & wanted, (name, top3)


def test_imagenet_labels_are_the_1000_classes() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[:3] == ["tench", "goldfish", "great white shark"]
    assert all(label and "\n" not in label for label in labels)


def test_random_weights_are_seeded(tmp_path: Path) -> None:
    a = source_from_arch("lenet5", seed=3).model.state_dict()
    b = source_from_arch("lenet5", seed=3).model.state_dict()
    c = source_from_arch("lenet5", seed=4).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_random_weight_sources_describe_their_input() -> None:
    speech = source_from_arch("speech_cnn")
    assert isinstance(speech.input, AudioInput) and speech.classes == ["no_speech", "speech"]
    lenet = source_from_arch("lenet5")
    assert isinstance(lenet.input, ImageInput) and lenet.input.dims == [1, 32, 32]


def test_unknown_architecture_and_bad_pretrained() -> None:
    with pytest.raises(ExportError, match=r"unknown architecture 'nope'.*lenet5"):
        source_from_arch("nope")
    with pytest.raises(ExportError, match="no pretrained weights for resnet18"):
        source_from_arch("resnet18", pretrained=True)


def test_parity_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ox, "FP32_ATOL", -1.0)  # nothing can pass
    with pytest.raises(ExportError, match=r"parity failed .* nothing was written"):
        export_to_repository(source_for("lenet5"), tmp_path, "lenet5")
    assert list(tmp_path.iterdir()) == []


def test_failing_export_of_a_new_version_keeps_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_to_repository(source_for("lenet5"), tmp_path, "lenet5")
    before = (tmp_path / "lenet5" / "config.pbtxt").read_text()

    def broken_checker(path: Path) -> None:
        raise ExportError(f"{path} fails onnx.checker: simulated")

    monkeypatch.setattr(ox, "check_onnx", broken_checker)
    with pytest.raises(ExportError, match="simulated"):
        export_to_repository(source_for("resnet_small"), tmp_path, "lenet5")
    assert versions(tmp_path / "lenet5") == [1]
    assert (tmp_path / "lenet5" / "config.pbtxt").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["lenet5"]


def test_class_count_must_match_the_outputs(tmp_path: Path) -> None:
    source = source_for("lenet5")
    source.classes = source.classes[:3]
    with pytest.raises(ExportError, match="10 outputs but 3 class names"):
        export_to_repository(source, tmp_path, "lenet5")
    assert list(tmp_path.iterdir()) == []


def test_reexport_adds_a_version(tmp_path: Path) -> None:
    first = export_to_repository(source_for("speech_cnn"), tmp_path, "speech")
    second = export_to_repository(source_for("speech_cnn"), tmp_path, "speech", max_batch_size=16)
    assert (first.version, second.version) == (1, 2)
    assert versions(tmp_path / "speech") == [1, 2]
    config = (tmp_path / "speech" / "config.pbtxt").read_text()
    assert "max_batch_size: 16" in config and 'name: "audio"' in config
