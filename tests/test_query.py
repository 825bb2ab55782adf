"""One parser per value: bbox and datetime mean the same through `parse_*`, `ChipStore.search`, the HTTP
API (``/search`` and ``/ogc``) and ``geosearch search``; the datetime boundaries are checked on real
GeoTIFFs whose acquisition times sit exactly on them (real tiny model, real embedded store, no mocks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from litestar.testing import TestClient
from rasterio.transform import from_origin

from geosearch.errors import InvalidInput
from geosearch.query import parse_bbox, parse_datetime

# ---- the datetime grammar ------------------------------------------------------------------------

# The valid RFC 3339 date-times STAC API's implementation notes list, and what they name.
STAC_DATETIMES = [
    ("1990-12-31T23:59:59Z", "1990-12-31T23:59:59.000000Z"),
    ("1990-12-31T23:59:23.123Z", "1990-12-31T23:59:23.123000Z"),
    ("1996-12-19T16:39:57-08:00", "1996-12-20T00:39:57.000000Z"),
    ("1937-01-01T12:00:27.87+01:00", "1937-01-01T11:00:27.870000Z"),
    ("1985-04-12t23:20:50.5202020z", "1985-04-12T23:20:50.520202Z"),
]


@pytest.mark.parametrize(("text", "instant"), STAC_DATETIMES)
def test_a_date_time_is_that_instant_in_utc(text: str, instant: str) -> None:
    assert parse_datetime(text) == (instant, instant)


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("/1990-12-31T23:59:59Z", (None, "1990-12-31T23:59:59.000000Z")),
        ("../1990-12-31T23:59:59Z", (None, "1990-12-31T23:59:59.000000Z")),
        ("1990-12-31T23:59:59Z/", ("1990-12-31T23:59:59.000000Z", None)),
        ("1990-12-31T23:59:59Z/..", ("1990-12-31T23:59:59.000000Z", None)),
        ("1990-12-31T23:59:59Z/1991-12-31T23:59:59Z", ("1990-12-31T23:59:59.000000Z", "1991-12-31T23:59:59.000000Z")),
        # Dates: the whole UTC day, as a start, an end or alone.
        ("2022-01-01/2022-03-10", ("2022-01-01T00:00:00.000000Z", "2022-03-10T23:59:59.999999Z")),
        ("2022-03-10", ("2022-03-10T00:00:00.000000Z", "2022-03-10T23:59:59.999999Z")),
        ("../2022-03-10", (None, "2022-03-10T23:59:59.999999Z")),
        ("2022-03-10/..", ("2022-03-10T00:00:00.000000Z", None)),
        ("2021-12-31T23:59:59Z/2022-01-01", ("2021-12-31T23:59:59.000000Z", "2022-01-01T23:59:59.999999Z")),
        ("9999-12-31", ("9999-12-31T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z")),
        # No offset: UTC. A space for the T (RFC 3339 allows it), blanks around the value.
        (" 2022-03-10 12:00:00 ", ("2022-03-10T12:00:00.000000Z", "2022-03-10T12:00:00.000000Z")),
        ("2022-03-10T12:00:00-00:00", ("2022-03-10T12:00:00.000000Z", "2022-03-10T12:00:00.000000Z")),
        ("", None),
        ("  ", None),
    ],
)
def test_intervals(text: str, interval: tuple[str | None, str | None] | None) -> None:
    assert parse_datetime(text) == interval
    if interval is not None:
        assert parse_datetime(interval) == interval  # the written form parses back to itself
        assert parse_datetime("/".join(end or ".." for end in interval)) == interval


def test_the_pair_form_is_the_same_grammar() -> None:
    assert parse_datetime(("2022-01-01", "2022-03-10")) == parse_datetime("2022-01-01/2022-03-10")
    assert parse_datetime(["2022-03-10T12:00:00+01:00", ".."]) == parse_datetime("2022-03-10T11:00:00Z/")
    assert parse_datetime((None, None)) == (None, None)  # the store's "has a datetime"
    assert parse_datetime(None) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday", "RFC 3339"),
        ("../..", "one closed end"),
        ("/", "one closed end"),
        ("2022-03-11/2022-03-10", "starts after it ends"),
        ("2022-03-10T12:00:01Z/2022-03-10T12:00:00Z", "starts after it ends"),
        ("2022-02-30", "not a valid date"),
        ("2022-03-10T24:00:00Z", "not a valid date"),
        ("2022-03-10T12:00:00+24:00", "not a valid date"),
        ("0001-01-01T00:00:00+01:00", "not a valid date"),
        ("2022-03-10T12:00Z", "RFC 3339"),  # RFC 3339 needs the seconds
        ("2022-03-10T12:00:00+0100", "RFC 3339"),  # and a colon in the offset
        ("20220310", "RFC 3339"),
        ("2022-03", "RFC 3339"),
        ("2022-01-01/2022-02-01/2022-03-01", "RFC 3339"),
        (("2022-01-01",), "pair"),
        ((1, 2), "pair"),
    ],
)
def test_bad_datetimes(value: Any, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_datetime(value)


# ---- the bbox grammar ----------------------------------------------------------------------------


def test_bbox_text_and_numbers_agree() -> None:
    assert parse_bbox("170,-20,-170,-10") == (170.0, -20.0, -170.0, -10.0)  # crosses the antimeridian
    assert parse_bbox(" 1, 2 ,3,4") == parse_bbox([1, 2, 3, 4]) == parse_bbox((1.0, 2.0, 3.0, 4.0)) == (1, 2, 3, 4)
    assert parse_bbox("-180,-90,180,90") == (-180.0, -90.0, 180.0, 90.0)
    assert parse_bbox(None) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1,2,3", "4 numbers"),
        ((0, 0, 1), "4 numbers"),
        ("a,b,c,d", "numbers"),
        ((0, 0, float("nan"), 1), "finite"),
        ("0,0,inf,1", "finite"),
        ((-181, 0, 0, 1), "longitude"),
        ((0, -91, 1, 0), "latitude"),
        ((0, 5, 1, 4), "north of"),
    ],
)
def test_bad_bboxes(value: Any, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_bbox(value)


# ---- the same chips through every path -----------------------------------------------------------

SCENE_TIMES = {
    # label: (GDAL metadata item, value as written in the GeoTIFF, the instant it names)
    "before": ("TIFFTAG_DATETIME", "2021:12:31 23:59:59"),  # 2021-12-31T23:59:59Z
    "first": ("TIFFTAG_DATETIME", "2022:01:01 00:00:00"),  # 2022-01-01T00:00:00Z
    "tenth": ("TIFFTAG_DATETIME", "2022:03:10 00:00:00"),  # 2022-03-10T00:00:00Z
    "last": ("ACQUISITIONDATETIME", "2022-03-10T23:59:59.999999Z"),  # the last microsecond of 10 March
    "next": ("TIFFTAG_DATETIME", "2022:03:11 00:00:00"),  # 2022-03-11T00:00:00Z
    "offset": ("ACQUISITIONDATETIME", "2022-03-10T20:00:00-04:00"),  # 2022-03-11T00:00:00Z, 10 March locally
}

CASES = [
    ("2022-01-01/2022-03-10", {"first", "tenth", "last"}),
    ("2022-03-10", {"tenth", "last"}),
    ("2022-03-10T23:59:59.999999Z", {"last"}),
    ("2022-03-11T00:00:00Z", {"next", "offset"}),
    ("2022-03-10T20:00:00-04:00", {"next", "offset"}),
    ("2022-03-11T01:00:00+01:00", {"next", "offset"}),
    ("2022-01-01T00:00:00z/2022-03-10T00:00:00Z", {"first", "tenth"}),
    ("2021-12-31T23:59:59Z/2022-01-01", {"before", "first"}),
    ("../2021-12-31", {"before"}),
    ("/2022-01-01T00:00:00Z", {"before", "first"}),
    ("2022-03-11/..", {"next", "offset"}),
    ("2022-03-10T23:59:59.999999Z/", {"last", "next", "offset"}),
]


def _write_scene(path: Path, index: int, item: str, value: str) -> Path:
    """A 224-pixel RGB GeoTIFF (one chip) with its acquisition time in a GDAL metadata item."""
    data = np.random.default_rng(index).integers(0, 256, size=(3, 224, 224), dtype=np.uint8)
    profile = {
        "driver": "GTiff",
        "width": 224,
        "height": 224,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:4326",
        "transform": from_origin(10.0 + index, 45.0, 0.001, 0.001),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**{item: value})
    return path


@dataclass
class Dated:
    store: Path
    model: str
    labels: dict[str, str]
    """scene id -> label"""


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory, tiny_clip_spec: str) -> Dated:
    from geosearch import load_embedder
    from geosearch.engine import Engine
    from geosearch.ingest import IngestOptions, ingest
    from geosearch.store import open_store

    folder = tmp_path_factory.mktemp("dated")
    paths = {
        label: _write_scene(folder / f"{label}.tif", i, item, value)
        for i, (label, (item, value)) in enumerate(SCENE_TIMES.items())
    }
    embedder = load_embedder(tiny_clip_spec, device="cpu")
    store_dir = folder / "store"
    with Engine(embedder, open_store(store_dir, model_id=embedder.model_id, dim=embedder.dim)) as engine:
        report = ingest(engine, list(paths.values()), IngestOptions(captions=False))
        assert report.ok, [s.error for s in report.scenes]
        by_path = {Path(s.path).name: s.scene_id for s in report.scenes}
        assert all(s.chips == 1 for s in report.scenes)
    labels = {str(by_path[p.name]): label for label, p in paths.items()}
    return Dated(store_dir, tiny_clip_spec, labels)


@pytest.fixture
def dated_engine(dated: Dated) -> Iterator[Any]:
    from geosearch import load_embedder
    from geosearch.engine import Engine
    from geosearch.store import open_store

    embedder = load_embedder(dated.model, device="cpu")
    with Engine(embedder, open_store(dated.store, model_id=embedder.model_id, dim=embedder.dim, create=False)) as e:
        yield e


def _labels(dated: Dated, scene_ids: list[str]) -> set[str]:
    assert len(scene_ids) == len(set(scene_ids))  # one chip per scene: no chip twice
    return {dated.labels[s] for s in scene_ids}


@pytest.mark.slow
def test_datetime_boundaries_agree_in_the_store_and_over_http(dated: Dated, dated_engine: Any) -> None:
    from geosearch.api import create_app

    vector = dated_engine.embedder.encode_texts(["a field"])[0]
    store = dated_engine.store
    every = _labels(dated, [h.payload.scene_id for h in store.search(vector, limit=100)])
    assert every == set(SCENE_TIMES)
    with TestClient(create_app(dated_engine)) as client:
        for text, expected in CASES:
            interval = parse_datetime(text)
            hits = store.search(vector, limit=100, datetime=text)
            assert _labels(dated, [h.payload.scene_id for h in hits]) == expected, text
            # The parsed pair means the same to the store as the text.
            assert {h.id for h in store.search(vector, limit=100, datetime=interval)} == {h.id for h in hits}, text
            body = client.get("/search", params={"q": "a field", "datetime": text, "limit": 100}).json()
            assert _labels(dated, [f["properties"]["scene"] for f in body["features"]]) == expected, text
            posted = client.post("/search", json={"q": "a field", "datetime": text, "limit": 100}).json()
            assert _labels(dated, [f["properties"]["scene"] for f in posted["features"]]) == expected, text
            for q in ({}, {"q": "a field"}):  # /ogc browses without q and ranks with it
                items = client.get("/ogc/collections/chips/items", params={"datetime": text, "limit": 100, **q})
                assert items.status_code == 200, items.text
                assert _labels(dated, [f["properties"]["scene"] for f in items.json()["features"]]) == expected, text
        # Bad values: the same reason from every path.
        for bad in ("2022-03-11/2022-03-10", "2022-03-10T12:00Z", "../.."):
            with pytest.raises(InvalidInput) as parsed:
                parse_datetime(bad)
            with pytest.raises(InvalidInput) as stored:
                store.search(vector, datetime=bad)
            assert str(stored.value) == str(parsed.value)
            for response in (
                client.get("/search", params={"q": "x", "datetime": bad}),
                client.get("/ogc/collections/chips/items", params={"datetime": bad}),
            ):
                assert response.status_code == 400 and str(parsed.value) in response.text, bad
        with pytest.raises(InvalidInput) as parsed_box:
            parse_bbox("0,5,1,4")
        with pytest.raises(InvalidInput) as stored_box:
            store.search(vector, bbox=(0, 5, 1, 4))
        assert str(stored_box.value) == str(parsed_box.value)
        response = client.get("/search", params={"q": "x", "bbox": "0,5,1,4"})
        assert response.status_code == 400 and str(parsed_box.value) in response.text


@pytest.mark.slow
def test_datetime_boundaries_agree_on_the_command_line(dated: Dated, capsys: pytest.CaptureFixture[str]) -> None:
    """``geosearch search --datetime`` (in-process: the command's own parsing, engine and output)."""
    from geosearch.cli import main

    common = ["--store", str(dated.store), "--model", dated.model, "--device", "cpu", "--limit", "100"]
    for text, expected in CASES:
        assert main(["search", "a field", "--datetime", text, "--geojson", *common]) == 0, text
        body = json.loads(capsys.readouterr().out)
        assert _labels(dated, [f["properties"]["scene"] for f in body["features"]]) == expected, text
    assert main(["search", "a field", "--datetime", "2022-03-11/2022-03-10", *common]) == 2
    assert "starts after it ends" in capsys.readouterr().err
