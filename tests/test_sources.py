"""Sources: remote COGs read in place through /vsicurl/ and STAC catalogs, against a real HTTP server on
127.0.0.1 that answers Range requests and logs every byte it sends."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds
from support import GEOSEARCH

from geosearch.errors import InvalidInput, SceneError
from geosearch.ingest import IngestOptions, SceneStatus, expand_paths, ingest
from geosearch.sources import SourcePath
from geosearch.sources.stac import choose_asset, stac_sources
from geosearch.store.ids import chip_id
from geosearch.tilers import TileOptions, open_scene, render_chip

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
SCENES = ("rio-color/rgb8.tif", "rio-color/rgb16.tif", "rio-tiler/cog_rgb.tif")
"""Tiled scenes (uint8 LZW, uint16 LZW, uint8 JPEG) served over HTTP and ingested locally."""
SLOW_S = 4.0
"""How long the slow route stalls a data request: past the GDAL_HTTP_TIMEOUT the tests set."""


class RangeServer:
    """A static file server (http.server) with single Range requests, ETag / Last-Modified, a log of the
    bytes sent per path, and a slow route (stalls every request but the id probe's ``bytes=0-0``)."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        self.slow: set[str] = set()
        self.sent: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.api_items: list[dict[str, Any]] = []
        """Items the STAC API at /api searches (POST /api/search filters them by collection and bbox)."""
        self.searches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, route: str, path: Path) -> str:
        self.files[route] = path
        return self.url + route

    def _log(self, route: str, rng: str | None, count: int) -> None:
        with self._lock:
            self.sent[route] = self.sent.get(route, 0) + count
            self.requests.append((route, rng))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] == "/api":
                    self._json(server.landing())
                    return
                self._serve(body=True)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                query = json.loads(self.rfile.read(length) or b"{}")
                server.searches.append(query)
                self._json(server.search(query))

            def _json(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, *, body: bool) -> None:
                route = self.path.split("?", 1)[0]
                rng = self.headers.get("Range")
                if route in server.slow and rng != "bytes=0-0":
                    time.sleep(SLOW_S)
                path = server.files.get(route)
                if path is None or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                stat = path.stat()
                start, end, status = 0, len(data) - 1, 200
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                if match:
                    start = int(match[1])
                    end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
                    status = 206
                chunk = data[start : end + 1]
                self.send_response(status)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(chunk)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("ETag", f'"{stat.st_size}-{stat.st_mtime_ns}"')
                self.send_header("Last-Modified", self.date_time_string(int(stat.st_mtime)))
                self.end_headers()
                if body:
                    self.wfile.write(chunk)
                    server._log(route, rng, len(chunk))

        return Handler

    def landing(self) -> dict[str, Any]:
        api = f"{self.url}/api"
        return {
            "type": "Catalog",
            "id": "api",
            "stac_version": "1.0.0",
            "description": "a minimal STAC API",
            "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
            "links": [
                {"rel": "self", "href": api, "type": "application/json"},
                {"rel": "root", "href": api, "type": "application/json"},
                {"rel": "search", "href": f"{api}/search", "type": "application/geo+json", "method": "POST"},
            ],
        }

    def search(self, query: dict[str, Any]) -> dict[str, Any]:
        found = []
        for item in self.api_items:
            if query.get("collections") and item.get("collection") not in query["collections"]:
                continue
            if query.get("bbox"):
                w, s, e, n = query["bbox"]
                iw, is_, ie, in_ = item["bbox"]
                if iw > e or ie < w or is_ > n or in_ < s:
                    continue
            found.append(item)
        return {"type": "FeatureCollection", "features": found, "links": []}

    def __enter__(self) -> RangeServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[RangeServer]:
    with RangeServer() as srv:
        yield srv


