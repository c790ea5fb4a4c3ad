"""Fashion-MNIST test accuracy of exported models, the way a client sees it: PNG in, top-1 out.

    .venv/bin/python benchmarks/fashion_eval.py [--repository DIR] [--models NAME ...]
                                                [--in-process-only] [--out JSON]

Every one of the 10,000 test images is encoded as a PNG (28x28 grey, as a user would send it)
and scored two ways:

* **served**: a real `convserve serve` on 127.0.0.1 and the Python gRPC client's ClassifyImage
  (top_k 1), so the server's decoding, its preprocessing from config.pbtxt, batching and
  ONNX Runtime are all in the path;
* **in-process**: the same preprocessing code (service.preprocess.image.decode_image with the
  ImageSpec the server derives from the model's config.pbtxt) and an ONNX Runtime session, no
  server: what CI's tests check (tests/export/test_shipped.py).

Both must agree to the image: the served path adds transport and batching, never arithmetic.
Without --repository, the shipped default models are exported into a temporary repository
first (convserve build-defaults). Results: benchmarks/results/fashion_eval.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/fashion_eval.py` from anywhere
    sys.path.insert(0, str(ROOT))

from service.config import load_spec, parse_config  # noqa: E402
from service.preprocess.image import decode_image  # noqa: E402

MODELS = ("lenet5_fashion", "resnet_fashion")
RESULTS = ROOT / "benchmarks" / "results" / "fashion_eval.json"


def fashion_test_pngs(limit: int | None = None) -> tuple[list[bytes], NDArray[np.int64]]:
    """The Fashion-MNIST test split as PNG files (bytes) and labels."""
    from export.data.idx import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs, labels


def score_in_process(model_dir: Path, pngs: list[bytes], labels: NDArray[np.int64]) -> float:
    """Top-1 of ``model_dir`` (config.pbtxt + newest version's model.onnx) on the PNGs."""
    import onnxruntime as ort

    config = parse_config(model_dir / "config.pbtxt", default_max_queue_size=8)
    spec = load_spec(model_dir, config, default_max_queue_size=8)
    assert spec.image is not None, f"{model_dir} is not an image model"
    version = max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    session = ort.InferenceSession(
        str(model_dir / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    batch = np.stack([decode_image(png, spec.image) for png in pngs])
    chunks = [batch[i : i + 500] for i in range(0, len(batch), 500)]
    predicted = np.concatenate([session.run(None, {name: c})[0].argmax(1) for c in chunks])
    return float((predicted == labels).mean())


def score_served(
    repository: Path, models: list[str], pngs: list[bytes], labels: NDArray[np.int64]
) -> dict[str, float]:
    """Top-1 per model through a real server and the gRPC client (16 requests in flight)."""
    from service.client import ConvserveClient
    from service.process import ServerProcess, loopback_env, serve_command

    server = ServerProcess.start(serve_command(repository), env=loopback_env(), timeout=300)
    try:
        with ConvserveClient(str(server.endpoint("grpc")), timeout=60) as client:
            scores = {}
            for model in models:

                def top1(png: bytes, model: str = model) -> int:
                    return int(client.classify(png, model=model, top_k=1).classes[0].index)

                with ThreadPoolExecutor(16) as pool:
                    predicted = np.fromiter(pool.map(top1, pngs), dtype=np.int64, count=len(pngs))
                scores[model] = float((predicted == labels).mean())
    finally:
        server.stop()
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, help="default: export the shipped weights")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fashion-eval-") as tmp:
        repository = args.repository
        if repository is None:
            from export.defaults import build_defaults

            repository = Path(tmp) / "repo"
            build_defaults(repository, only=tuple(args.models), cache_dir=Path(tmp) / "cache")
        pngs, labels = fashion_test_pngs()
        report: dict[str, Any] = {"images": len(pngs), "models": {}}
        for model in args.models:
            start = time.perf_counter()
            top1 = score_in_process(repository / model, pngs, labels)
            report["models"][model] = {"in_process_top1": top1}
            print(f"{model}: in-process top-1 {top1:.4f} ({time.perf_counter() - start:.1f}s)")
        if not args.in_process_only:
            start = time.perf_counter()
            for model, top1 in score_served(repository, args.models, pngs, labels).items():
                report["models"][model]["served_top1"] = top1
                print(f"{model}: served top-1 {top1:.4f}")
            print(f"served path: {time.perf_counter() - start:.1f}s for {len(args.models)} models")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
