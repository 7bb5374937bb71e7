#!/usr/bin/env bash
# The demo: bootstraps .venv, then `stream-rec demo` (embedded broker, worker, generated
# shoppers, live recommendations). Extra args go to `stream-rec demo`, e.g. --max-events 5000 --json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh train,test
exec .venv/bin/stream-rec demo "$@"
