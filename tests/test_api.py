"""The HTTP API through Litestar's test client, on a store holding the real sample scenes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient
from PIL import Image
from shapely.geometry import box, shape

from geosearch.api import create_app
from geosearch.tilers import render_chip


@pytest.fixture(scope="module")
def client(ingested) -> Iterator[TestClient[Any]]:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    with TestClient(create_app(engine)) as test_client:
        yield test_client


def scene_bbox(engine, name: str) -> tuple[str, list[float]]:  # type: ignore[no-untyped-def]
    scene = next(s for s in engine.scenes() if s.path.endswith(name))
    return scene.id, scene.bbox


def assert_feature_collection(body: dict[str, Any]) -> list[dict[str, Any]]:
    assert body["type"] == "FeatureCollection"
    for feature in body["features"]:
        assert feature["type"] == "Feature"
        assert feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in ring)
        for key in ("id", "score", "caption", "scene", "window", "gsd", "chip_url"):
            assert key in feature["properties"], key
    return list(body["features"])


def test_search_ranks_by_similarity(client, ingested) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    response = client.get("/search", params={"q": "a road through mountains", "limit": 7})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    features = assert_feature_collection(response.json())
    assert len(features) == 7
    scores = [f["properties"]["score"] for f in features]
    assert scores == sorted(scores, reverse=True)
    # The same ranking as brute force over every stored chip.
    query = engine.embedder.encode_texts(["a road through mountains"])[0]
    ids = [h.id for h in engine.store.browse(limit=1000)[0]]
    vectors = np.stack([engine.store.get_vector(i) for i in ids])
    best = [ids[i] for i in np.argsort(-(vectors @ query))[:7]]
    assert [f["id"] for f in features] == best
    # Relevance: the share of the embedder's reference images each hit outscores, monotone in score.
    relevance = [f["properties"]["relevance"] for f in features]
    assert all(0.0 <= r <= 1.0 for r in relevance)
    assert relevance == sorted(relevance, reverse=True)
    reference = engine.embedder.relevance.reference @ query
    assert relevance[0] == pytest.approx(float((reference <= scores[0]).mean()), abs=1e-3)


def test_search_bbox_returns_only_intersecting_footprints(client, ingested) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    scene_id, (w, s, e, n) = scene_bbox(engine, "cogeo.tif")
    # The western half of the scene.
    bbox = (w, s, (w + e) / 2, n)
    response = client.get("/search", params={"q": "trees", "bbox": ",".join(map(str, bbox)), "limit": 1000})
    features = assert_feature_collection(response.json())
    assert features
    area = box(*bbox)
    assert all(shape(f["geometry"]).intersects(area) for f in features)
    assert {f["properties"]["scene"] for f in features} == {scene_id}
    # Exactly the chips whose footprints intersect, no more, no fewer.
    every = engine.store.browse(scene=scene_id, limit=1000)[0]
    expected = {h.id for h in every if shape(h.payload.footprint).intersects(area)}
    assert {f["id"] for f in features} == expected
    assert len(expected) < len(every)


def test_search_without_bbox_spans_scenes(client, ingested) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/search", params={"q": "buildings", "limit": 1000})
    features = assert_feature_collection(response.json())
    assert len(features) == ingested[1].chips
    assert len({f["properties"]["scene"] for f in features}) == len(ingested[1].scenes)


def test_post_search_and_more_like_this(client) -> None:  # type: ignore[no-untyped-def]
    first = client.post("/search", json={"q": "river", "limit": 3}).json()["features"][0]
    response = client.post("/search", json={"like": first["id"], "limit": 5})
    assert response.status_code == 200
    features = assert_feature_collection(response.json())
    assert len(features) == 5
    assert first["id"] not in {f["id"] for f in features}
    assert all(f["properties"]["relevance"] is None for f in features)  # defined for text queries only


def test_captions_paging_covers_each_chip_once(client, ingested) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    _, bbox = scene_bbox(engine, "RGB.byte.tif")
    url: str | None = "/captions?" + "bbox=" + ",".join(map(str, bbox)) + "&limit=4"
    seen: list[str] = []
    pages = 0
    while url:
        body = client.get(url).json()
        features = assert_feature_collection(body)
        assert len(features) <= 4
        assert all(f["properties"]["caption"] for f in features)
        seen += [f["id"] for f in features]
        url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
        pages += 1
        assert pages < 100
    area = box(*bbox)
    expected = {h.id for h in engine.store.browse(limit=1000)[0] if shape(h.payload.footprint).intersects(area)}
    assert len(seen) == len(set(seen))
    assert set(seen) == expected
    assert pages > 1


def test_chip_png_matches_the_ingested_pixels(client, ingested) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    feature = client.get("/search", params={"q": "forest", "limit": 1}).json()["features"][0]
    response = client.get(feature["properties"]["chip_url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(response.content)))
    assert pixels.shape == (224, 224, 3)
    assert np.array_equal(pixels, render_chip(engine.chip(feature["id"]).payload))


def test_scenes_health_and_openapi(client, ingested) -> None:  # type: ignore[no-untyped-def]
    scenes = client.get("/scenes").json()["scenes"]
    assert len(scenes) == len(ingested[1].scenes)
    one = client.get(f"/scenes/{scenes[0]['id']}").json()
    assert one["id"] == scenes[0]["id"] and one["chips"] > 0
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["chips"] == ingested[1].chips
    schema = client.get("/schema/openapi.json").json()
    assert {"/search", "/captions", "/scenes", "/health"} <= set(schema["paths"])


def test_cors_for_browser_map_clients(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/health", headers={"Origin": "http://localhost:5173"})
    assert response.headers.get("access-control-allow-origin") in ("*", "http://localhost:5173")


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "reason"),
    [
        ("GET", "/search?q=road&bbox=1,2,3", None, 400, "4 numbers"),
        ("GET", "/search?q=road&bbox=0,-91,1,1", None, 400, "latitude"),
        ("GET", "/search?q=road&bbox=a,b,c,d", None, 400, "numbers"),
        ("GET", "/search?q=road&bbox=0,10,1,5", None, 400, "north"),
        ("GET", "/search?q=", None, 400, "empty"),
        ("GET", "/search", None, 400, "empty"),
        ("GET", "/search?q=road&limit=0", None, 400, "limit"),
        ("GET", "/search?q=road&limit=abc", None, 400, "limit"),
        ("GET", "/search?q=road&datetime=yesterday", None, 400, "datetime"),
        ("GET", "/search?q=road&gsd=2/1", None, 400, "gsd range starts above its end"),
        ("GET", "/search?q=road&gsd=1", None, 400, "gsd must be a range min/max"),
        ("GET", "/search?q=road&gsd=../..", None, 400, "at least one closed end"),
        ("GET", "/search?q=road&gsd=a/2", None, 400, "numbers or '..'"),
        ("POST", "/search", {"q": "road", "gsd": "-1/2"}, 400, "not negative"),
        ("POST", "/search", {"q": "road", "like": "x"}, 400, "exactly one"),
        ("POST", "/search", {"limit": 3}, 400, "exactly one"),
        ("POST", "/search", {"q": "road", "colour": "red"}, 400, "colour"),
        ("POST", "/search", {"like": "00000000-0000-0000-0000-000000000000"}, 404, "no chip"),
        ("GET", "/chips/not-a-chip.png", None, 404, "no chip"),
        ("GET", "/chips/00000000-0000-0000-0000-000000000000.png", None, 404, "no chip"),
        ("GET", "/scenes/nope", None, 404, "no scene"),
        ("DELETE", "/scenes/nope", None, 404, "no scene"),
        ("GET", "/captions?bbox=0,0,0", None, 400, "4 numbers"),
    ],
)
def test_errors_are_4xx_with_a_reason(client, method, url, body, status, reason) -> None:  # type: ignore[no-untyped-def]
    response = client.request(method, url, json=body)
    assert response.status_code == status, response.text
    detail = response.json()
    text = (str(detail.get("detail", "")) + str(detail.get("extra", ""))).lower()
    assert reason.lower() in text, detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.5/2", (0.5, 2.0)), ("../2", (None, 2.0)), ("0.5/..", (0.5, None)), ("/2", (None, 2.0)), ("1/1", (1.0, 1.0))],
)
def test_gsd_range_syntax(text: str, expected: tuple[float | None, float | None]) -> None:
    from geosearch.query import parse_gsd

    assert parse_gsd(text) == expected
    assert parse_gsd(None) is None and parse_gsd(" ") is None


def test_limit_is_capped(client, ingested) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/search", params={"q": "road", "limit": 5000})
    assert response.status_code == 200
    assert len(response.json()["features"]) == min(1000, ingested[1].chips)


def test_delete_scene_over_http(fresh_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    from geosearch.ingest import IngestOptions, ingest

    report = ingest(fresh_engine, [scenes_dir / "rio-tiler" / "cog_rgb.tif"], IngestOptions(captions=False))
    scene_id = report.scenes[0].scene_id
    with TestClient(create_app(fresh_engine)) as client:
        response = client.delete(f"/scenes/{scene_id}")
        assert response.status_code == 200
        assert response.json()["deleted_chips"] == report.chips > 0
        assert client.get(f"/scenes/{scene_id}").status_code == 404
        assert client.get("/health").json()["chips"] == 0


def test_plugin_mounts_into_another_app(ingested) -> None:  # type: ignore[no-untyped-def]
    from litestar import Litestar, get

    from geosearch.api import GeoSearchMount

    @get("/", sync_to_thread=False)
    def home() -> str:
        return "my map app"

    app = Litestar([home], plugins=[GeoSearchMount(ingested[0], path="/geo")])
    with TestClient(app) as client:
        assert client.get("/").text == "my map app"
        features = client.get("/geo/search", params={"q": "road", "limit": 2}).json()["features"]
        assert len(features) == 2
        assert "/geo/chips/" in features[0]["properties"]["chip_url"]
        assert client.get("/geo/search", params={"q": "road", "bbox": "1,2"}).status_code == 400
