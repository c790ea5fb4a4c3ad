#!/usr/bin/env bash
# One transfer call of the GPU run: copy the bundle(s) this call carried (.gpu/bundles/NN, see
# .gpu/plan.md) into the staging folder, each part checked against its sha256 at once, and say
# which bundles are staged and which are still missing. The last call runs run.sh instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python3}" benchmarks/gpu/parts.py stage --into "${CONVSERVE_GPU_STAGE:-/tmp/convserve-gpu}" "$@"
