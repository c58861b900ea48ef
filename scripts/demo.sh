#!/usr/bin/env bash
# Install gitmodel into .venv and run the demo (a local repository, no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q -e .
python scripts/demo.py "$@"
