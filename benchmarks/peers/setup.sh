#!/usr/bin/env bash
# Build a peer server's own virtual environment under .cache/bench-venvs/<peer>, never the app's.
#   benchmarks/peers/setup.sh pytriton   # nvidia-pytriton (ships a Triton server binary)
#   benchmarks/peers/setup.sh mlserver   # Seldon MLServer (+ uvloop 0.21.0, see mlserver_server.py)
# Both get plain `onnxruntime` (CPU) to run the same ONNX files as convserve.
set -euo pipefail
peer=${1:?usage: setup.sh pytriton|mlserver}
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.cache/bench-venvs/$peer"
python=${PYTHON:-python3}
case "$peer" in
  pytriton) packages=(nvidia-pytriton onnxruntime numpy) ;;
  mlserver) packages=(mlserver onnxruntime numpy "uvloop==0.21.0") ;;
  *) echo "unknown peer $peer" >&2; exit 2 ;;
esac
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "${packages[@]}"
echo "$peer environment ready: $venv"
