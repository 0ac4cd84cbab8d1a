#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: creates .venv, installs the bridge with its dev extras,
# the Nuclio functions' runtime (torch, sam2, ultralytics) and makes sure PostgreSQL answers.
# Extra arguments go to pytest. BRIDGE_SKIP_FUNCTIONS=1 skips installing the functions' runtime.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel  # sam2 builds without isolation: needs them in the venv
"${PIP[@]}" -e ".[dev]"
if [ "${BRIDGE_SKIP_FUNCTIONS:-0}" != "1" ]; then
  # Order matters: torch first; sam2 is an sdist that must build against that torch (no isolation).
  "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
  SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation "sam2==1.1.0"
  "${PIP[@]}" -e ".[functions]"
fi

# shellcheck source=scripts/ensure-postgres.sh
source scripts/ensure-postgres.sh
# shellcheck source=scripts/ensure-chromium.sh
source scripts/ensure-chromium.sh

export YOLO_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
