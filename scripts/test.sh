#!/usr/bin/env bash
# Install geosearch with its test extras into ./.venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# System programs the GIS-client tests drive as real clients: GDAL's ogrinfo/ogr2ogr, QGIS's OAPIF
# provider (system python3-qgis) and Chromium for the web map (GEOSEARCH_NO_APT=1 skips this; those
# tests then skip, saying why).
if [ -z "${GEOSEARCH_NO_APT:-}" ] && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  if ! dpkg -s gdal-bin python3-qgis chromium >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gdal-bin python3-qgis chromium >/dev/null
  fi
fi
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# Editable (the tests and mypy read the checkout); strict mode links the mapped folders into a
# plain tree under build/ that mypy can follow. Re-run after adding or removing a module.
pip install -q -e ".[test]" --config-settings editable_mode=strict
pytest "$@"
