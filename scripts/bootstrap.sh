#!/usr/bin/env bash
# Creates .venv (once) and installs stream-rec with the extras given as arguments.
# Re-running is cheap: pip is only called when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train,test}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] installing stream-rec[$extras] into .venv (first run: a few minutes)" >&2
  # torch is pinned in the `train` extra; pip takes it from local disk where it lies there.
  .venv/bin/python -m pip install -q -e ".[$extras]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
