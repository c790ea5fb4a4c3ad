"""The benchmark model repository: the default models as users get them, plus ResNet-18/50.

    .venv/bin/python -m benchmarks.bench_repo [--repository .cache/bench-repo]

* The four default models (mobilenet_v2, lenet5_fashion, resnet_fashion, speech_cnn): a model
  that ships `weights/<name>/card.json` is built by `convserve build-defaults --only NAME`, i.e.
  exactly what `make serve` serves; one that ships no weights yet is exported with random weights
  by `convserve export ARCH` (the architecture export/defaults.py names for it). Weights do not
  change compute cost, so random ones measure the same as trained ones.
* resnet18 and resnet50 (ImageNet shapes, random weights): `convserve export`.

Every config is what `convserve export` writes by default: max batch 64, max queue delay 1000 µs,
`batch_policy: eager`. `<repo>.sources.json` records what each model was built from (the card's
sha256 or the architecture); a model whose source changed is rebuilt.

`policy_view(repo, "delay")` is a second repository whose configs name Triton's rule instead
(version folders are symlinks, so both serve the same ONNX files): `convserve-delay`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import APP_PYTHON, BENCH_REPO, ROOT

WEIGHTS = ROOT / "weights"
DEFAULT_MODELS = ("lenet5_fashion", "resnet_fashion", "mobilenet_v2", "speech_cnn")
EXTRA_MODELS = {"resnet18": "resnet18", "resnet50": "resnet50"}  # name -> arch
MODEL_ORDER = (*DEFAULT_MODELS, *EXTRA_MODELS)


@dataclass(frozen=True)
class Model:
    """One benchmark model, with its tensors as the peers and the KServe loadgen want them."""

    name: str
    input: str  # NAME:DATATYPE:D1,D2 (no batch axis)
    output: str  # NAME:D1 (no batch axis)
    task: str

    @property
    def default(self) -> bool:
        return self.name in DEFAULT_MODELS

    @property
    def peer_input(self) -> str:
        name, _, dims = self.input.split(":")
        return f"{name}:{dims}"


def _default_archs() -> dict[str, str]:
    """Architectures of the default models per export/defaults.py (imports torch: a child)."""
    code = (
        "import json; from export.defaults import DEFAULT_MODELS; "
        "print(json.dumps({m.name: m.arch for m in DEFAULT_MODELS}))"
    )
    out = subprocess.run(
        [str(APP_PYTHON), "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


def sources() -> dict[str, str]:
    """What each model is built from: `card:<sha256 of card.json>` or `arch:<arch>`."""
    archs = _default_archs()
    out = {}
    for name in DEFAULT_MODELS:
        card = WEIGHTS / name / "card.json"
        if card.is_file():
            out[name] = "card:" + hashlib.sha256(card.read_bytes()).hexdigest()[:16]
        else:
            out[name] = f"arch:{archs[name]}"
    out.update({name: f"arch:{arch}" for name, arch in EXTRA_MODELS.items()})
    return out


def ensure(repo: Path = BENCH_REPO, log: Callable[[str], None] = print) -> dict[str, str]:
    """Build every missing or outdated model; the sources they were built from."""
    record = repo.with_name(f"{repo.name}.sources.json")
    built = json.loads(record.read_text()) if record.is_file() else {}
    wanted = sources()
    for name, source in wanted.items():
        if built.get(name) == source and (repo / name / "config.pbtxt").is_file():
            continue
        shutil.rmtree(repo / name, ignore_errors=True)
        kind, _, what = source.partition(":")
        log(f"building {name} into {repo} from {source}")
        if kind == "card":
            cmd = ["build-defaults", "--only", name, "--no-progress", "--repository", str(repo)]
            cmd += ["--threads", "1"]
        else:
            cmd = ["export", what, "--name", name, "--repository", str(repo), "--threads", "1"]
        subprocess.run(
            [str(APP_PYTHON), "-m", "convserve", *cmd], cwd=ROOT, check=True, timeout=1800
        )
        built[name] = source
        repo.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(built, indent=1) + "\n")
    return wanted


def models(repo: Path = BENCH_REPO) -> dict[str, Model]:
    """The benchmark models as configured in `repo`, in MODEL_ORDER."""
    from service.config import read_spec

    out = {}
    for name in MODEL_ORDER:
        spec = read_spec(repo / name)
        t, o = spec.inputs[0], spec.outputs[0]
        dims = ",".join(str(d) for d in t.dims)
        out[name] = Model(
            name,
            f"{t.name}:{t.datatype}:{dims}",
            f"{o.name}:{','.join(map(str, o.dims))}",
            spec.task.value,
        )
    return out


def set_parameter(config: str, key: str, value: str) -> str:
    """config.pbtxt text with parameter `key` set to `value` (replaced, or added)."""
    line = re.compile(
        rf'parameters \{{ key: "{re.escape(key)}" value: \{{ string_value: "[^"]*" \}} \}}\n?'
    )
    entry = f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
    return line.sub("", config) + entry


def config_view(repo: Path, suffix: str, edit: Callable[[str, str], str]) -> Path:
    """`<repo>-<suffix>`: the same models (version folders are symlinks to the same ONNX files),
    each config.pbtxt passed through `edit(model name, text)`."""
    view = repo.with_name(f"{repo.name}-{suffix}")
    for name in MODEL_ORDER:
        source, target = repo / name, view / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for item in source.iterdir():
            if item.is_dir():
                (target / item.name).symlink_to(item.resolve())
            elif item.name != "config.pbtxt":  # labels: the server wants them inside
                shutil.copyfile(item, target / item.name)
        (target / "config.pbtxt").write_text(edit(name, (source / "config.pbtxt").read_text()))
    return view


def policy_view(repo: Path, policy: str) -> Path:
    """`<repo>-<policy>`: every config naming `batch_policy: <policy>`."""
    return config_view(repo, policy, lambda name, text: set_parameter(text, "batch_policy", policy))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=BENCH_REPO)
    args = parser.parse_args(argv)
    for name, source in ensure(args.repository).items():
        print(f"{name}: {source}")
    print(policy_view(args.repository, "delay"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
