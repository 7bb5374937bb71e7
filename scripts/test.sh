#!/usr/bin/env bash
# The test command: bootstraps .venv, then runs the unit tier and the integration tier
# (the latter against a real embedded Kafka-compatible broker). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh train,test
exec .venv/bin/python -m pytest -p no:cacheprovider -q -ra "$@"
