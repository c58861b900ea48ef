#!/usr/bin/env bash
# The test suite against the oldest dependency versions pyproject.toml allows, in .venv-oldest.
# A floor nothing exercised once let in pygit2 releases that lack an API gitmodel calls.
# Not part of CI (it would double its time): run it when a floor, or what gitmodel uses of a
# library, changes. Usage: bash scripts/test_oldest.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_CONSTRAINT="$PWD/scripts/oldest-constraints.txt" GITMODEL_TEST_VENV=.venv-oldest bash scripts/test.sh "$@"
