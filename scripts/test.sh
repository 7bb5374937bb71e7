#!/usr/bin/env bash
# The test command: bootstraps .venv, runs the static checks (scripts/check: ruff, mypy, the
# import test), then the unit tier and the integration tier (the latter against a real
# embedded Kafka-compatible broker). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh train,test
bash scripts/check
exec .venv/bin/python -m pytest -p no:cacheprovider -q -ra "$@"
