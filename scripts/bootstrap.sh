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
  .venv/bin/python -m pip install -q --upgrade pip > /dev/null
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] installing stream-rec[$extras] into .venv (first run: a few minutes)" >&2
  # torch is pinned in the `train` extra; pip takes it from local disk where it lies there.
  if ! .venv/bin/python -m pip install -e ".[$extras]" > .venv/pip-install.log 2>&1; then
    tail -n 40 .venv/pip-install.log >&2
    echo "[bootstrap] pip install failed; full log: .venv/pip-install.log" >&2
    exit 1
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi
