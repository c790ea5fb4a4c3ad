"""What reduced-scale JPEG decoding (config parameter `jpeg_draft: "true"`) costs and saves.

    .venv/bin/python benchmarks/jpeg_draft.py [--repository DIR]

For every real photograph shipped in scikit-image's and matplotlib's data, as a JPEG (quality 92)
at its own size and scaled up 2x and 4x (the sizes of camera photos, where libjpeg's 1/2..1/8
DCT scaling starts to apply): MobileNetV2's top-1 / top-5 with the full decode (the default,
equal to torchvision's pipeline) and with the draft decode, the largest probability change, and
the decode + preprocess time of each. There are no ImageNet labels here, so the accuracy cost is
measured as disagreement with the reference decode, which bounds the change in accuracy.
Results: benchmarks/results/jpeg_draft.json (and a table on stdout for docs/jpeg-draft.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.config import load_spec, parse_config  # noqa: E402
from service.preprocess.image import decode_image  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "jpeg_draft.json"
PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png",
    "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg", "camera.png", "moon.png", "coins.png",
    "brick.png", "gravel.png",
)  # fmt: skip


def photos() -> dict[str, Image.Image]:
    import matplotlib
    import skimage

    found = {n: Path(skimage.__file__).parent / "data" / n for n in PHOTOS}
    found["grace_hopper.jpg"] = (
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    )
    return {n: Image.open(p).convert("RGB") for n, p in found.items()}


def _timed(data: bytes, spec: Any, repeats: int = 3) -> tuple[np.ndarray, float]:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = decode_image(data, spec)
        best = min(best, time.perf_counter() - start)
    return out, best


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repository", type=Path, help="default: export mobilenet_v2 to a temp dir"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repository
        if repo is None:
            from export.defaults import build_defaults

            repo = Path(tmp) / "repo"
            build_defaults(repo, only=("mobilenet_v2",), cache_dir=Path(tmp), log=lambda _: None)
        model_dir = repo / "mobilenet_v2"
        spec = load_spec(model_dir, parse_config(model_dir / "config.pbtxt",
                         default_max_queue_size=8), default_max_queue_size=8).image  # fmt: skip
        assert spec is not None and not spec.jpeg_draft
        version = max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
        session = ort.InferenceSession(str(model_dir / str(version) / "model.onnx"),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        draft_spec = dataclasses.replace(spec, jpeg_draft=True)
        rows = []
        for name, image in photos().items():
            for scale in (1, 2, 4):
                big = image.resize((image.width * scale, image.height * scale), Image.BICUBIC)
                buffer = io.BytesIO()
                big.save(buffer, format="JPEG", quality=92)
                full, t_full = _timed(buffer.getvalue(), spec)
                fast, t_fast = _timed(buffer.getvalue(), draft_spec)
                logits = session.run(None, {"input": np.stack([full, fast])})[0]
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                top = np.argsort(-p, axis=1)[:, :5]
                rows.append({
                    "photo": name, "size": list(big.size), "scale": scale,
                    "top1_same": bool(top[0, 0] == top[1, 0]),
                    "top5_same_order": bool((top[0] == top[1]).all()),
                    "top5_same_set": set(top[0]) == set(top[1]),
                    "max_abs_prob_diff": float(np.abs(p[0] - p[1]).max()),
                    "full_ms": 1000 * t_full, "draft_ms": 1000 * t_fast,
                })  # fmt: skip
    summary = {}
    for scale in (1, 2, 4):
        rs = [r for r in rows if r["scale"] == scale]
        summary[f"{scale}x"] = {
            "photos": len(rs),
            "top1_agree": sum(r["top1_same"] for r in rs),
            "top5_order_agree": sum(r["top5_same_order"] for r in rs),
            "top5_set_agree": sum(r["top5_same_set"] for r in rs),
            "max_abs_prob_diff": max(r["max_abs_prob_diff"] for r in rs),
            "median_full_ms": float(np.median([r["full_ms"] for r in rs])),
            "median_draft_ms": float(np.median([r["draft_ms"] for r in rs])),
        }
    print("| photos | n | top-1 agree | top-5 same order | top-5 same set | max abs Δprob | "
          "decode full ms | decode draft ms |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, s in summary.items():
        print(f"| {key} | {s['photos']} | {s['top1_agree']} | {s['top5_order_agree']} | "
              f"{s['top5_set_agree']} | {s['max_abs_prob_diff']:.3f} | {s['median_full_ms']:.1f} | "
              f"{s['median_draft_ms']:.1f} |")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"summary": summary, "photos": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
