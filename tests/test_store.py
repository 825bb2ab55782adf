"""Vector store: the same queries against embedded edge and qdrant-client local mode must give the same
answers as an independent numpy/interval reference (real engines, no mocks)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from numpy.typing import NDArray

from geosearch.errors import InvalidInput, ModelMismatch, NotFound, StoreError, StoreLocked
from geosearch.schemas.api import SceneInfo
from geosearch.schemas.chips import ChipPayload, GeoPoint, Window
from geosearch.store import BBox, ChipPoint, ChipStore, chip_id, collection_name, open_store, resolve_store_location

MODEL = "test/clip-rs-32"
DIM = 32
SCENE_DATES: dict[str, str | None] = {
    "s0": "2020-01-15T10:00:00Z",
    "s1": "2021-06-01T00:00:00Z",
    "s2": "2022-03-10T12:30:00Z",
    "s3": "2023-09-30T23:00:00Z",
    "s4": None,
}


@dataclass
class Chip:
    point: ChipPoint
    lon: float
    lat: float
    half: float


EDGE_POINTS = 8  # as tilers.reader.CHIP_EDGE_POINTS


def square(lon: float, lat: float, half: float) -> dict[str, object]:
    """A footprint as the tiler writes a north-up chip's (`tilers.geometry.footprint`): one closed,
    counter-clockwise ring of [lon, lat] pairs from the north-west corner, each edge densified. Across
    the antimeridian its longitudes stay continuous (179.9 -> 180.1), with the first in [-180, 180)."""
    t = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    w, s, e, n = lon - half, lat - half, lon + half, lat + half
    ring = [
        *[(w, n - f * (n - s)) for f in t],  # west edge, southwards
        *[(w + f * (e - w), s) for f in t],  # south edge, eastwards
        *[(e, s + f * (n - s)) for f in t],  # east edge, northwards
        *[(e - f * (e - w), n) for f in t],  # north edge, westwards
    ]
    shift = 360.0 * math.floor((w + 180.0) / 360.0)
    coords = [[float(x - shift), float(y)] for x, y in ring]
    return {"type": "Polygon", "coordinates": [[*coords, coords[0]]]}


def make_chip(
    i: int,
    scene: str,
    lon: float,
    lat: float,
    half: float,
    vec: NDArray[np.float32],
    model: str = MODEL,
    scale: int = 1,
) -> Chip:
    window = Window(col=(i % 50) * 224, row=(i // 50) * 224, width=224, height=224)
    payload = ChipPayload(
        scene_id=scene,
        scene_path=f"/data/{scene}.tif",
        window=window,
        chip_size=224,
        crs="EPSG:4326",
        footprint=square(lon, lat, half),
        centre=GeoPoint(lon=lon, lat=lat),
        gsd=0.6 * scale,
        scale=scale,
        valid_fraction=1.0,
        datetime=SCENE_DATES.get(scene),
        model_id=model,
    )
    return Chip(ChipPoint(chip_id(scene, window, 224, model, scale), vec, payload), lon, lat, half)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> NDArray[np.float32]:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    out: NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def synthetic(n: int = 300, seed: int = 0) -> list[Chip]:
    rng = np.random.default_rng(seed)
    vecs = unit(rng, n)
    chips = []
    for i in range(n):
        scene = f"s{i % 5}"
        if i % 10 == 0:  # near the antimeridian, some footprints crossing it
            lon = float(rng.choice([-1.0, 1.0]) * rng.uniform(179.5, 180.0))
        else:
            lon = float(rng.uniform(-30.0, 30.0))
        lat = float(rng.uniform(-20.0, 20.0))
        scale = (1, 2, 4, 16)[i % 4]  # multi-scale chips: gsd 0.6, 1.2, 2.4, 9.6 m
        chips.append(make_chip(i, scene, lon, lat, float(rng.uniform(0.05, 0.4)), vecs[i], scale=scale))
    return chips


# ---- independent reference (interval arithmetic, no shapely) --------------------------------------
def _lon_overlap(a_w: float, a_e: float, b_w: float, b_e: float) -> bool:
    """Overlap of two longitude arcs given as west→east (west > east wraps), checked on a circle."""

    def arcs(w: float, e: float) -> list[tuple[float, float]]:
        return [(w, e)] if w <= e else [(w, 180.0), (-180.0, e)]

    return any(x0 <= y1 and y0 <= x1 for x0, x1 in arcs(a_w, a_e) for y0, y1 in arcs(b_w, b_e))


def ref_matches(
    c: Chip,
    bbox: BBox | None,
    scene: str | None,
    interval: tuple[str | None, str | None] | None,
    gsd: tuple[float | None, float | None] | None = None,
) -> bool:
    p = c.point.payload
    if scene is not None and p.scene_id != scene:
        return False
    if gsd is not None and not ((gsd[0] is None or p.gsd >= gsd[0]) and (gsd[1] is None or p.gsd <= gsd[1])):
        return False
    if interval is not None:
        if p.datetime is None:
            return False
        lo, hi = interval
        if (lo is not None and p.datetime < lo) or (hi is not None and p.datetime > hi):
            return False
    if bbox is not None:
        w, s, e, n = bbox
        cw = (c.lon - c.half + 180.0) % 360.0 - 180.0
        ce = (c.lon + c.half + 180.0) % 360.0 - 180.0
        if not (c.lat - c.half <= n and s <= c.lat + c.half and _lon_overlap(cw, ce, w, e)):
            return False
    return True


def ref_search(
    chips: list[Chip],
    q: NDArray[np.float32],
    limit: int,
    bbox: BBox | None = None,
    scene: str | None = None,
    interval: tuple[str | None, str | None] | None = None,
    exclude: tuple[str, ...] = (),
    gsd: tuple[float | None, float | None] | None = None,
) -> list[tuple[str, float]]:
    cand = [c for c in chips if c.point.id not in exclude and ref_matches(c, bbox, scene, interval, gsd)]
    scored = [(c.point.id, float(np.dot(c.point.vector, q))) for c in cand]
    return sorted(scored, key=lambda t: -t[1])[:limit]


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(params=["edge", "qdrant-local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChipStore]:
    location = str(tmp_path / "store") if request.param == "edge" else ":memory:"
    with open_store(location, model_id=MODEL, dim=DIM) as s:
        yield s


@pytest.fixture(scope="module")
def chips() -> list[Chip]:
    return synthetic()


@pytest.fixture
def filled(store: ChipStore, chips: list[Chip]) -> ChipStore:
    """A store of its own with the synthetic chips, for tests that write or delete."""
    store.upsert([c.point for c in chips])
    return store


@pytest.fixture(scope="module", params=["edge", "qdrant-local"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, chips: list[Chip]
) -> Iterator[ChipStore]:
    """One filled store per backend, shared read-only (opening an edge store fsyncs several files)."""
    location = str(tmp_path_factory.mktemp("store")) if request.param == "edge" else ":memory:"
    with open_store(location, model_id=MODEL, dim=DIM) as s:
        s.upsert([c.point for c in chips])
        yield s


QUERIES: list[dict[str, Any]] = [
    {},
    {"bbox": (-10.0, -5.0, 10.0, 5.0)},
    {"bbox": (179.0, -20.0, -179.0, 20.0)},  # antimeridian
    {"bbox": (179.9, -20.0, 180.0, 20.0)},  # only footprints wrapping from the west side reach it
    {"bbox": (-180.0, -90.0, 180.0, 90.0)},  # the whole globe: Qdrant's box misses all of it if passed as is
    {"bbox": (0.0, -90.0, 180.0, 90.0)},  # pole to pole
    {"scene": "s2"},
    {"interval": ("2021-01-01", "2022-12-31")},
    {"interval": ("2022-01-01", None)},
    {"interval": (None, None)},
    {"bbox": (-30.0, -20.0, 30.0, 0.0), "scene": "s1", "interval": (None, "2021-06-01T00:00:00Z")},
    {"gsd": (1.0, 3.0)},  # scales 2 and 4 of the multi-scale chips
    {"gsd": (None, 1.2)},  # an open end; the bound itself is inside
    {"gsd": (2.4, None), "bbox": (-10.0, -5.0, 10.0, 5.0)},
]


# ---- congruence -------------------------------------------------------------------------------
@pytest.mark.parametrize("query", QUERIES, ids=lambda q: ",".join(q) or "nofilter")
def test_search_matches_reference(shared: ChipStore, chips: list[Chip], query: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    for q in unit(rng, 5):
        interval, gsd = query.get("interval"), query.get("gsd")
        expected = ref_search(chips, q, 10, query.get("bbox"), query.get("scene"), interval, gsd=gsd)
        hits = shared.search(q, limit=10, bbox=query.get("bbox"), scene=query.get("scene"), datetime=interval, gsd=gsd)
        assert [h.id for h in hits] == [i for i, _ in expected]
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-4)
    assert expected, "the query should match something, or it tests nothing"


def test_search_exclude_and_limit(shared: ChipStore, chips: list[Chip]) -> None:
    q = chips[7].point.vector
    first = shared.search(q, limit=5)
    assert first[0].id == chips[7].point.id and first[0].score == pytest.approx(1.0, abs=1e-5)
    excl = (*[h.id for h in first[:3]], "not-a-uuid")
    expected = ref_search(chips, q, 5, exclude=excl)
    assert [h.id for h in shared.search(q, limit=5, exclude=excl)] == [i for i, _ in expected]
    big = shared.search(q, limit=1000, bbox=(-10.0, -5.0, 10.0, 5.0))
    assert len(big) == len(ref_search(chips, q, 1000, (-10.0, -5.0, 10.0, 5.0)))


def test_hit_payload_roundtrip(shared: ChipStore, chips: list[Chip]) -> None:
    c = chips[3].point
    hit = shared.get(c.id)
    assert hit is not None and hit.payload == c.payload and hit.score is None
    vec = shared.get_vector(c.id)
    assert vec is not None and vec.dtype == np.float32 and np.allclose(vec, c.vector, atol=1e-5)
    assert shared.get("00000000-0000-0000-0000-000000000000") is None
    assert shared.get("nope") is None and shared.get_vector("nope") is None


@pytest.mark.parametrize(
    "kw", [{}, {"bbox": (-10.0, -5.0, 10.0, 5.0)}, {"bbox": (179.0, -20.0, -179.0, 20.0)}, {"scene": "s3"}]
)
def test_browse_pages_cover_each_match_once(shared: ChipStore, chips: list[Chip], kw: dict[str, Any]) -> None:
    expected = {c.point.id for c in chips if ref_matches(c, kw.get("bbox"), kw.get("scene"), None)}
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        hits, token = shared.browse(limit=7, offset=token, **kw)
        assert len(hits) <= 7 and all(h.score is None for h in hits)
        seen += [h.id for h in hits]
        pages += 1
        if token is None:
            break
        assert pages < 200
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert pages > 1
    with pytest.raises(InvalidInput):
        shared.browse(offset="garbage")


@pytest.mark.parametrize(("lon", "lat", "half"), [(10.0, 45.0, 0.3), (179.8, -10.0, 0.3), (-179.9, 5.0, 0.2)])
def test_square_is_a_tiler_footprint(lon: float, lat: float, half: float) -> None:
    """The store tests' footprints are the tiler's: same vertices, order, closure and wrapping."""
    from affine import Affine
    from pyproj import CRS

    from geosearch.tilers import geometry

    size = 224
    transform = Affine(2 * half / size, 0.0, lon - half, 0.0, -2 * half / size, lat + half)
    window = Window(col=0, row=0, width=size, height=size)
    ring = geometry.footprint(transform, geometry.make_transformer(CRS.from_epsg(4326)), window, EDGE_POINTS)
    coords = square(lon, lat, half)["coordinates"]
    assert isinstance(coords, list)
    assert np.allclose(np.asarray(coords[0]), np.asarray(ring), atol=1e-9)


def test_chip_ids_are_stable_and_differ_between_scales() -> None:
    window = Window(col=224, row=448, width=224, height=224)
    # The scale-1 id is the one stores written before multi-scale chips hold.
    assert chip_id("scene", window, 224, MODEL) == chip_id("scene", window, 224, MODEL, 1)
    assert chip_id("scene", window, 224, MODEL) == "feb065b1-7b12-5b8a-88c6-0735c9bf5314"
    ids = {chip_id("scene", window, 224, MODEL, scale) for scale in (1, 2, 4)}
    assert len(ids) == 3


def test_count_delete_and_idempotent_upsert(filled: ChipStore, chips: list[Chip]) -> None:
    n = len(chips)
    assert filled.count() == n and filled.count("s1") == n // 5
    filled.upsert([c.point for c in chips[:50]])  # same ids again
    assert filled.count() == n
    orig = chips[0].point
    changed = ChipPoint(orig.id, orig.vector, msgspec.structs.replace(orig.payload, caption="a river"))
    filled.upsert([changed])
    got = filled.get(changed.id)
    assert got is not None and got.payload.caption == "a river" and filled.count() == n
    filled.put_scene(scene_info("s1"))
    assert filled.delete_scene("s1") == n // 5
    assert filled.count() == n - n // 5 and filled.count("s1") == 0
    assert filled.get_scene("s1") is None
    assert filled.search(chips[1].point.vector, scene="s1") == []
    assert filled.delete_scene("s1") == 0


def scene_info(sid: str) -> SceneInfo:
    return SceneInfo(
        id=sid,
        path=f"/data/{sid}.tif",
        crs="EPSG:32632",
        width=1000,
        height=800,
        chips=60,
        skipped=2,
        bbox=[1.0, 2.0, 3.0, 4.0],
        datetime=SCENE_DATES.get(sid),
        model_id=MODEL,
        ingest_params={"chip_size": 224, "stride": 224, "bands": [3, 2, 1]},
    )


def test_scene_records(store: ChipStore) -> None:
    assert store.list_scenes() == [] and store.get_scene("s0") is None
    for sid in ("s2", "s0", "s4"):
        store.put_scene(scene_info(sid))
    store.put_scene(scene_info("s0"))  # idempotent
    assert [s.id for s in store.list_scenes()] == ["s0", "s2", "s4"]
    assert store.get_scene("s2") == scene_info("s2")


# ---- bbox exactness ---------------------------------------------------------------------------
def test_bbox_is_exact_on_footprints(store: ChipStore) -> None:
    rng = np.random.default_rng(5)
    v = unit(rng, 4)
    a = make_chip(0, "x", 10.5, 0.0, 0.6, v[0])  # centre outside the box, footprint reaches in
    b = make_chip(1, "x", 30.0, 0.0, 0.1, v[1])  # small chip: only the margin box reaches the query
    big = make_chip(2, "x", -50.0, 0.0, 1.0, v[2])  # sets the margin to 1°
    tri = make_chip(3, "x", 20.33, 0.33, 0.0, v[3])
    tri.point.payload.footprint = {"type": "Polygon", "coordinates": [[[20, 0], [21, 0], [20, 1], [20, 0]]]}
    store.upsert([a.point, b.point, big.point, tri.point])
    q = v[0]
    assert [h.id for h in store.search(q, bbox=(9.0, -1.0, 10.0, 1.0))] == [a.point.id]
    assert store.search(q, bbox=(30.5, -0.05, 30.6, 0.05)) == []
    assert store.search(q, bbox=(20.8, 0.8, 21.0, 1.0)) == []  # triangle's bbox, not the triangle
    assert [h.id for h in store.search(q, bbox=(20.4, 0.4, 21.0, 1.0))] == [tri.point.id]
    assert [h.id for h in store.browse(bbox=(9.0, -1.0, 10.0, 1.0))[0]] == [a.point.id]
    assert store.browse(bbox=(30.5, -0.05, 30.6, 0.05)) == ([], None)


def test_overfetch_when_margin_candidates_crowd_out_hits(store: ChipStore) -> None:
    """Many near-duplicates of the query sit just outside the box: the few true hits rank below them."""
    rng = np.random.default_rng(6)
    q = unit(rng, 1)[0]
    decoys = [make_chip(i, "d", 5.15, 0.0, 0.05, q + 0.01 * unit(rng, 1)[0]) for i in range(200)]
    hits_in = [make_chip(1000 + i, "h", 4.9, 0.0, 0.05, unit(rng, 1)[0]) for i in range(3)]
    big = make_chip(2000, "b", 100.0, 0.0, 1.0, unit(rng, 1)[0])
    store.upsert([c.point for c in decoys + hits_in + [big]])
    got = store.search(q, limit=3, bbox=(4.0, -1.0, 5.0, 1.0))
    assert {h.id for h in got} == {c.point.id for c in hits_in}


@pytest.mark.parametrize(
    "bbox",
    [(0, 0, 1), (-181, 0, 0, 1), (0, -91, 1, 0), (0, 5, 1, 4), (0, 0, float("nan"), 1)],
)
def test_invalid_bbox(shared: ChipStore, bbox: Any) -> None:
    with pytest.raises(InvalidInput):
        shared.search(unit(np.random.default_rng(0), 1)[0], bbox=bbox)


def test_invalid_inputs(store: ChipStore, chips: list[Chip]) -> None:
    bad = ChipPoint(chips[0].point.id, np.ones(DIM + 1, dtype=np.float32), chips[0].point.payload)
    with pytest.raises(InvalidInput, match="33"):
        store.upsert([bad])
    with pytest.raises(InvalidInput):
        store.search(np.ones(DIM - 1, dtype=np.float32))
    with pytest.raises(InvalidInput):
        store.search(np.ones(DIM, dtype=np.float32), datetime=("yesterday", None))
    assert store.count() == 0


# ---- recall (edge vs brute force) --------------------------------------------------------------
def clustered(n: int, dim: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, n, 40)] + 0.3 * rng.normal(size=(40, dim)) / np.sqrt(dim)
    return x.astype(np.float32), q.astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "indexed-exact", "forced-hnsw"])
def test_edge_recall(tmp_path: Path, mode: str) -> None:
    n, dim = 3000, 64
    x, queries = clustered(n, dim, seed=2)
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(-60, 60, n), rng.uniform(-40, 40, n)
    chips = [make_chip(i, f"r{i % 3}", float(lon[i]), float(lat[i]), 0.1, x[i], "recall") for i in range(n)]
    # indexed-exact: a graph exists, but the store is small enough to be searched exactly (recall 1);
    # forced-hnsw: every query walks the graph (with ACORN when filtered), and must still reach 0.99.
    index = {"optimize_threshold": 0, "indexing_threshold_kb": 1, "full_scan_threshold_kb": 1, "acorn": False}
    opts: dict[str, Any] = {
        "default": {},
        "indexed-exact": {**index, "hnsw_ef": 10, "hnsw_m": 4},
        "forced-hnsw": {**index, "exact_threshold": 0, "acorn": True},
    }[mode]
    minimum = 1.0 if mode == "indexed-exact" else 0.99
    # ~6 %, ~25 % and ~50 % of the points: a small box once lost most of its recall through filtered HNSW.
    boxes: list[BBox | None] = [None, (-15.0, -10.0, 15.0, 10.0), (-30.0, -20.0, 30.0, 20.0), (-60.0, -40.0, 0.0, 40.0)]
    with open_store(tmp_path / "s", model_id="recall", dim=dim, **opts) as store:
        store.upsert([c.point for c in chips])
        for phase in ("fresh", "indexed"):
            if phase == "indexed":
                store.finish_ingest()
                if mode != "default":
                    assert store.unindexed() == 0  # type: ignore[attr-defined]
            for bbox in boxes:
                found = total = 0
                mask = np.ones(n, dtype=bool)
                if bbox is not None:
                    w, s, e, nn = bbox
                    mask = (lon - 0.1 <= e) & (lon + 0.1 >= w) & (lat - 0.1 <= nn) & (lat + 0.1 >= s)
                for q in queries:
                    scores = np.where(mask, x @ q, -np.inf)
                    want = {chips[i].point.id for i in np.argsort(-scores)[:10]}
                    got = {h.id for h in store.search(q, limit=10, bbox=bbox)}
                    found += len(want & got)
                    total += len(want)
                assert found / total >= minimum, (phase, bbox, found / total)


# ---- lifecycle ----------------------------------------------------------------------------------
def test_reopen_keeps_data_and_margin(tmp_path: Path, chips: list[Chip]) -> None:
    with open_store(tmp_path, model_id=MODEL, dim=DIM) as s:
        s.upsert([c.point for c in chips])
        s.put_scene(scene_info("s0"))
    with pytest.raises(NotFound, match="ingest something first"):
        open_store(tmp_path, model_id="other", dim=DIM, create=False)
    with open_store(tmp_path, model_id=MODEL, dim=DIM, create=False) as s:
        assert s.count() == len(chips) and [x.id for x in s.list_scenes()] == ["s0"]
        q = chips[0].point.vector
        bbox = (179.0, -20.0, -179.0, 20.0)
        assert [h.id for h in s.search(q, bbox=bbox)] == [i for i, _ in ref_search(chips, q, 10, bbox)]


def test_warm_changes_no_result(filled: ChipStore, chips: list[Chip]) -> None:
    rng = np.random.default_rng(4)
    queries = [(q, query.get("bbox")) for q in unit(rng, 3) for query in QUERIES[:4]]
    before = [[h.id for h in filled.search(q, bbox=bbox)] for q, bbox in queries]
    filled.warm()
    assert [[h.id for h in filled.search(q, bbox=bbox)] for q, bbox in queries] == before
    assert before[0] == [i for i, _ in ref_search(chips, queries[0][0], 10)]
    filled.close()
    with pytest.raises(StoreError, match="closed"):
        filled.warm()


@pytest.mark.parametrize("backend", ["edge", "qdrant"])
def test_model_mismatch(tmp_path: Path, backend: str) -> None:
    with open_store(tmp_path, model_id=MODEL, dim=DIM, backend=backend):
        pass
    with pytest.raises(ModelMismatch, match="32-d"):
        open_store(tmp_path, model_id=MODEL, dim=16, backend=backend)
    with open_store(tmp_path, model_id="another-model", dim=16, backend=backend) as other:
        assert other.count() == 0  # one collection per model: no clash
    with pytest.raises(ModelMismatch, match=r"another-model.*test/clip-rs-32|test/clip-rs-32.*another-model"):
        open_store(tmp_path, model_id="another-model", dim=16, backend=backend, collection=collection_name(MODEL))


def test_second_process_gets_store_locked(tmp_path: Path) -> None:
    with open_store(tmp_path, model_id=MODEL, dim=DIM):
        code = textwrap.dedent(
            f"""
            from geosearch.errors import StoreLocked
            from geosearch.store import open_store
            try:
                open_store({str(tmp_path)!r}, model_id={MODEL!r}, dim={DIM})
            except StoreLocked as e:
                print("LOCKED", e)
            """
        )
        # Run outside the checkout: its ./geosearch would shadow the installed package's mapped folders.
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert "LOCKED" in out.stdout, out.stderr
        assert f"is locked by PID {os.getpid()}" in out.stdout
        with pytest.raises(StoreLocked):  # a second open in-process is refused the same way
            open_store(tmp_path, model_id=MODEL, dim=DIM)
    with open_store(tmp_path, model_id=MODEL, dim=DIM) as s:  # released on close
        assert s.count() == 0


def test_concurrent_search_during_ingest(tmp_path: Path, chips: list[Chip]) -> None:
    """Searches racing upserts still return exact answers: whatever else has landed, a chip stored
    before the race is its own top hit inside the box, and every hit is a chip of the box, scored and
    ranked as the reference would."""
    errors: list[BaseException] = []
    bbox = (-30.0, -20.0, 30.0, 20.0)
    vectors = {c.point.id: c.point.vector for c in chips}
    in_box = {c.point.id for c in chips if ref_matches(c, bbox, None, None)}
    with open_store(tmp_path, model_id=MODEL, dim=DIM) as s:
        s.upsert([c.point for c in chips[:50]])

        def searcher() -> None:
            try:
                for c in chips[:40]:
                    q = c.point.vector
                    hits = s.search(q, limit=3, bbox=bbox)
                    assert len(hits) == 3 and {h.id for h in hits} <= in_box
                    scores = [h.score for h in hits if h.score is not None]
                    assert scores == pytest.approx([float(np.dot(vectors[h.id], q)) for h in hits], abs=1e-4)
                    assert scores == sorted(scores, reverse=True)
                    if c.point.id in in_box:
                        assert hits[0].id == c.point.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=searcher) for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(50, len(chips), 25):
            s.upsert([c.point for c in chips[i : i + 25]])
        for t in threads:
            t.join()
        assert not errors and s.count() == len(chips)


def test_location_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.setenv("GEOSEARCH_STORE", str(tmp_path))
    loc = resolve_store_location()
    assert loc.backend == "edge" and loc.path == tmp_path
    assert resolve_store_location(":memory:").backend == "qdrant"
    monkeypatch.setenv("QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("QDRANT_API_KEY", "k")
    loc = resolve_store_location()
    assert (loc.backend, loc.url, loc.api_key) == ("qdrant", "http://qdrant:6333", "k")
    assert resolve_store_location(tmp_path).backend == "edge"  # an explicit dir wins over the env
    with pytest.raises(InvalidInput):
        open_store(tmp_path, model_id=MODEL, dim=DIM, no_such_option=1)


# ---- the cell pre-index -------------------------------------------------------------------------
def test_box_cells_bound_the_centres_inside() -> None:
    """Every centre inside a box lies in one of the box's cells; every centre in an 'inner' cell lies
    inside the box: the two posting-list sums bound the box's matches from both sides. Centres on cell
    edges (whole and tenth degrees) are among them: floating point may put them on either side."""
    from geosearch.store.geo import CELL_LEVELS, MAX_CELLS, box_cells, centre_cells

    rng = np.random.default_rng(5)
    lon, lat = rng.uniform(-180, 180, 20_000), rng.uniform(-90, 90, 20_000)
    lon[:2000], lon[2000:4000] = np.round(lon[:2000]), np.round(lon[2000:4000], 1)  # on 1° and 0.1° edges
    lat[3000:5000], lat[5000:7000] = np.round(lat[3000:5000]), np.round(lat[5000:7000], 1)
    cells = np.array([centre_cells(float(a), float(b)) for a, b in zip(lon, lat, strict=True)])
    assert cells.shape == (20_000, len(CELL_LEVELS))
    for size in (0.05, 0.3, 2.0, 12.0, 40.0):
        for _ in range(10):
            w, s = rng.uniform(-180, 180 - size), rng.uniform(-90, 90 - size / 2)
            if size >= 2.0:  # edges on cell edges too
                w, s = round(w, 1), round(s, 1)
            box = (w, s, w + size, s + size / 2)
            outer, inner = box_cells([box])
            assert len(outer) <= MAX_CELLS and set(inner) <= set(outer)
            inside = (lon >= box[0]) & (lon <= box[2]) & (lat >= box[1]) & (lat <= box[3])
            in_outer = np.isin(cells, outer).any(axis=1)
            in_inner = np.isin(cells, inner).any(axis=1)
            assert not (inside & ~in_outer).any()
            assert not (in_inner & ~inside).any()
    assert box_cells([(-180.0, -90.0, 180.0, 90.0)]) == ((), ())  # too many cells even at 1°


@pytest.mark.parametrize("size", [0.5, 3.0, 8.0, 20.0])
def test_box_cells_are_tight(size: float) -> None:
    """Whole coarse cells inside, fine cells along the edges: the cover holds little more than the box,
    so its posting-list sum alone can route a search (exact or HNSW) without counting the box."""
    from geosearch.store.geo import box_cells, centre_cells

    rng = np.random.default_rng(9)
    lon, lat = rng.uniform(-30, 30, 200_000), rng.uniform(-20, 20, 200_000)  # ~170 centres per deg²
    cells = np.array([centre_cells(float(a), float(b)) for a, b in zip(lon, lat, strict=True)])
    for _ in range(5):
        w, s = rng.uniform(-29, 29 - size), rng.uniform(-19, 19 - size / 2)
        box = (w, s, w + size, s + size / 2)
        outer, inner = box_cells([box])
        inside = ((lon >= box[0]) & (lon <= box[2]) & (lat >= box[1]) & (lat <= box[3])).sum()
        upper = np.isin(cells, outer).sum()  # a centre matches one id per level, each level once
        lower = np.isin(cells, inner).sum()
        assert inside <= upper <= 1.25 * inside + 50, (box, inside, upper)
        assert 0.8 * inside - 50 <= lower <= inside, (box, inside, lower)


def test_small_and_large_boxes_skip_the_exact_count(tmp_path: Path) -> None:
    """With the cell bounds a small box goes straight to exact search and a large one straight to
    HNSW; only boxes near the threshold are counted. Results stay exact either way."""
    rng = np.random.default_rng(6)
    n = 3000
    lon, lat = rng.uniform(-60, 60, n), rng.uniform(-40, 40, n)
    vecs = unit(rng, n)
    chips = [make_chip(i, f"c{i % 3}", float(lon[i]), float(lat[i]), 0.01, vecs[i]) for i in range(n)]
    with open_store(tmp_path / "s", model_id=MODEL, dim=DIM, exact_threshold=100) as store:
        store.upsert([c.point for c in chips])
        counted: list[int] = []
        real_count = store._count

        def spy(where: Any, *, exact: bool) -> int:
            if exact:  # estimates are cheap; only exact counts are what the cell bounds avoid
                counted.append(1)
            return int(real_count(where, exact=exact))

        store._count = spy  # type: ignore[method-assign]
        routes: list[bool] = []
        real_query = store._query

        def route(vector: Any, where: Any, limit: int, exact: bool) -> Any:
            routes.append(exact)
            return real_query(vector, where, limit, exact)

        store._query = route  # type: ignore[method-assign]
        q = vecs[0]
        # ~3 matches (0.1° cells: upper bound ~3) and ~125 (cover ~130 < 2.5 x 100): exact; ~1,100
        # (too many fine cells: the 1° cells wholly inside hold ~1,050 > 100): HNSW.
        boxes = {(0.0, 0.0, 3.0, 3.0): True, (-10.0, -10.0, 10.0, 10.0): True, (-30.0, -30.0, 30.0, 30.0): False}
        for bbox, exact in boxes.items():
            assert store._where(bbox, None, None)[0].cells, bbox
            counted.clear()
            routes.clear()
            hits = store.search(q, limit=10, bbox=bbox)
            assert [h.id for h in hits] == [i for i, _ in ref_search(chips, q, 10, bbox)]
            assert not counted and set(routes) == {exact}, (bbox, routes)


def test_store_from_before_the_cell_index_still_answers_exactly(tmp_path: Path, chips: list[Chip]) -> None:
    """A collection created without `cell_levels` gets no cell payloads and no cell conditions."""
    import json

    with open_store(tmp_path, model_id=MODEL, dim=DIM) as s:
        location = Path(s.location)
    meta = json.loads((location / "meta.json").read_text())
    del meta["cell_levels"]
    (location / "meta.json").write_text(json.dumps(meta))
    with open_store(tmp_path, model_id=MODEL, dim=DIM, create=False) as s:
        s.upsert([c.point for c in chips])
        rows, _ = s._scroll(s._where(None, None, None)[0], 5, None)
        assert rows and all("cell" not in r.payload for r in rows)
        rng = np.random.default_rng(8)
        for query in QUERIES[1:6]:
            q = unit(rng, 1)[0]
            hits = s.search(q, limit=10, bbox=query["bbox"])
            assert [h.id for h in hits] == [i for i, _ in ref_search(chips, q, 10, query["bbox"])]
