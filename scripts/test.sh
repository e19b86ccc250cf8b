#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite offline (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --dev
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
python -m pytest "$@"
