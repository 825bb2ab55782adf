"""OGC API – Features at /ogc: the standard's resources, links, paging and errors through Litestar's
test client, then real clients (GDAL's OAPIF driver, QGIS) against a real server on 127.0.0.1. QGIS also
draws a map of the layer over a scene's XYZ imagery tiles: qgis_map.png under the pytest tmp dir, copied to
docs/qgis.png for the README when that is missing or GEOSEARCH_UPDATE_DOCS=1.

The fast tests run on a synthetic store (tiny CLIP, chips with known footprints and acquisition times,
one scene across the antimeridian); the `ingested` ones on the real sample scenes and default models.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from shapely.geometry import box, shape
from support import serving

from geosearch.api import GeoSearchMount, create_app
from geosearch.engine import Engine
from geosearch.schemas import ChipPayload, GeoPoint, SceneInfo, Window
from geosearch.store import ChipPoint, chip_id

ITEMS = "/ogc/collections/chips/items"
GEOJSON = "application/geo+json"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
CONFORMANCE = {
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
}

# -- a synthetic store -------------------------------------------------------------------------------
SCENE_A, SCENE_B, SCENE_C = "1" * 32, "2" * 32, "3" * 32
SCENES: dict[str, tuple[str | None, list[tuple[float, float, float, float]]]] = {
    # scene: (acquisition time, chip boxes west, south, east, north)
    SCENE_A: (
        "2020-06-01T10:00:00",
        [(10 + 0.01 * i, 45 + 0.01 * j, 10.01 + 0.01 * i, 45.01 + 0.01 * j) for i in range(4) for j in range(3)],
    ),
    SCENE_B: ("2022-01-15T08:30:00", [(20 + 0.01 * i, -5.0, 20.01 + 0.01 * i, -4.99) for i in range(8)]),
    # No acquisition time, three chips either side of the antimeridian.
    SCENE_C: (
        None,
        [(179.97 + 0.01 * i, -0.005, 179.98 + 0.01 * i, 0.005) for i in range(3)]
        + [(-180 + 0.01 * i, -0.005, -179.99 + 0.01 * i, 0.005) for i in range(3)],
    ),
}


def _polygon(w: float, s: float, e: float, n: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def fill_synthetic(engine: Engine) -> None:
    """Write the SCENES chips (random unit vectors, seeded) and their scene records."""
    rng = np.random.default_rng(0)
    for scene, (when, boxes) in SCENES.items():
        points = []
        for k, (w, s, e, n) in enumerate(boxes):
            window = Window(col=224 * k, row=0, width=224, height=224)
            payload = ChipPayload(
                scene_id=scene,
                scene_path=f"/data/{scene[:4]}.tif",
                window=window,
                chip_size=224,
                crs="EPSG:4326",
                footprint=_polygon(w, s, e, n),
                centre=GeoPoint(lon=(w + e) / 2, lat=(s + n) / 2),
                gsd=0.5 if scene == SCENE_A else 10.0,
                valid_fraction=1.0,
                caption=f"chip {k} of scene {scene[0]}",
                datetime=when,
            )
            vector = rng.normal(size=engine.embedder.dim).astype(np.float32)
            cid = chip_id(scene, window, 224, engine.embedder.model_id)
            points.append(ChipPoint(id=cid, vector=vector / np.linalg.norm(vector), payload=payload))
        engine.store.upsert(points)
        west = min(b[0] for b in boxes) if scene != SCENE_C else 179.97
        east = max(b[2] for b in boxes) if scene != SCENE_C else -179.97
        bbox = [west, min(b[1] for b in boxes), east, max(b[3] for b in boxes)]
        engine.store.put_scene(
            SceneInfo(
                id=scene,
                path=f"/data/{scene[:4]}.tif",
                crs="EPSG:4326",
                width=224,
                height=224,
                chips=len(boxes),
                skipped=0,
                bbox=bbox,
                datetime=when,
            )
        )


@pytest.fixture
def synthetic(tiny_engine: Engine) -> Iterator[tuple[Engine, TestClient[Any]]]:  # type: ignore[type-arg]
    fill_synthetic(tiny_engine)
    with TestClient(create_app(tiny_engine)) as client:
        yield tiny_engine, client


def every_chip(engine: Engine) -> list[Any]:
    return engine.store.browse(limit=10_000)[0]


def get_json(client: TestClient[Any], url: str, **params: Any) -> dict[str, Any]:
    # No params=... at all for a next link: httpx would replace its query with an empty one.
    response = client.get(url, params=params or None, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def link(doc: dict[str, Any], rel: str, media_type: str | None = None) -> dict[str, Any] | None:
    return next((ln for ln in doc["links"] if ln["rel"] == rel and media_type in (None, ln["type"])), None)


def follow_pages(client: TestClient[Any], url: str, **params: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every feature of a selection, following `next` links exactly as given; also every page."""
    pages = [get_json(client, url, **params)]
    while (nxt := link(pages[-1], "next")) is not None:
        assert nxt["type"] == GEOJSON
        assert len(pages) < 100, "paging does not end"
        pages.append(get_json(client, nxt["href"]))
    return [f for page in pages for f in page["features"]], pages


