#!/usr/bin/env bash
# The GPU run, on a GPU host without network access (the device tool's machine, or any other):
#
#   benchmarks/gpu/run.sh [--budget SECONDS] [--out DIR]
#
# 1. No GPU (no /dev/nvidia[0-9]*, no GPU listed by nvidia-smi): says so, exits 3, writes nothing.
# 2. Stages the bundles carried into .gpu/bundles/ (benchmarks/gpu/prepare.sh made them) and
#    reassembles the payload in $CONVSERVE_GPU_STAGE (default /tmp/convserve-gpu), every part and
#    file checked against its sha256: a missing bundle or a bad checksum stops it (exit 4).
# 3. Installs the wheels into $STAGE/site (pip --no-index --no-deps --target), puts the host's
#    CUDA 13 / cuDNN 9 libraries (its nvidia-* wheels) on LD_LIBRARY_PATH, and checks convserve's
#    whole requirement closure against host + wheels (exit 5 when something is missing).
# 4. Copies the source tree to $STAGE/src, with the generated stubs from convserve's wheel, the
#    sample JPEGs and perf_analyzer where the benchmarks look for them.
# 5. tests/gpu, then benchmarks/gpu/bench.py (cuDNN conv algo search, CUDA graphs, in-process
#    ceilings, perf_analyzer on ResNet-50 FP16, ClassifyImage with MobileNetV2 JPEGs), all within
#    --budget seconds from the start (default 420: one 10-minute device call, with margin).
# Results (results.json, results.md, pytest.txt, servers.log, run.log) go to --out, else $OUT
# when set (the device tool brings that folder back), else $STAGE/results.
# Exit: 0 all passed and measured; 6 a test failed; 7 the benchmark failed (results say what).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
STAGE=${CONVSERVE_GPU_STAGE:-/tmp/convserve-gpu}
BUDGET=420
OUT_DIR=${OUT:-$STAGE/results}
while (($#)); do
  case $1 in
    --budget) BUDGET=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    *) echo "run.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
DEADLINE=$((START + BUDGET))

# ---- 1. a GPU, before anything is written ------------------------------------------------------
gpu=""
compgen -G '/dev/nvidia[0-9]*' >/dev/null && gpu="device nodes $(echo /dev/nvidia[0-9]*)"
if [[ -z $gpu ]] && command -v nvidia-smi >/dev/null 2>&1; then
  gpu=$(nvidia-smi -L 2>/dev/null | grep '^GPU ' | head -1)
fi
if [[ -z $gpu ]]; then
  echo "run.sh: no GPU present (no /dev/nvidia[0-9]*, and no GPU listed by nvidia-smi):" \
       "nothing staged, installed or run" >&2
  exit 3
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
  echo "run.sh: $PY is not Python 3.12 (the wheels are cp312); set PYTHON" >&2
  exit 2
fi

main() {
  echo "run.sh: $gpu; budget ${BUDGET}s; stage $STAGE; results $OUT_DIR"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader
  # ---- 2. parts → payload ----------------------------------------------------------------------
  cd "$REPO" || return 2
  if compgen -G '.gpu/bundles/[0-9][0-9]/manifest.json' >/dev/null; then
    "$PY" benchmarks/gpu/parts.py stage --into "$STAGE" || return 4
  fi
  "$PY" benchmarks/gpu/parts.py assemble --stage "$STAGE" || return 4
  local payload=$STAGE/payload site=$STAGE/site src=$STAGE/src
  local pack; pack=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' \
    "$STAGE/manifest.json")
  local wheel; wheel=$(ls "$payload"/wheels/convserve-*.whl)

  # ---- 3. install, CUDA libraries, requirement closure -----------------------------------------
  if [[ ! -f $site/.pack-$pack ]]; then
    rm -rf "$site" "$site.tmp"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --target "$site.tmp" $(ls "$payload"/wheels/*.whl | grep -v /convserve-) ||
      return 5
    mv "$site.tmp" "$site" && touch "$site/.pack-$pack"
  fi
  local nvlibs
  nvlibs=$("$PY" -c '
import importlib.util, os
spec = importlib.util.find_spec("nvidia")
roots = list(spec.submodule_search_locations) if spec else []
print(":".join(os.path.join(r, d, "lib") for r in roots for d in sorted(os.listdir(r))
               if os.path.isdir(os.path.join(r, d, "lib"))))')
  [[ -n $nvlibs ]] || echo "run.sh: the host has no nvidia-* CUDA wheels: CUDA must come from" \
    "the system library path"
  export LD_LIBRARY_PATH="$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PYTHONPATH="$site"
  "$PY" "$REPO/benchmarks/gpu/envcheck.py" "$wheel" --json "$STAGE/env.json" || return 5

  # ---- 4. the source tree, with stubs, inputs and tools ----------------------------------------
  rm -rf "$src" && mkdir -p "$src/.cache/bench-inputs" "$src/.cache/tools"
  tar -C "$REPO" -cf - service export convserve benchmarks tests protos scripts pyproject.toml \
    setup.py | tar -C "$src" -xf -
  "$PY" -c '
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    whl.extractall(sys.argv[2], [n for n in whl.namelist() if n.startswith("service/_proto/")])
' "$wheel" "$src"
  cp -r "$payload/inputs/jpeg" "$src/.cache/bench-inputs/"
  cp -r "$payload/tools/bin" "$payload/tools/lib" "$src/.cache/tools/"
  chmod +x "$src/.cache/tools/bin/perf_analyzer"
  cd "$src" || return 2

  # ---- 5. tests, then the benchmark ------------------------------------------------------------
  local left=$((DEADLINE - $(date +%s))) status=0
  local test_s=$((left * 2 / 5))
  echo "run.sh: tests/gpu (at most ${test_s}s)"
  CONVSERVE_GPU_MODELS="$payload/models" timeout --kill-after=10 "$test_s" \
    "$PY" -m pytest -p no:cacheprovider tests/gpu -q -rs --timeout 300 \
    --junitxml "$STAGE/junit.xml" 2>&1 | tee "$OUT_DIR/pytest.txt"
  ((PIPESTATUS[0] == 0)) || status=6
  echo "run.sh: benchmark (until $(date -d "@$DEADLINE" +%T))"
  # Steps start only while their estimate fits; one that runs long is cut 60 s past the deadline.
  timeout --kill-after=10 $((DEADLINE - $(date +%s) + 60)) "$PY" -m benchmarks.gpu.bench --models "$payload/models" --out "$OUT_DIR" \
    --work "$STAGE/work" --deadline "$DEADLINE" --junit "$STAGE/junit.xml" \
    --env "$STAGE/env.json" || { ((status)) || status=7; }
  [[ -f $OUT_DIR/results.md ]] && cat "$OUT_DIR/results.md"
  echo "run.sh: done in $(($(date +%s) - START))s, exit $status"
  return $status
}

mkdir -p "$OUT_DIR"
main 2>&1 | tee -a "$OUT_DIR/run.log"
exit "${PIPESTATUS[0]}"
