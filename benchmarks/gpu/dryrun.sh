#!/usr/bin/env bash
# The dry run on a machine without a GPU: run.sh must say so and stop. Writes
# benchmarks/results/gpu/DRYRUN.md with its output and exit code, beside the bundle plan that
# prepare.sh made (.gpu/plan.md; run prepare.sh first).
set -uo pipefail
cd "$(dirname "$0")/../.."
[[ -f .gpu/plan.md ]] || { echo "dryrun.sh: no .gpu/plan.md: run benchmarks/gpu/prepare.sh" >&2; exit 2; }
out=benchmarks/results/gpu/DRYRUN.md
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d)
stage=$tmp/stage  # must stay absent: run.sh writes nothing without a GPU
output=$(CONVSERVE_GPU_STAGE=$stage OUT= benchmarks/gpu/run.sh 2>&1)
code=$?
{
  echo "# GPU run: dry run without a GPU ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD))"
  echo
  echo "On the development machine (2 CPUs, no GPU):"
  echo
  echo '```'
  echo "\$ benchmarks/gpu/run.sh"
  echo "$output"
  echo "\$ echo \$?"
  echo "$code"
  echo '```'
  echo
  if [[ -e $stage ]]; then echo "**The staging folder was created: run.sh touched something.**"
  else echo "Nothing was written: the staging folder $stage does not exist afterwards."; fi
  echo
  echo "How the run works and what it cannot have verified without a GPU: docs/gpu.md."
  echo
  sed -e 's/^# /## /' .gpu/plan.md
} > "$out"
rm -rf "$tmp"
echo "dryrun.sh: run.sh exited $code; wrote $out"