@pytest.fixture
def gdal_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short GDAL HTTP timeout, no retries: a stalled server fails a scene in about a second."""
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")


def _item(pystac: Any, item_id: str, scene: Path | None, assets: dict[str, Any]) -> Any:
    if scene is not None:
        with rasterio.open(scene) as ds:
            bbox = list(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    else:
        bbox = [0.0, 0.0, 1.0, 1.0]
    w, s, e, n = bbox
    geometry = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    item = pystac.Item(item_id, geometry, bbox, datetime(2021, 6, 1, 10, 30, tzinfo=UTC), {})
    for name, asset in assets.items():
        item.add_asset(name, asset)
    return item


def _catalog(tmp_path: Path, server: RangeServer, items: list[Any]) -> str:
    """A static catalog (catalog → collection "scenes" → items) written with pystac and served too."""
    import pystac

    catalog = pystac.Catalog("root", "test catalog")
    extent = pystac.Extent(pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]), pystac.TemporalExtent([[None, None]]))
    collection = pystac.Collection("scenes", "served scenes", extent)
    catalog.add_child(collection)
    for item in items:
        collection.add_item(item)
    root = tmp_path / "stac"
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    for path in root.rglob("*.json"):
        server.add(f"/stac/{path.relative_to(root).as_posix()}", path)
    return f"{server.url}/stac/catalog.json"


def _vectors(engine: Any, scene_id: str) -> dict[tuple[int, int, int, int], np.ndarray[Any, Any]]:
    hits, _ = engine.store.browse(scene=scene_id, limit=1000)
    out = {}
    for hit in hits:
        w = hit.payload.window
        out[(w.col, w.row, w.width, w.height)] = engine.store.get_vector(hit.id)
    return out


@pytest.mark.slow
def test_catalog_ingest_matches_local_files(
    tmp_path: Path, server: RangeServer, scenes_dir: Path, tiny_engine: Any
) -> None:
    import pystac

    local = [scenes_dir / name for name in SCENES]
    items = []
    for i, scene in enumerate(local):
        href = server.add(f"/data/{i}/{scene.name}", scene)
        items.append(
            _item(pystac, f"item-{i}", scene, {"visual": pystac.Asset(href, media_type=COG, roles=["visual"])})
        )
    catalog_url = _catalog(tmp_path, server, items)
    options = IngestOptions(tile=TileOptions(chip_size=128), captions=False, batch_size=8)

    local_report = ingest(tiny_engine, local, options)
    remote_report = ingest(tiny_engine, [catalog_url], options)
    assert local_report.ok and remote_report.ok, [s.error for s in remote_report.scenes]
    assert [s.path for s in remote_report.scenes] == [f"{server.url}/data/{i}/{p.name}" for i, p in enumerate(local)]

    for i, (here, there) in enumerate(zip(local_report.scenes, remote_report.scenes, strict=True)):
        assert here.scene_id != there.scene_id  # remote ids: URL + ETag/size/time, not a content hash
        assert here.chips == there.chips > 0
        ours, theirs = _vectors(tiny_engine, here.scene_id), _vectors(tiny_engine, there.scene_id)
        assert ours.keys() == theirs.keys()
        for window, vector in ours.items():
            np.testing.assert_array_equal(vector, theirs[window])
        hits, _ = tiny_engine.store.browse(scene=there.scene_id, limit=1)
        payload = hits[0].payload
        assert payload.scene_path == f"{server.url}/data/{i}/{local[i].name}"
        assert (payload.stac_item, payload.stac_collection) == (f"item-{i}", "scenes")
        assert payload.stac_href == f"{server.url}/stac/scenes/item-{i}/item-{i}.json"
        assert payload.datetime is not None
        local_payload = tiny_engine.store.get(chip_id(here.scene_id, payload.window, 128, payload.model_id)).payload
        np.testing.assert_array_equal(render_chip(payload), render_chip(local_payload))  # re-read in place
        local_hits, _ = tiny_engine.store.browse(scene=here.scene_id, limit=1)
        assert local_hits[0].payload.stac_item is None

    # The same objects again: same ids, nothing to do (no full download was needed to know it).
    again = ingest(tiny_engine, [catalog_url], options)
    assert [s.status for s in again.scenes] == [SceneStatus.ALREADY] * len(local)
    assert [s.scene_id for s in again.scenes] == [s.scene_id for s in remote_report.scenes]


def test_bbox_ingest_reads_a_fraction_of_the_file(server: RangeServer, scenes_dir: Path, tiny_engine: Any) -> None:
    scene = scenes_dir / "rasterio/shade.tif"  # 1024x1024 uint8, 256-px uncompressed tiles, ~1 MB
    url = server.add("/shade.tif", scene)
    with rasterio.open(scene) as ds:  # pixels 300..460 each way: inside the tile at (256, 256)
        (x0, x1), (y0, y1) = rasterio.transform.xy(ds.transform, [300, 460], [300, 460])
        area = transform_bounds(ds.crs, "EPSG:4326", min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    # shade.tif is mostly nodata: keep every chip, the point is which bytes are read
    options = IngestOptions(tile=TileOptions(chip_size=128, min_valid=0.0), captions=False, batch_size=8)

    full = open_scene(scene, options.tile).count()
    report = ingest(tiny_engine, expand_paths([url], area=area), options)
    assert report.ok, [s.error for s in report.scenes]
    chips = report.scenes[0].chips
    fraction = server.sent["/shade.tif"] / scene.stat().st_size
    sent, size = server.sent["/shade.tif"], scene.stat().st_size
    print(f"bbox ingest: {chips}/{full} chips, {sent} of {size} bytes ({fraction:.1%})")
    assert 0 < chips <= full // 10
    assert fraction < 0.2

    whole = ingest(tiny_engine, [server.add("/whole/shade.tif", scene)], options)  # the same file, no bbox
    assert whole.ok and whole.scenes[0].chips == full
    print(f"whole ingest: {full} chips, {server.sent['/whole/shade.tif']} bytes")
    assert server.sent["/shade.tif"] < server.sent["/whole/shade.tif"] / 4
    hits, _ = tiny_engine.store.browse(scene=report.scenes[0].scene_id, limit=1000)
    assert hits and all(256 <= h.payload.window.col < 512 and 256 <= h.payload.window.row < 512 for h in hits)


@pytest.mark.slow
def test_failed_assets_give_one_line_reasons(
    tmp_path: Path, server: RangeServer, scenes_dir: Path, tiny_engine: Any, gdal_http: None
) -> None:
    import pystac

    good = scenes_dir / "rio-tiler/cog_rgb.tif"
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(range(256)) * 64)
    items = [
        _item(
            pystac,
            "good",
            good,
            {"visual": pystac.Asset(server.add("/good.tif", good), media_type=COG, roles=["visual"])},
        ),
        _item(pystac, "missing", None, {"visual": pystac.Asset(f"{server.url}/missing.tif", media_type=COG)}),
        _item(pystac, "slow", good, {"visual": pystac.Asset(server.add("/slow.tif", good), media_type=COG)}),
        _item(pystac, "corrupt", None, {"data": pystac.Asset(server.add("/corrupt.tif", corrupt), roles=["data"])}),
        _item(
            pystac,
            "thumb-only",
            None,
            {"thumbnail": pystac.Asset(f"{server.url}/t.png", media_type="image/png", roles=["thumbnail"])},
        ),
    ]
    server.slow.add("/slow.tif")
    catalog_url = _catalog(tmp_path, server, items)
    options = IngestOptions(tile=TileOptions(chip_size=128), captions=False)

    started = time.perf_counter()
    report = ingest(tiny_engine, [catalog_url], options)
    seconds = time.perf_counter() - started
    by_name = {s.path.rsplit("/", 1)[-1].split(":")[-1].removesuffix(".tif"): s for s in report.scenes}
    assert by_name["good"].status == SceneStatus.INGESTED and by_name["good"].chips > 0
    for name in ("missing", "slow", "corrupt", "thumb-only"):
        result = by_name[name]
        assert result.status == SceneStatus.FAILED, name
        assert result.error and "\n" not in result.error, (name, result.error)
        print(f"{name}: {result.error}")
    assert "404" in (by_name["missing"].error or "")
    assert "timed out" in (by_name["slow"].error or "").lower() or "timeout" in (by_name["slow"].error or "").lower()
    assert "thumbnail (image/png, thumbnail)" in (by_name["thumb-only"].error or "")
    assert "--asset" in (by_name["thumb-only"].error or "")
    assert seconds < 60


def test_asset_choice_and_local_stac_files(tmp_path: Path, scenes_dir: Path) -> None:
    import pystac

    tif = scenes_dir / "rio-tiler/cog_rgb.tif"
    bands = [{"name": n, "common_name": n} for n in ("red", "green", "blue")]
    item = _item(
        pystac,
        "multi",
        tif,
        {
            "thumbnail": pystac.Asset("t.png", media_type="image/png", roles=["thumbnail"]),
            "nir": pystac.Asset("nir.tif", media_type=COG, roles=["data"]),
            "rgb": pystac.Asset(str(tif), media_type=COG, roles=["data"], extra_fields={"eo:bands": bands}),
            "meta": pystac.Asset("m.xml", media_type="application/xml", roles=["metadata"]),
        },
    )
    assert choose_asset(item)[0] == "rgb"  # type: ignore[index]
    assert choose_asset(item, "nir")[0] == "nir"  # type: ignore[index]
    assert "no asset 'swir'" in str(choose_asset(item, "swir"))
    item.add_asset("visual", pystac.Asset(str(tif), media_type=COG, roles=["visual"]))
    assert choose_asset(item)[0] == "visual"  # type: ignore[index]

    # An Item file on disk, its asset a local path: a local scene with its STAC origin recorded.
    item.set_self_href(str(tmp_path / "multi.json"))
    item.save_object(include_self_link=True)
    (sources,) = expand_paths([str(tmp_path / "multi.json")])
    assert isinstance(sources, SourcePath) and str(sources) == str(tif)
    with open_scene(sources) as scene:
        assert scene.stac is not None and scene.stac.item == "multi"
        assert scene.id == open_scene(tif).id  # a local asset keeps its content-hash id
        payload = scene.payload(scene.read(next(scene.windows())))
        assert payload.stac_item == "multi" and payload.stac_href == str(tmp_path / "multi.json")
        assert payload.datetime is not None

    with pytest.raises(InvalidInput, match="--stac"):
        expand_paths([str(tif)], collection="x")
    with pytest.raises(InvalidInput, match="not found"):
        stac_sources(str(tmp_path / "nope.json"))
    shutil.copy(tif, tmp_path / "copy.tif")
    bad = stac_sources(str(tmp_path / "multi.json"), asset="swir")
    with pytest.raises(SceneError, match="no asset 'swir'"):
        open_scene(bad[0])


def _api_items(server: RangeServer, scenes_dir: Path) -> list[Path]:
    """Serve two scenes and list them as Items of collections "a" and "b" in the server's STAC API."""
    import pystac

    scenes = [scenes_dir / "rio-tiler/cog_rgb.tif", scenes_dir / "rio-color/rgb8.tif"]
    for scene, collection in zip(scenes, ("a", "b"), strict=True):
        href = server.add(f"/api-data/{scene.name}", scene)
        item = _item(
            pystac, f"api-{collection}", scene, {"visual": pystac.Asset(href, media_type=COG, roles=["visual"])}
        )
        item.collection_id = collection
        item.set_self_href(f"{server.url}/api/collections/{collection}/items/api-{collection}")
        server.api_items.append(item.to_dict())
    return scenes