# -- resources and links -----------------------------------------------------------------------------
def test_landing_page_conformance_and_api_definition(synthetic) -> None:  # type: ignore[no-untyped-def]
    _, client = synthetic
    landing = get_json(client, "/ogc")
    assert all({"href", "rel", "type"} <= set(ln) for ln in landing["links"])
    service = link(landing, "service-desc")
    assert service and service["href"].endswith("/schema/openapi.json")
    api = client.get(service["href"])
    assert api.status_code == 200 and "/ogc/collections/{collectionId}/items" in api.json()["paths"]
    assert link(landing, "self", "application/json") and link(landing, "alternate", "text/html")
    conformance = get_json(client, link(landing, "conformance")["href"])  # type: ignore[index]
    assert set(conformance["conformsTo"]) == CONFORMANCE
    collections = get_json(client, link(landing, "data")["href"])  # type: ignore[index]
    assert [c["id"] for c in collections["collections"]] == ["chips"]


def test_collection_metadata_extent_and_links(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, client = synthetic
    collection = get_json(client, "/ogc/collections/chips")
    assert get_json(client, "/ogc/collections")["collections"] == [collection]
    spatial = collection["extent"]["spatial"]
    assert spatial["crs"] == "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    # The overall box first (a scene crosses the antimeridian: all longitudes), then one per scene.
    assert spatial["bbox"][0] == [-180.0, -5.0, 180.0, 45.03]
    assert sorted(map(tuple, spatial["bbox"][1:])) == sorted(tuple(s.bbox) for s in engine.scenes())
    assert collection["extent"]["temporal"]["interval"] == [["2020-06-01T10:00:00", "2022-01-15T08:30:00"]]
    assert link(collection, "items", GEOJSON) and link(collection, "items", "text/html")
    queryables = link(collection, "http://www.opengis.net/def/rel/ogc/1.0/queryables")
    assert queryables and queryables["type"] == "application/schema+json"
    schema = client.get(link(collection, "describedby")["href"]).json()  # type: ignore[index]
    assert set(schema["properties"]["properties"]["properties"]) >= {"caption", "scene", "datetime", "gsd", "score"}


def test_queryables_are_a_json_schema(synthetic) -> None:  # type: ignore[no-untyped-def]
    _, client = synthetic
    response = client.get("/ogc/collections/chips/queryables")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    body = response.json()
    assert body["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert body["$id"] == "http://testserver.local/ogc/collections/chips/queryables"
    assert body["type"] == "object"
    props = body["properties"]
    assert {"scene", "datetime", "gsd", "caption", "score"} <= set(props)
    assert props["datetime"]["format"] == "date-time" and props["gsd"]["type"] == "number"


def test_items_page_to_the_end_with_the_right_total(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, client = synthetic
    total = engine.store.count()
    features, pages = follow_pages(client, ITEMS, limit=5)
    assert len(pages) == -(-total // 5)
    ids = [f["id"] for f in features]
    assert len(ids) == total == len(set(ids)) == 26
    for page in pages:
        assert page["type"] == "FeatureCollection"
        assert page["numberMatched"] == total and page["numberReturned"] == len(page["features"]) <= 5
        datetime.fromisoformat(page["timeStamp"].replace("Z", "+00:00"))
        assert link(page, "self", GEOJSON) and link(page, "alternate", "text/html")
        assert link(page, "collection")
    first = features[0]
    assert first["geometry"]["type"] == "Polygon" and first["properties"]["caption"].startswith("chip ")
    assert "score" not in first["properties"]  # no q: no similarity (properties without a value are left out)


def test_item_by_id_and_content_types(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, client = synthetic
    hit = every_chip(engine)[3]
    response = client.get(f"{ITEMS}/{hit.id}")
    assert response.status_code == 200 and response.headers["content-type"].startswith(GEOJSON)
    feature = response.json()
    assert feature["type"] == "Feature" and feature["id"] == hit.id
    assert feature["properties"]["caption"] == hit.payload.caption
    assert {ln["rel"] for ln in feature["links"]} >= {"self", "alternate", "collection"}
    assert client.get("/ogc/collections").headers["content-type"].startswith("application/json")
    assert client.get(ITEMS).headers["content-type"].startswith(GEOJSON)


# -- filters -------------------------------------------------------------------------------------------
def test_bbox_returns_exactly_the_intersecting_chips(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, client = synthetic
    bbox = (10.005, 45.005, 10.015, 45.5)
    features, pages = follow_pages(client, ITEMS, bbox=",".join(map(str, bbox)), limit=2)
    expected = {h.id for h in every_chip(engine) if shape(h.payload.footprint).intersects(box(*bbox))}
    assert {f["id"] for f in features} == expected and len(expected) == 6
    assert "numberMatched" not in pages[0]  # not known without scanning


def test_bbox_across_the_antimeridian(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, client = synthetic
    features, _ = follow_pages(client, ITEMS, bbox="179.985,-1,-179.985,1", limit=3)
    east, west = box(179.985, -1, 180, 1), box(-180, -1, -179.985, 1)
    expected = {
        h.id
        for h in every_chip(engine)
        if shape(h.payload.footprint).intersects(east) or shape(h.payload.footprint).intersects(west)
    }
    assert {f["id"] for f in features} == expected and len(expected) == 4
    assert {f["properties"]["scene"] for f in features} == {SCENE_C}


@pytest.mark.parametrize(
    ("interval", "scenes"),
    [
        ("2020-01-01T00:00:00Z/2020-12-31T23:59:59Z", {SCENE_A, SCENE_C}),
        ("2020-06-01T10:00:00Z", {SCENE_A, SCENE_C}),
        ("2021-01-01T00:00:00Z/..", {SCENE_B, SCENE_C}),
        ("/2019-01-01T00:00:00Z", {SCENE_C}),
    ],
)
def test_datetime_keeps_matching_and_undated_chips(synthetic, interval: str, scenes: set[str]) -> None:  # type: ignore[no-untyped-def]
    """/req/core/fc-time-response: features without a time match every datetime filter too."""
    engine, client = synthetic
    features, pages = follow_pages(client, ITEMS, datetime=interval, limit=4)
    expected = {h.id for h in every_chip(engine) if h.payload.scene_id in scenes}
    ids = [f["id"] for f in features]
    assert set(ids) == expected and len(ids) == len(expected)
    assert pages[0]["numberMatched"] == len(expected)


def test_scene_and_gsd_filters(synthetic) -> None:  # type: ignore[no-untyped-def]
    _, client = synthetic
    features, pages = follow_pages(client, ITEMS, scene=SCENE_B, limit=3)
    assert len(features) == 8 and pages[0]["numberMatched"] == 8
    fine, _ = follow_pages(client, ITEMS, gsd="../1", limit=5)
    assert len(fine) == 12 and {f["properties"]["scene"] for f in fine} == {SCENE_A}
    none, _ = follow_pages(client, ITEMS, scene=SCENE_B, datetime="2020-01-01T00:00:00Z/2020-12-31T00:00:00Z")
    assert none == []


def _brute_force(engine: Engine, text: str, scenes: set[str] | None = None) -> list[str]:
    query = engine.embedder.encode_texts([text])[0]
    query = query / np.linalg.norm(query)
    hits = [h for h in every_chip(engine) if scenes is None or h.payload.scene_id in scenes]
    vectors = np.stack([engine.store.get_vector(h.id) for h in hits])
    scores = vectors @ query / np.linalg.norm(vectors, axis=1)
    return [hits[i].id for i in np.argsort(-scores)]


def test_q_ranks_by_similarity_and_pages_by_rank(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, client = synthetic
    features, pages = follow_pages(client, ITEMS, q="a harbour", limit=7)
    assert [f["id"] for f in features] == _brute_force(engine, "a harbour")
    scores = [f["properties"]["score"] for f in features]
    assert scores == sorted(scores, reverse=True)
    assert "numberMatched" not in pages[0] and link(pages[0], "prev") is None
    assert link(pages[1], "prev")["href"].endswith("q=a+harbour&limit=7&f=json")  # type: ignore[index]
    # The datetime filter still applies to a ranking, undated chips included.
    dated, _ = follow_pages(client, ITEMS, q="a harbour", datetime="2022-01-01T00:00:00Z/..", limit=5)
    assert [f["id"] for f in dated] == _brute_force(engine, "a harbour", {SCENE_B, SCENE_C})
    boxed = get_json(client, ITEMS, q="a harbour", bbox="19,-6,21,-4", limit=100)
    assert [f["id"] for f in boxed["features"]] == _brute_force(engine, "a harbour", {SCENE_B})


# -- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "/ogc/collections/nope",
        "/ogc/collections/nope/items",
        "/ogc/collections/nope/queryables",
        f"{ITEMS}/00000000-0000-0000-0000-000000000000",
        f"{ITEMS}/not-a-chip",
    ],
)
def test_unknown_collection_or_feature_is_404(synthetic, url: str) -> None:  # type: ignore[no-untyped-def]
    _, client = synthetic
    response = client.get(url)
    assert response.status_code == 404 and response.json()["detail"]


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        (f"{ITEMS}?limit=0", "limit"),
        (f"{ITEMS}?limit=10001", "limit"),
        (f"{ITEMS}?limit=ten", "limit"),
        (f"{ITEMS}?bbox=1,2,3", "bbox must have 4 numbers"),
        (f"{ITEMS}?bbox=10,50,20,40", "north of"),
        (f"{ITEMS}?datetime=yesterday", "RFC 3339"),
        (f"{ITEMS}?bbbox=1,2,3,4", "unknown query parameter 'bbbox'"),
        ("/ogc/collections?limit=5", "unknown query parameter 'limit'"),
        ("/ogc?f=xml", "f must be json or html"),
        (f"{ITEMS}?offset=not-a-token", "invalid page token"),
        (f"{ITEMS}?q=roads&offset=abc", "rank of the first feature"),
    ],
)
def test_invalid_or_unknown_parameters_are_400(synthetic, url: str, detail: str) -> None:  # type: ignore[no-untyped-def]
    _, client = synthetic
    response = client.get(url)
    assert response.status_code == 400, response.text
    assert detail in json.dumps(response.json())


# -- HTML ----------------------------------------------------------------------------------------------
class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v or "" for k, v in attrs if k == "href"]


@pytest.mark.parametrize(
    "path",
    [
        "/ogc",
        "/ogc/conformance",
        "/ogc/collections",
        "/ogc/collections/chips",
        "/ogc/collections/chips/queryables",
        ITEMS,
    ],
)
def test_browsers_get_html_with_every_link(synthetic, path: str) -> None:  # type: ignore[no-untyped-def]
    _, client = synthetic
    page = client.get(path, headers={"Accept": BROWSER})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = _Hrefs()
    parser.feed(page.text)
    assert parser.doctype.lower() == "doctype html"
    doc = client.get(path, params={"f": "json"}, headers={"Accept": BROWSER}).json()

    def unformatted(href: str) -> str:  # a page's own paging links lead to pages of its own format
        return re.sub(r"[?&]f=(json|html)$", "", href)

    # /req/html/content: every link of the document as an <a>.
    assert {unformatted(ln["href"]) for ln in doc["links"]} <= {unformatted(h) for h in parser.hrefs}
    assert client.get(path, params={"f": "html"}).headers["content-type"].startswith("text/html")


def test_items_html_shows_the_chips_and_pages(synthetic) -> None:  # type: ignore[no-untyped-def]
    engine, client = synthetic
    page = client.get(ITEMS, params={"f": "html", "limit": 3, "q": ""}).text  # an empty form field: no q
    assert len(re.findall(r"<td>chip \d+ of scene \d</td>", page)) == 3
    assert 'name="q"' in page and "next page" in page
    nxt = re.search(r'href="([^"]*offset=[^"]*)"', page)
    assert nxt and "f=html" in nxt.group(1)
    item = client.get(f"{ITEMS}/{every_chip(engine)[0].id}", headers={"Accept": "text/html"})
    assert item.status_code == 200 and "geometry" in item.text and "<script" not in item.text


def test_mounted_under_a_path(tiny_engine: Engine) -> None:
    fill_synthetic(tiny_engine)
    app = Litestar(plugins=[GeoSearchMount(tiny_engine, path="/geo")])
    with TestClient(app) as client:
        landing = get_json(client, "/geo/ogc")
        assert link(landing, "data")["href"] == "http://testserver.local/geo/ogc/collections"  # type: ignore[index]
        assert get_json(client, "/geo/ogc/collections/chips/items")["numberMatched"] == 26


# -- the real sample scenes and models -------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(ingested) -> Iterator[TestClient[Any]]:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    with TestClient(create_app(engine)) as test_client:
        yield test_client


def test_q_is_the_search_ranking(client, ingested) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    ogc = get_json(client, ITEMS, q="a beach with waves", limit=8)
    search = client.get("/search", params={"q": "a beach with waves", "limit": 8}).json()
    assert [f["id"] for f in ogc["features"]] == [f["id"] for f in search["features"]]
    assert "beach" in ogc["features"][0]["properties"]["caption"].lower()
    scene = next(s for s in engine.scenes() if s.path.endswith("cogeo.tif"))
    boxed = get_json(client, ITEMS, q="a beach with waves", bbox=",".join(map(str, scene.bbox)), limit=100)
    assert {f["properties"]["scene"] for f in boxed["features"]} == {scene.id}


def test_every_real_chip_pages_through(client, ingested) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    features, _ = follow_pages(client, ITEMS, limit=9)
    assert len({f["id"] for f in features}) == engine.store.count() == len(features)
    assert all(f["properties"].get("caption") for f in features)


# -- real clients against a real server ----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(ingested) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app served by uvicorn on 127.0.0.1 in a thread, on the ingested store."""
    engine, _ = ingested
    with serving(create_app(engine)) as url:
        yield f"{url}/ogc"


def _gdal(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian: apt-get install -y gdal-bin)")
    return path


def test_gdal_ogrinfo_and_ogr2ogr_read_the_collection(server: str, ingested, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    info = subprocess.run(
        [_gdal("ogrinfo"), "-so", f"OAPIF:{server}", "chips"], capture_output=True, text=True, timeout=120
    )
    assert info.returncode == 0, info.stderr
    assert f"Feature Count: {engine.store.count()}" in info.stdout
    assert "Geometry: Polygon" in info.stdout
    assert re.search(r"^caption: String", info.stdout, re.M)
    assert re.search(r"^score: Real", info.stdout, re.M) and re.search(r"^datetime: DateTime", info.stdout, re.M)
    out = tmp_path / "chips.gpkg"
    copy = subprocess.run(
        [_gdal("ogr2ogr"), "-f", "GPKG", str(out), f"OAPIF:{server}", "chips"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert copy.returncode == 0, copy.stderr
    import pyogrio

    meta = pyogrio.read_info(out, layer="chips")
    assert meta["features"] == engine.store.count() and meta["geometry_type"] == "Polygon"
    _, _, _, fields = pyogrio.raw.read(out, layer="chips", columns=["caption"], read_geometry=False)
    assert all(fields[0])
    # A spatial filter goes to the server as bbox.
    scene = next(s for s in engine.scenes() if s.path.endswith("cogeo.tif"))
    w, s, e, n = scene.bbox
    spat = subprocess.run(
        [
            _gdal("ogrinfo"),
            "-ro",
            "-al",
            "-q",
            "-spat",
            str(w),
            str(s),
            str((w + e) / 2),
            str(n),
            f"OAPIF:{server}",
            "chips",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    every = engine.store.browse(limit=10_000)[0]
    expected = sum(shape(h.payload.footprint).intersects(box(w, s, (w + e) / 2, n)) for h in every)
    assert spat.stdout.count("OGRFeature(chips)") == expected > 0


QGIS_SCRIPT = """
import json, os, sys
from qgis.core import (
    QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsDataSourceUri, QgsFillSymbol,
    QgsMapRendererParallelJob, QgsMapSettings, QgsPalLayerSettings, QgsProject, QgsRasterLayer, QgsRectangle,
    QgsTextBufferSettings, QgsTextFormat, QgsVectorLayer, QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtCore import QEventLoop, QSize
from qgis.PyQt.QtGui import QColor, QFont, QFontDatabase

ogc, tiles, zmin, zmax, png = sys.argv[1:6]
west, south, east, north = map(float, sys.argv[6:10])
width, height = int(sys.argv[10]), int(sys.argv[11])
outline, label, background = (QColor(*map(int, arg.split(","))) for arg in sys.argv[12:15])
app = QgsApplication([], False)
app.initQgis()
layer = QgsVectorLayer(f"url='{ogc}' typename='chips'", "chips", "OAPIF")
out = {"valid": layer.isValid()}  # (layer.error() crashes QGIS 3.22's Python bindings)
if layer.isValid():
    features = list(layer.getFeatures())
    extent = layer.extent()
    out.update(count=layer.featureCount(), fetched=len(features), fields=layer.fields().names(),
               captions=[f["caption"] for f in features], crs=layer.crs().authid(),
               geometry=[f.geometry().asWkt(5)[:7] for f in features[:1]],
               extent=[extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()])

    # A map: the scene's imagery as an XYZ layer from the same server, the chips over it (outlines, captions).
    uri = QgsDataSourceUri()
    for key, value in (("type", "xyz"), ("url", tiles), ("zmin", zmin), ("zmax", zmax)):
        uri.setParam(key, value)
    scene = QgsRasterLayer(bytes(uri.encodedUri()).decode(), "scene", "wms")
    out["scene_valid"] = scene.isValid()
    layer.renderer().setSymbol(QgsFillSymbol.createSimple({
        "color": "0,0,0,0", "outline_color": outline.name(), "outline_width": "0.7", "outline_width_unit": "MM"}))
    families = QFontDatabase().families()
    if families:  # no fonts (a bare container): no labels
        text = QgsTextFormat()
        text.setFont(QFont("DejaVu Sans" if "DejaVu Sans" in families else families[0]))
        text.setSize(8)
        text.setColor(label)
        halo = QgsTextBufferSettings()
        halo.setEnabled(True)
        halo.setSize(1)
        halo.setColor(QColor(0, 0, 0))
        text.setBuffer(halo)
        labels = QgsPalLayerSettings()
        labels.fieldName = "caption"
        labels.setFormat(text)
        labels.placement = QgsPalLayerSettings.OverPoint
        labels.autoWrapLength = 20
        labels.multilineAlign = QgsPalLayerSettings.MultiCenter
        layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
        layer.setLabelsEnabled(True)
    mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    to_mercator = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), mercator, QgsProject.instance())
    box = to_mercator.transformBoundingBox(QgsRectangle(west, south, east, north))
    half = box.width() * height / width / 2  # the scene's full width; its middle rows fill the height
    middle = box.center().y()
    settings = QgsMapSettings()
    settings.setLayers([layer, scene])  # top first
    settings.setDestinationCrs(mercator)
    settings.setOutputSize(QSize(width, height))
    settings.setExtent(QgsRectangle(box.xMinimum(), middle - half, box.xMaximum(), middle + half))
    settings.setBackgroundColor(background)
    job = QgsMapRendererParallelJob(settings)
    loop = QEventLoop()
    job.finished.connect(loop.quit)
    job.start()
    loop.exec_()
    placed = job.takeLabelingResults()
    out.update(saved=job.renderedImage().save(png, "PNG"), render_errors=[e.message for e in job.errors()],
               labelled=bool(families),
               labels=[p.labelText for p in placed.labelsWithinRect(settings.visibleExtent())] if placed else [])
print(json.dumps(out), flush=True)
os._exit(0)  # QGIS 3.22's Python teardown (exitQgis with live features) can segfault after the work is done
"""
MAP_SCENE = "rio-tiler/pix4d_alpha_nodata.tif"
"""The scene under the chips in the QGIS map: a drone scene (UTM 50S, about 0.3 m) of fields and a road."""
MAP_SIZE = (1000, 700)
OUTLINE, LABEL, BACKGROUND = (255, 48, 160), (255, 255, 0), (255, 255, 255)
DOCS_IMAGE = Path(__file__).resolve().parents[1] / "docs" / "qgis.png"
DOCS_IMAGE_MAX_BYTES = 300_000


def _near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int) -> np.ndarray:
    return np.abs(pixels - np.array(colour)).max(axis=2) <= tolerance  # type: ignore[no-any-return]


def save_docs_image(path: Path) -> None:
    """docs/qgis.png (a palette PNG of at most 300 KB: as many colours as fit) when missing or asked for."""
    if DOCS_IMAGE.exists() and os.environ.get("GEOSEARCH_UPDATE_DOCS") != "1":
        return
    from PIL import Image

    image = Image.open(path).convert("RGB")
    for colours in (256, 192, 128, 96, 80, 64, 48, 32):
        buffer = io.BytesIO()
        image.quantize(colors=colours, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= DOCS_IMAGE_MAX_BYTES:
            break
    assert buffer.tell() <= DOCS_IMAGE_MAX_BYTES, f"the QGIS map is {buffer.tell()} bytes"
    DOCS_IMAGE.parent.mkdir(exist_ok=True)
    DOCS_IMAGE.write_bytes(buffer.getvalue())


def test_qgis_loads_the_collection_and_draws_it_over_the_scene(server: str, ingested, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """QGIS headless: the OAPIF layer (every chip, caption and all), then a map of it over one scene's imagery
    (the XYZ tiles of the same server), captions as labels; saved as qgis_map.png, and as docs/qgis.png."""
    engine, _ = ingested
    probe = subprocess.run(["/usr/bin/python3", "-c", "import qgis.core"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(
            f"QGIS Python bindings not installed (Debian: apt-get install -y python3-qgis): {probe.stderr[-200:]}"
        )
    scene = next(s for s in engine.scenes() if s.path.endswith(MAP_SCENE))
    root = server.removesuffix("/ogc")
    with urllib.request.urlopen(f"{root}/scenes/{scene.id}/tilejson.json", timeout=30) as response:
        tilejson = json.load(response)
    assert tilejson["tiles"] == [f"{root}/scenes/{scene.id}/tiles/{{z}}/{{x}}/{{y}}.png"]
    script = tmp_path / "qgis_layer.py"
    script.write_text(QGIS_SCRIPT)
    png = tmp_path / "qgis_map.png"
    env = {
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_RUNTIME_DIR": str(tmp_path),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    args = [server, tilejson["tiles"][0], str(tilejson["minzoom"]), str(tilejson["maxzoom"]), str(png)]
    args += [str(v) for v in (*scene.bbox, *MAP_SIZE)] + [",".join(map(str, c)) for c in (OUTLINE, LABEL, BACKGROUND)]
    run = subprocess.run(["/usr/bin/python3", str(script), *args], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    layer = json.loads(run.stdout.strip().splitlines()[-1])
    assert layer["valid"], run.stderr[-2000:]
    total = engine.store.count()
    assert layer["count"] == layer["fetched"] == total
    assert "caption" in layer["fields"] and all(layer["captions"])
    assert layer["crs"] in ("EPSG:4326", "OGC:CRS84") and layer["geometry"] == ["Polygon"]
    footprints = [shape(h.payload.footprint) for h in engine.store.browse(limit=10_000)[0]]
    bounds = np.array([f.bounds for f in footprints])
    union = [bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max()]
    assert layer["extent"] == pytest.approx(union, abs=1e-6)

    # The map: the scene's imagery fills it, the chip outlines and (with fonts) the captions are drawn on it.
    assert layer["scene_valid"] and layer["saved"] and layer["render_errors"] == [], run.stderr[-2000:]
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == MAP_SIZE
        pixels = np.asarray(image.convert("RGB")).astype(int)
    outline = _near(pixels, OUTLINE, 10)
    imagery = ~(_near(pixels, BACKGROUND, 6) | outline | _near(pixels, LABEL, 30))
    assert imagery.mean() > 0.8, f"only {imagery.mean():.0%} of the map is imagery"
    assert len(np.unique(pixels[imagery], axis=0)) > 10_000  # a photograph, not a flat fill
    assert outline.sum() > 5_000 and outline[:, : MAP_SIZE[0] // 2].any() and outline[:, MAP_SIZE[0] // 2 :].any()
    if layer["labelled"]:
        chips = engine.store.browse(limit=10_000)[0]
        scene_captions = {h.payload.caption for h in chips if h.payload.scene_id == scene.id}
        assert layer["labels"] and {" ".join(t.split()) for t in layer["labels"]} <= scene_captions
        assert _near(pixels, LABEL, 30).sum() > 200
    save_docs_image(png)
