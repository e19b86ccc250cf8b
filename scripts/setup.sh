#!/usr/bin/env bash
# Create .venv (if needed) and install the Space's requirements; with --dev also the test tools and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
python -m pip install --quiet "$(grep -E '^torch==' requirements.txt)"
python -m pip install --quiet -r requirements.txt
if [ "${1:-}" = "--dev" ]; then
  python -m pip install --quiet -r requirements-dev.txt
  python -m pip install --quiet -r requirements-build.txt  # optional builder engines (Ray), tested in CI
  # Chromium drives the page tests; node + npm run the README's JavaScript example with the pinned @gradio/client
  missing=""
  command -v chromium >/dev/null 2>&1 || missing="$missing chromium chromium-driver"
  command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null || true
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
  # a failed install is a failure, not a skipped test later
  npm ci --prefix tests/js --no-audit --no-fund --silent
fi