def test_stac_api_search(server: RangeServer, scenes_dir: Path) -> None:
    cog_rgb, _ = _api_items(server, scenes_dir)
    with rasterio.open(cog_rgb) as ds:
        area = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    found = expand_paths([], stac=f"{server.url}/api", collection="a", area=area, datetime="2021-01-01/..")
    assert [str(p) for p in found] == [f"{server.url}/api-data/cog_rgb.tif"]
    assert server.searches[-1]["collections"] == ["a"] and server.searches[-1]["datetime"].startswith("2021-01-01")
    source = found[0]
    assert isinstance(source, SourcePath) and source.area == area and source.stac is not None
    assert (source.stac.item, source.stac.collection) == ("api-a", "a")
    assert source.stac.href == f"{server.url}/api/collections/a/items/api-a"
    assert expand_paths([], stac=f"{server.url}/api", collection="b")[0].name == "rgb8.tif"


@pytest.mark.slow
def test_cli_ingest_stac_api_with_bbox(
    server: RangeServer, scenes_dir: Path, tmp_path: Path, tiny_clip_spec: str
) -> None:
    cog_rgb, _ = _api_items(server, scenes_dir)
    with rasterio.open(cog_rgb) as ds:  # the left half of cog_rgb.tif
        x_mid = (ds.bounds.left + ds.bounds.right) / 2
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", ds.bounds.left, ds.bounds.bottom, x_mid, ds.bounds.top)
    args = ["ingest", "--stac", f"{server.url}/api", "--collection", "a", "--bbox", f"{w},{s},{e},{n}"]
    args += ["--model", tiny_clip_spec, "--no-captions", "--chip-size", "64", "--quiet", "--store", str(tmp_path / "s")]
    result = subprocess.run([GEOSEARCH, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"ingested {server.url}/api-data/cog_rgb.tif" in result.stdout
    chips = int(result.stdout.split("cog_rgb.tif: ", 1)[1].split(" chips", 1)[0])
    assert 0 < chips < 24  # cog_rgb.tif is 383x232: 6x4 chips of 64 px, about half of them in the box
    assert server.searches[-1]["collections"] == ["a"]

    missing = subprocess.run([GEOSEARCH, "ingest", "--quiet"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "--stac" in missing.stderr
