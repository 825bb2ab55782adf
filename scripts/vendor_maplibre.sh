#!/usr/bin/env bash
# Vendor MapLibre GL JS into geosearch/web (the web map loads nothing from other hosts).
#
# The two dist files are committed, so installing geosearch needs no npm and no network; run this
# only to move to another version: bump VERSION and SHA512 (`npm view maplibre-gl@X dist.integrity`),
# run it, then load /map and run tests/test_map.py. 5.x is the last line that ships the single-file
# UMD build `dist/maplibre-gl.js` (6.x ships split ES modules: maplibre-gl.mjs + a worker module).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=5.24.1
INTEGRITY=sha512-HyiYBwtsbk3L1n1EPLJHWqdoyMiF80n7tEYXFZyu2m1TjvaNx6KMLiFeDdmszt1/mq2zvsR1TJuX/NMu5BonXQ==
DEST=geosearch/web

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "maplibre-gl@$VERSION" >/dev/null)
tarball="$work/maplibre-gl-$VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
    echo "maplibre-gl@$VERSION: integrity $actual, expected $INTEGRITY" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work" package/dist/maplibre-gl.js package/dist/maplibre-gl.css package/LICENSE.txt
cp "$work/package/dist/maplibre-gl.js" "$work/package/dist/maplibre-gl.css" "$DEST/"
cp "$work/package/LICENSE.txt" "$DEST/maplibre-gl.LICENSE.txt"
echo "vendored maplibre-gl@$VERSION into $DEST:"
ls -l "$DEST"/maplibre-gl.*
