"""The shipped default weights (weights/<name>/): they load, their sha256 matches the card, they
export with ONNX parity <= 1e-4, and they score within 0.2 points of their card on the 10,000
Fashion-MNIST test images sent as PNGs through the server's own preprocessing code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.fashion_eval import fashion_test_pngs, score_in_process
from export.card import DEFAULT_WEIGHTS_DIR, load_shipped, read_card
from export.data.idx import fashion_mnist_root
from export.onnx_export import export_to_repository

torch.set_num_threads(2)
FASHION = ("lenet5_fashion", "resnet_fashion")


@pytest.fixture(scope="module")
def test_pngs() -> tuple[list[bytes], object]:
    if not fashion_mnist_root().is_dir():
        pytest.skip("Fashion-MNIST is not installed")
    return fashion_test_pngs()


@pytest.mark.parametrize("name", FASHION)
def test_shipped_weights_export_and_score_as_their_card_says(
    name: str, tmp_path: Path, test_pngs: tuple[list[bytes], object]
) -> None:
    card, source = load_shipped(DEFAULT_WEIGHTS_DIR / name)  # sha256 checked on load
    assert card["name"] == name and card["recipe"]["seed"] == card["seed"]
    exported = export_to_repository(source, tmp_path, name)
    assert exported.max_abs_diff <= 1e-4
    pngs, labels = test_pngs
    top1 = score_in_process(tmp_path / name, pngs, labels)  # type: ignore[arg-type]
    assert abs(top1 - card["metrics"]["val_top1"]) <= 0.002, (top1, card["metrics"])
    if "in_process_test_top1" in card["metrics"]:
        assert top1 == card["metrics"]["in_process_test_top1"]


def test_every_default_has_a_card() -> None:
    for name in ("mobilenet_v2", *FASHION):
        card = read_card(DEFAULT_WEIGHTS_DIR / name)
        assert card["name"] == name and card["limitations"] and card["weights"]["sha256"]
        assert (DEFAULT_WEIGHTS_DIR / name / "card.md").read_text().startswith(f"# {name}")
