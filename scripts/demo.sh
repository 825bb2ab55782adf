#!/usr/bin/env bash
# Install geosearch into ./.venv, ingest the sample scenes into ./demo-store and search them.
# Pass your own GeoTIFFs/folders as arguments; the default is the development sample scenes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q .
SCENES=("${@:-../shared/data/scenes}")
geosearch ingest "${SCENES[@]}" --store ./demo-store
geosearch search "a road winding through the mountains" --store ./demo-store --limit 5
geosearch search "green farmland" --store ./demo-store --limit 5 --bbox -180,-90,180,90
