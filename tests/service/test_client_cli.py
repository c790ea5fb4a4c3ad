"""service.client.ConvserveClient and the serving CLI (classify, detect-speech, models, health)
against the real in-process server."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from service import cli
from service.client import ConvserveClient, describe_error
from tests.service.conftest import IMAGE_LABELS, ROOT, ServerThread, png, speech_clip, wav


@pytest.fixture
def files(tmp_path: Path, rng: np.random.Generator) -> dict[str, Path]:
    out = {}
    for name in ("a.png", "b.png"):
        path = tmp_path / name
        path.write_bytes(png(rng.integers(0, 256, size=(12, 16), dtype=np.uint8)))
        out[name] = path
    clip, _ = speech_clip()
    out["clip.wav"] = tmp_path / "clip.wav"
    out["clip.wav"].write_bytes(wav(clip))
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- the client ---------------------------------------------------------------------------------


def test_client_calls(server: ServerThread, rng: np.random.Generator) -> None:
    with ConvserveClient(server.target, timeout=10) as client:
        assert client.health() == "SERVING"
        assert client.health("tiny_speech") == "SERVING"
        x = rng.standard_normal((1, 8, 8)).astype(np.float32)
        reply = client.classify_tensor(x, top_k=3)
        assert reply.model == "tiny_image" and len(reply.classes) == 3
        clip, _ = speech_clip(8000)
        speech = client.detect_speech(samples=clip, sample_rate=8000)
        assert speech.is_speech and len(speech.segments) == 2
        streamed = list(
            client.stream_detect_speech(
                [clip[i : i + 4000] for i in range(0, len(clip), 4000)], sample_rate=8000
            )
        )
        assert streamed[-1].final and sum(len(r.segments) for r in streamed) == 2
        assert client.get_model("tiny_image").num_labels == 10
        assert {m.name for m in client.list_models().models} >= {"tiny_image", "tiny_speech"}
        with pytest.raises(ValueError, match="exactly one"):
            client.detect_speech()
        with pytest.raises(grpc.RpcError) as exc:
            client.get_model("nope")
        assert describe_error(exc.value) == "NOT_FOUND: unknown model 'nope'"


# ---- the CLI ------------------------------------------------------------------------------------


def test_classify_table_and_json(
    server: ServerThread, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    images = [str(files["a.png"]), str(files["b.png"])]
    code, out, err = _run(["classify", *images, "--server", server.target, "--top-k", "3"], capsys)
    assert code == 0, err
    assert out.count("(tiny_image v1)") == 2
    assert "RANK" in out and "SCORE" in out
    assert sum(label in out for label in IMAGE_LABELS) >= 3
    code, out, _ = _run(["classify", *images, "--server", server.target, "--json"], capsys)
    assert code == 0
    parsed = json.loads(out)
    assert [p["file"] for p in parsed] == images
    for p in parsed:
        assert p["model"] == "tiny_image" and len(p["classes"]) == 5
        assert all(c["label"] == IMAGE_LABELS[c["index"]] for c in p["classes"])


def test_classify_errors_are_one_line(
    server: ServerThread,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _run(
        ["classify", str(files["a.png"]), "--server", server.target, "--model", "nope"], capsys
    )
    assert code == 1
    assert err.strip().splitlines() == [
        f"convserve: {files['a.png']}: NOT_FOUND: model 'nope' not "
        "found; available: batchy, half, slow, small_queue, "
        "tiny_image, tiny_speech"
    ]
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    missing = tmp_path / "missing.png"
    code, out, err = _run(
        ["classify", str(junk), str(missing), str(files["a.png"]), "--server", server.target],
        capsys,
    )
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "INVALID_ARGUMENT: cannot decode" in lines[0]
    assert "missing.png: cannot read" in lines[1]
    assert "(tiny_image v1)" in out  # the good file was still classified
    assert "Traceback" not in err


def test_detect_speech(
    server: ServerThread, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        ["detect-speech", str(files["clip.wav"]), "--server", server.target], capsys
    )
    assert code == 0, err
    assert "(tiny_speech v1)  speech  p=1.0000  3.20 s" in out
    assert "segments (s): 0.95-1.65, 2.35-2.95" in out
    code, out, _ = _run(
        ["detect-speech", str(files["clip.wav"]), "--server", server.target, "--json"], capsys
    )
    (parsed,) = json.loads(out)
    assert parsed["is_speech"] is True and len(parsed["segments"]) == 2
    assert len(parsed["windows"]) == 63


def test_models_and_env_server(
    server: ServerThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVSERVE_SERVER", server.target)
    code, out, _ = _run(["models"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == [
        "NAME",
        "TASK",
        "VERSIONS",
        "STATE",
        "PROVIDER",
        "DEFAULT",
    ]
    assert rows["tiny_image"].split() == [
        "tiny_image",
        "image_classification",
        "1",
        "READY",
        "CPUExecutionProvider",
        "yes",
    ]
    assert rows["batchy"].split()[-1] == "CPUExecutionProvider"  # not the default
    code, out, _ = _run(["models", "--json"], capsys)
    models = {m["name"]: m for m in json.loads(out)}
    assert models["tiny_speech"]["is_default"] and models["tiny_speech"]["num_labels"] == 2


def test_health(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["health", "--server", server.target], capsys)[:2] == (0, "SERVING\n")
    code, _, err = _run(["health", "--server", server.target, "--service", "ghost"], capsys)
    assert code == 1 and err.startswith("convserve: NOT_FOUND")
    # Nothing listening: one line, exit 1 (what a container health check needs).
    code, _, err = _run(["health", "--server", "127.0.0.1:1", "--timeout", "1"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(("convserve: UNAVAILABLE", "convserve: DEADLINE_EXCEEDED"))


def test_subcommands_mount_into_another_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="convserve")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train")  # the training side mounts its own next to ours
    cli.add_subcommands(sub)
    args = parser.parse_args(["classify", "x.png", "--top-k", "2"])
    assert args.func is not None and args.top_k == 2 and args.images == [Path("x.png")]
    args = parser.parse_args(["serve", "--repository", str(tmp_path), "--grpc-port", "0"])
    assert args.repository == str(tmp_path) and args.grpc_port == "0" and args.metrics_port is None
    assert cli.main([]) == 2


def test_python_m_service_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert "--max-message-bytes" in proc.stdout and "CONVSERVE_GRPC_PORT" in proc.stdout
