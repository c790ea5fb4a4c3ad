"""Exercise a convserve server with tritonclient (gRPC) and print what it saw as one JSON line.

    python tests/clients/triton_check.py --url 127.0.0.1:8001 --model lenet5_fashion [--save DIR]

Runs in its own process: tritonclient's generated protos register the same `inference.*`
symbols as convserve's in protobuf's default pool, so the two cannot share an interpreter.
Checks: live / ready / model ready, server metadata, model metadata and config, infer with a
random numpy batch (request id echoed), the classification extension, an invalid request's
status, streaming inference (one bad request among good ones), statistics and repository index.
With --save, the input and output arrays are written as .npy for the caller to compare.
Exit status 0 when every call answered as a Triton server would.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def _input(meta: dict[str, Any], batch: int, rng: np.random.Generator) -> np.ndarray:
    shape = [int(d) for d in meta["shape"]]
    shape = [batch if i == 0 and d == -1 else (d if d > 0 else 1) for i, d in enumerate(shape)]
    dtype = triton_to_np_dtype(meta["datatype"])
    return rng.standard_normal(shape).astype(dtype)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, help="write input.npy and output.npy here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    client = grpcclient.InferenceServerClient(url=args.url)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(args.model),
    }
    server = client.get_server_metadata(as_json=True)
    out["server"] = {k: server.get(k) for k in ("name", "version", "extensions")}
    meta = client.get_model_metadata(args.model, as_json=True)
    out["metadata"] = meta
    config = client.get_model_config(args.model, as_json=True)["config"]
    out["config"] = {
        "name": config.get("name"),
        "platform": config.get("platform"),
        "max_batch_size": config.get("max_batch_size", 0),
        "inputs": [i["name"] for i in config.get("input", [])],
    }

    inputs_meta = meta["inputs"]
    output_name = meta["outputs"][0]["name"]
    batch = args.batch if out["config"]["max_batch_size"] else 0
    arrays = [_input(m, batch, rng) for m in inputs_meta]
    inputs = []
    for m, arr in zip(inputs_meta, arrays, strict=True):
        tensor = grpcclient.InferInput(m["name"], list(arr.shape), m["datatype"])
        tensor.set_data_from_numpy(arr)
        inputs.append(tensor)
    result = client.infer(
        args.model,
        inputs,
        outputs=[grpcclient.InferRequestedOutput(output_name)],
        request_id="triton-check-1",
    )
    values = result.as_numpy(output_name)
    response = result.get_response(as_json=True)
    out["infer"] = {
        "id": response.get("id"),
        "model_name": response.get("model_name"),
        "output": output_name,
        "shape": list(values.shape),
        "dtype": str(values.dtype),
        "finite": bool(np.isfinite(values).all()),
    }
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(arrays):
            np.save(args.save / f"input{i}.npy", arr)
        np.save(args.save / "output.npy", values)

    classified = client.infer(
        args.model,
        inputs,
        outputs=[grpcclient.InferRequestedOutput(output_name, class_count=args.top_k)],
    ).as_numpy(output_name)
    out["classification"] = [
        [s.decode() if isinstance(s, bytes) else str(s) for s in row]
        for row in np.atleast_2d(classified)
    ]
    out["classification_argmax_matches"] = [
        int(row[0].split(":")[1]) == int(np.argmax(v))
        for row, v in zip(
            out["classification"],
            np.atleast_2d(values.reshape(len(out["classification"]), -1)),
            strict=True,
        )
    ]

    bad = grpcclient.InferInput(inputs_meta[0]["name"], [1, 3], inputs_meta[0]["datatype"])
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=triton_to_np_dtype(inputs_meta[0]["datatype"])))
    try:
        client.infer(args.model, [bad])
        out["invalid"] = {"status": "OK"}
    except InferenceServerException as exc:
        out["invalid"] = {"status": exc.status(), "message": exc.message()}

    replies: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    client.async_stream_infer(args.model, inputs, request_id="s1")
    client.async_stream_infer(args.model, [bad], request_id="s2")
    client.async_stream_infer(args.model, inputs, request_id="s3")
    got = [replies.get(timeout=30) for _ in range(3)]
    client.stop_stream()
    out["stream"] = {
        "ok": sorted(r.get_response().id for r, e in got if e is None),
        "errors": [str(e) for r, e in got if e is not None],
    }

    stats = client.get_inference_statistics(args.model, as_json=True)
    model_stats = stats["model_stats"][0]
    out["statistics"] = {
        "name": model_stats["name"],
        "inference_count": int(model_stats.get("inference_count", 0)),
        "execution_count": int(model_stats.get("execution_count", 0)),
        "success": int(model_stats["inference_stats"]["success"].get("count", 0)),
    }
    index = client.get_model_repository_index(as_json=True)
    out["index"] = sorted({m["name"] for m in index.get("models", [])})
    client.close()
    print(json.dumps(out))
    ok = (
        out["live"]
        and out["ready"]
        and out["model_ready"]
        and out["infer"]["id"] == "triton-check-1"
        and out["infer"]["finite"]
        and all(out["classification_argmax_matches"])
        and out["invalid"]["status"] == "StatusCode.INVALID_ARGUMENT"
        and out["stream"]["ok"] == ["s1", "s3"]
        and len(out["stream"]["errors"]) == 1
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
