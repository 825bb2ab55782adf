#!/usr/bin/env bash
# Install geosearch with its test extras into ./.venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q ".[test]"
pytest "$@"
