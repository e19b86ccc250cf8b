#!/usr/bin/env bash
# Install the Space's requirements, then start the app locally (extra args go to app.py, e.g. --port 7861).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
exec python app.py "$@"
