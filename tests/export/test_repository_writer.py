"""export.repository: config.pbtxt rendering (docs/model-repository.md) and atomic version writes.

No torch export here: a version's model.onnx is a few placeholder bytes, the writer never reads it.
The rendered configs are parsed with protobuf's text_format into the generated ModelConfig, and by
the server's own ``service.config`` (the two halves meet only in this directory).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format

from export.errors import ExportError
from export.repository import (
    AudioInput,
    ImageInput,
    ModelConfig,
    VersionStage,
    has_servable_version,
    input_from_dict,
    render_config,
    versions,
)
from service._proto.inference import model_config_pb2

ROOT = Path(__file__).resolve().parents[2]
FASHION = ImageInput(size=32, channels=1, mean=(0.2860,), std=(0.3530,))
IMAGENET = ImageInput(
    size=224, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize_size=256
)


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def params(cfg: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {k: v.string_value for k, v in cfg.parameters.items()}


def test_lenet5_config_is_exactly_the_documented_one() -> None:
    doc = (ROOT / "docs" / "model-repository.md").read_text()
    block = re.search(r"## config.pbtxt written by `convserve export`\s+```\n(.*?)```", doc, re.S)
    assert block is not None
    text = render_config(ModelConfig(name="lenet5_fashion", input=FASHION, num_classes=10))
    assert text == block.group(1)


def test_image_config_parses_into_modelconfig() -> None:
    cfg = parse(render_config(ModelConfig(name="mobilenet_v2", input=IMAGENET, num_classes=1000)))
    assert cfg.name == "mobilenet_v2"
    assert cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 64
    (inp,) = cfg.input
    assert (inp.name, list(inp.dims)) == ("input", [3, 224, 224])
    assert inp.data_type == model_config_pb2.TYPE_FP32
    assert inp.format == model_config_pb2.ModelInput.FORMAT_NCHW
    (out,) = cfg.output
    assert (out.name, list(out.dims), out.label_filename) == ("logits", [1000], "labels.txt")
    assert list(cfg.dynamic_batching.preferred_batch_size) == []  # as documented: none
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 1000
    assert cfg.dynamic_batching.default_queue_policy.max_queue_size == 1024
    (group,) = cfg.instance_group
    assert (group.count, group.kind) == (1, model_config_pb2.ModelInstanceGroup.KIND_AUTO)
    assert cfg.version_policy.latest.num_versions == 1
    assert params(cfg) == {
        "task": "image_classification",
        "image_size": "224",
        "resize_size": "256",
        "color": "rgb",
        "mean": "0.4850,0.4560,0.4060",
        "std": "0.2290,0.2240,0.2250",
        "output_activation": "softmax",
        "batch_policy": "eager",
    }


def test_speech_config_parses_into_modelconfig() -> None:
    text = render_config(
        ModelConfig(name="speech_cnn", input=AudioInput(), num_classes=2, input_name="audio")
    )
    cfg = parse(text)
    (inp,) = cfg.input
    assert (inp.name, list(inp.dims)) == ("audio", [16000])
    assert inp.format == model_config_pb2.ModelInput.FORMAT_NONE
    assert list(cfg.output[0].dims) == [2]
    assert params(cfg) == {
        "task": "speech_detection",
        "sample_rate": "16000",
        "window_samples": "16000",
        "hop_samples": "8000",
        "speech_index": "1",
        "threshold": "0.5",
        "output_activation": "softmax",
        "batch_policy": "eager",
    }


@pytest.mark.parametrize(
    ("max_batch", "preferred"), [(1, ()), (8, (4, 8)), (64, (8, 16, 32, 64)), (100, (32, 100))]
)
def test_batching_settings(max_batch: int, preferred: tuple[int, ...]) -> None:
    config = ModelConfig(
        name="m",
        input=FASHION,
        num_classes=10,
        max_batch_size=max_batch,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=250,
        max_queue_size=7,
        instance_count=2,
    )
    cfg = parse(render_config(config))
    assert cfg.max_batch_size == max_batch
    assert list(cfg.dynamic_batching.preferred_batch_size) == list(preferred)
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert cfg.dynamic_batching.default_queue_policy.max_queue_size == 7
    assert cfg.instance_group[0].count == 2


def test_preferred_batch_sizes_must_fit_the_max() -> None:
    with pytest.raises(ExportError, match=r"outside 1\.\.8"):
        render_config(ModelConfig("m", FASHION, 10, max_batch_size=8, preferred_batch_sizes=(16,)))


def test_unusual_numbers_and_strings_survive_the_round_trip() -> None:
    spec = ImageInput(size=28, channels=1, mean=(0.12345678,), std=(1.0,), interpolation="bicubic")
    extra = {"note": 'a "quoted" \\ value'}
    cfg = parse(
        render_config(ModelConfig(name="m", input=spec, num_classes=3, extra_parameters=extra))
    )
    assert params(cfg)["mean"] == "0.12345678"
    assert params(cfg)["std"] == "1.0000"
    assert params(cfg)["interpolation"] == "bicubic"
    assert params(cfg)["note"] == 'a "quoted" \\ value'


def test_input_description_round_trips_through_a_dict() -> None:
    for spec in (FASHION, IMAGENET, AudioInput(hop_samples=4000, threshold=0.7)):
        assert input_from_dict(spec.to_dict()) == spec


def test_server_reads_what_export_writes(tmp_path: Path) -> None:
    config = pytest.importorskip("service.config")
    for name, spec, n, input_name in (
        ("img", IMAGENET, 1000, "input"),
        ("speech", AudioInput(), 2, "audio"),
    ):
        stage = VersionStage(tmp_path, name)
        stage.model_path.write_bytes(b"placeholder")
        text = render_config(
            ModelConfig(name=name, input=spec, num_classes=n, input_name=input_name)
        )
        written = stage.commit(text, [f"label {i}" for i in range(n)])
        parsed = config.parse_config(written.model_dir / "config.pbtxt", default_max_queue_size=10)
        model = config.load_spec(written.model_dir, parsed, default_max_queue_size=10)
        assert model.task == spec.parameters()["task"]
        assert model.labels is not None and len(model.labels) == n
        assert model.max_batch_size == 64
        assert model.max_queue_size == 1024
        assert model.inputs[0].name == input_name
        assert model.instances == 1


def _commit(repo: Path, name: str, payload: bytes, labels: list[str]) -> int:
    with VersionStage(repo, name) as stage:
        stage.model_path.write_bytes(payload)
        text = render_config(ModelConfig(name=name, input=FASHION, num_classes=len(labels)))
        return stage.commit(text, labels).version


def test_versions_are_added_never_overwritten(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert _commit(repo, "m", b"one", ["a", "b"]) == 1
    assert _commit(repo, "m", b"two", ["x", "y", "z"]) == 2
    assert versions(repo / "m") == [1, 2]
    assert (repo / "m" / "1" / "model.onnx").read_bytes() == b"one"
    assert (repo / "m" / "2" / "model.onnx").read_bytes() == b"two"
    assert (repo / "m" / "labels.txt").read_text() == "x\ny\nz\n"
    assert "dims: [ 3 ]" in (repo / "m" / "config.pbtxt").read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no staging directory left
    assert sorted(p.name for p in (repo / "m").iterdir()) == [
        "1",
        "2",
        "config.pbtxt",
        "labels.txt",
    ]


def test_next_version_follows_the_highest(tmp_path: Path) -> None:
    _commit(tmp_path, "m", b"one", ["a"])
    (tmp_path / "m" / "7").mkdir()  # e.g. a hand-placed version
    (tmp_path / "m" / "7" / "model.onnx").write_bytes(b"seven")
    (tmp_path / "m" / "notes").mkdir()  # non-numeric directories are not versions
    assert _commit(tmp_path, "m", b"eight", ["a"]) == 8
    assert (tmp_path / "m" / "7" / "model.onnx").read_bytes() == b"seven"


def test_failure_before_commit_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), VersionStage(tmp_path, "m") as stage:
        stage.model_path.write_bytes(b"half a model")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []
    _commit(tmp_path, "m", b"one", ["a"])
    with pytest.raises(RuntimeError), VersionStage(tmp_path, "m") as stage:
        stage.model_path.write_bytes(b"half a model")
        raise RuntimeError("export failed")
    assert versions(tmp_path / "m") == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_bad_labels_fail_without_a_trace(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="line break"), VersionStage(tmp_path, "m") as stage:
        stage.model_path.write_bytes(b"x")
        stage.commit(render_config(ModelConfig("m", FASHION, 2)), ["ok", "two\nlines"])
    assert list(tmp_path.iterdir()) == []


def test_commit_without_a_model_fails(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not written"), VersionStage(tmp_path, "m") as stage:
        stage.commit(render_config(ModelConfig("m", FASHION, 1)), ["a"])
    assert list(tmp_path.iterdir()) == []


def test_unwritable_repository_is_an_export_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="cannot write to model repository") as info:
        VersionStage(blocker / "repo", "m")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["", "bad name", "../escape", ".hidden", "a/b"])
def test_invalid_model_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(ExportError, match="invalid model name"):
        VersionStage(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_max_batch_size_must_be_positive() -> None:
    with pytest.raises(ExportError, match="max-batch-size"):
        render_config(ModelConfig("m", FASHION, 10, max_batch_size=0))


def test_has_servable_version(tmp_path: Path) -> None:
    assert not has_servable_version(tmp_path / "m")
    _commit(tmp_path, "m", b"x", ["a"])
    assert has_servable_version(tmp_path / "m")
    (tmp_path / "m" / "1" / "model.onnx").unlink()
    assert not has_servable_version(tmp_path / "m")


def test_the_exported_config_carries_the_servers_default_batching_rule(tmp_path: Path) -> None:
    from service.config import DEFAULT_BATCH_POLICY, read_spec

    cfg = ModelConfig("m", ImageInput(size=8, channels=1, mean=(0.5,), std=(0.25,)), num_classes=3)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(render_config(cfg))
    (model_dir / "labels.txt").write_text("a\nb\nc\n")
    assert 'key: "batch_policy" value: { string_value: "eager" }' in render_config(cfg)
    assert read_spec(model_dir).batch_policy == DEFAULT_BATCH_POLICY


def test_a_stray_zero_padded_folder_is_not_a_version(tmp_path: Path) -> None:
    (tmp_path / "m" / "01").mkdir(parents=True)
    (tmp_path / "m" / "2").mkdir()
    assert versions(tmp_path / "m") == [2]  # the server's rule (service.layout)
