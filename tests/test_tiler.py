"""Tiler tests on the real shared scenes plus tiny generated edge-case rasters (no mocks)."""

from __future__ import annotations

import math
import os
import shutil
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import rasterio
import rasterio.warp
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.windows import Window as RioWindow
from shapely.geometry import Polygon
from support import write_tif

from geosearch.errors import InvalidInput, SceneError
from geosearch.schemas.chips import ChipPayload, Window
from geosearch.tilers import ChipSpec, Scene, TileOptions, open_scene, render_chip
from geosearch.tilers.bands import auto_bands
from geosearch.tilers.grid import axis_offsets

# name -> (crs, bands used, uint8?)
SCENES: dict[str, tuple[str, tuple[int, int, int], bool]] = {
    "rasterio/cogeo.tif": ("EPSG:3857", (1, 2, 3), True),
    "rasterio/RGB.byte.tif": ("EPSG:32618", (1, 2, 3), True),
    "rasterio/alpha.tif": ("EPSG:3857", (1, 2, 3), True),
    "rasterio/shade.tif": ("EPSG:3857", (1, 1, 1), True),
    "rio-tiler/201404_13SED190110_201404_0x1500m_CL_1.tif": ("EPSG:26913", (1, 2, 3), True),
    "rio-tiler/201404_13SED190110_201404_0x1500m_CL_1_nodata.tif": ("EPSG:26913", (1, 2, 3), True),
    "rio-tiler/cog_rgb.tif": ("EPSG:26913", (1, 2, 3), True),
    "rio-tiler/pix4d_alpha_nodata.tif": ("EPSG:32750", (1, 2, 3), True),
    "rio-tiler/mosaic_cog1.tif": ("EPSG:32618", (1, 2, 3), False),
    "rio-tiler/mosaic_cog3.tif": ("EPSG:4326", (1, 2, 3), False),
    "rio-tiler/cog.tif": ("EPSG:32621", (1, 1, 1), False),
    "rio-tiler/cog_scale_epsg4326.tif": ("EPSG:4326", (1, 1, 1), False),
    "rio-color/rgb16.tif": ("EPSG:32620", (1, 2, 3), False),
    "rio-color/rgb8.tif": ("EPSG:32620", (1, 2, 3), True),
}


def expected_starts(size: int, window: int, stride: int) -> list[int]:
    """Independent edge-shifted window starts: ceil-many regular steps, the last one flush with the edge."""
    if size <= window:
        return [0]
    n = math.ceil((size - window) / stride) + 1
    return [min(i * stride, size - window) for i in range(n)]


# -- grid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "window", "stride"), [(1024, 224, 224), (896, 224, 224), (900, 224, 100), (100, 224, 224), (224, 224, 1)]
)
def test_axis_offsets_shift_the_last_window_inside(size: int, window: int, stride: int) -> None:
    starts = axis_offsets(size, window, stride)
    assert starts == expected_starts(size, window, stride)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()


def test_auto_bands() -> None:
    assert auto_bands(["red", "green", "blue", "alpha"], 4) == (1, 2, 3)
    assert auto_bands(["blue", "green", "red"], 3) == (3, 2, 1)
    assert auto_bands(["undefined"] * 4, 4) == (1, 2, 3)  # RGB + NIR
    assert auto_bands(["gray", "undefined"], 2) == (1, 1, 1)
    assert auto_bands(["gray", "alpha"], 2) == (1, 1, 1)
    assert auto_bands(["gray"], 1) == (1, 1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chip_size": 0},
        {"stride": 0},
        {"stride": 225},
        {"min_valid": 1.5},
        {"gsd": -1.0},
        {"gsd": float("nan")},
        {"bands": (1, 2)},
        {"bands": (0, 1, 2)},
        {"scales": ()},
        {"scales": (0, 4)},
        {"scales": (1, 1)},
        {"scales": (1, 2.5)},
        {"scales": [1, 4]},
    ],
)
def test_bad_options_are_invalid_input(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        TileOptions(**kwargs)


def test_chip_params_are_json_and_track_options() -> None:
    a = TileOptions().chip_params()
    assert msgspec.json.decode(msgspec.json.encode(a)) == a
    assert a == TileOptions(stride=224).chip_params()
    assert a != TileOptions(gsd=2.0).chip_params()
    # One scale is the default and leaves the fingerprint as before multi-scale chips existed.
    assert a == TileOptions(scales=(1,)).chip_params() and "scales" not in a
    multi = TileOptions(scales=(4, 1))
    assert multi == TileOptions(scales=(1, 4)) and multi.scales == (1, 4)
    assert multi.chip_params() == {**a, "scales": [1, 4]} != TileOptions(scales=(1, 2)).chip_params()


# -- every shared scene -------------------------------------------------------------------------


def test_scene_table_lists_every_shared_scene(scenes_dir: Path) -> None:
    found = {p.relative_to(scenes_dir).as_posix() for p in scenes_dir.rglob("*.tif")}
    assert found == set(SCENES)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_every_scene_opens_and_yields_expected_chips(scenes_dir: Path, name: str) -> None:
    crs, bands, is_uint8 = SCENES[name]
    path = scenes_dir / name
    with rasterio.open(path) as ds:
        width, height = ds.width, ds.height
    with open_scene(path) as scene:
        specs = list(scene.windows())
        cols = expected_starts(width, 224, 224)
        rows = expected_starts(height, 224, 224)
        assert len(specs) == len(cols) * len(rows) == scene.count() >= 1
        assert [(s.window.col, s.window.row) for s in specs] == [(c, r) for r in rows for c in cols]
        assert (scene.width, scene.height, scene.crs, scene.bands) == (width, height, crs, bands)
        assert len(scene.id) == 32 and int(scene.id, 16) >= 0
        assert scene.path == os.path.abspath(path)  # absolute, symlinks kept as the user named them
        assert (scene.stretch is None) == is_uint8
        if scene.stretch is not None:
            assert len(scene.stretch) == 3 and all(lo < hi for lo, hi in scene.stretch)
        west, south, east, north = scene.bbox
        assert -180 <= west < east <= 180 and -90 <= south < north <= 90
        for spec in (specs[0], specs[-1]):
            assert spec.padded == (width < 224 or height < 224)
            chip = scene.read(spec)
            assert chip.pixels.shape == (224, 224, 3) and chip.pixels.dtype == np.uint8
            assert 0.0 <= chip.valid_fraction <= 1.0


# -- georeferencing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "rasterio/RGB.byte.tif",  # UTM north
        "rio-tiler/pix4d_alpha_nodata.tif",  # UTM south
        "rasterio/cogeo.tif",  # Web Mercator
        "rio-tiler/mosaic_cog3.tif",  # EPSG:4326, padded
        "rio-tiler/cog_scale_epsg4326.tif",  # EPSG:4326
    ],
)
def test_footprints_match_independent_transform(scenes_dir: Path, name: str) -> None:
    path = scenes_dir / name
    with open_scene(path) as scene, rasterio.open(path) as ds:
        specs = list(scene.windows())
        for spec in (specs[0], specs[len(specs) // 2], specs[-1]):
            payload = scene.payload(scene.read(spec))
            w = payload.window
            corners = [(w.col, w.row), (w.col + w.width, w.row), (w.col + w.width, w.row + w.height),
                       (w.col, w.row + w.height)]
            xs, ys = zip(*(ds.transform * c for c in corners), strict=True)
            lons, lats = rasterio.warp.transform(ds.crs, "EPSG:4326", list(xs), list(ys))
            ring = np.array(payload.footprint["coordinates"][0])  # type: ignore[index]
            assert payload.footprint["type"] == "Polygon"
            assert len(ring) == 4 * 8 + 1 and (ring[0] == ring[-1]).all()
            for lon, lat in zip(lons, lats, strict=True):
                assert np.min(np.hypot(ring[:, 0] - lon, ring[:, 1] - lat)) < 1e-7
            poly = Polygon(ring)
            assert poly.is_valid and poly.exterior.is_ccw
            cx, cy = ds.transform * (w.col + w.width / 2, w.row + w.height / 2)
            (clon,), (clat,) = rasterio.warp.transform(ds.crs, "EPSG:4326", [cx], [cy])
            assert payload.centre.lon == pytest.approx(clon, abs=1e-7)
            assert payload.centre.lat == pytest.approx(clat, abs=1e-7)
            assert payload.crs == scene.crs and payload.padded == spec.padded
            assert payload.bands == list(scene.bands) and payload.stretch == scene.stretch
            assert payload.scene_id == scene.id and payload.chip_size == 224


def test_native_gsd(scenes_dir: Path) -> None:
    with open_scene(scenes_dir / "rasterio/cogeo.tif") as s:
        assert s.native_gsd == pytest.approx(0.597164, rel=1e-5) and s.gsd == s.native_gsd
    with open_scene(scenes_dir / "rio-tiler/cog_scale_epsg4326.tif") as s:
        # 0.0044 deg at ~37.4°N: ~391 m east-west, ~489 m north-south
        assert s.native_gsd == pytest.approx((391 + 489) / 2, rel=0.01)


def test_antimeridian_footprint_stays_continuous(tmp_path: Path) -> None:
    # UTM 60N, 60 km wide straddling 180° near 9°N
    path = write_tif(
        tmp_path / "am.tif",
        np.full((3, 300, 300), 100, np.uint8),
        crs="EPSG:32660",
        transform=from_origin(800000, 1000000, 200, 200),
    )
    with open_scene(path) as scene:
        west, _, east, _ = scene.bbox
        assert west > 0 > east  # RFC 7946 bbox crossing the antimeridian
        assert 179 < west < 180 and -180 < east < -179
        for spec in scene.windows():
            p = scene.payload(scene.read(spec))
            ring = np.array(p.footprint["coordinates"][0])  # type: ignore[index]
            assert np.ptp(ring[:, 0]) < 1.0
            assert Polygon(ring).is_valid
            assert -180 <= p.centre.lon < 180


# -- masks --------------------------------------------------------------------------------------


def test_alpha_scene_is_mostly_invalid_and_masked_black(scenes_dir: Path) -> None:
    path = scenes_dir / "rasterio/alpha.tif"
    with open_scene(path) as scene, rasterio.open(path) as ds:
        chips = [scene.read(s) for s in scene.windows()]
        low = [c for c in chips if c.valid_fraction < 0.5]
        assert len(low) >= 0.9 * len(chips)
        partial = max(chips, key=lambda c: c.valid_fraction)
        assert 0 < partial.valid_fraction < 1
        w = partial.spec.window
        alpha = ds.read(4, window=RioWindow(w.col, w.row, w.width, w.height))
        assert partial.valid_fraction == pytest.approx((alpha > 0).mean())
        assert (partial.pixels[alpha == 0] == 0).all()


def test_nodata_mask_matches_independent_count(scenes_dir: Path) -> None:
    path = scenes_dir / "rasterio/RGB.byte.tif"
    with open_scene(path) as scene, rasterio.open(path) as ds:
        spec = next(scene.windows())
        chip = scene.read(spec)
        w = spec.window
        data = ds.read(window=RioWindow(w.col, w.row, w.width, w.height))
        valid = np.any(data != 0, axis=0)  # GDAL dataset-mask semantics: nodata in every band
        assert chip.valid_fraction == pytest.approx(valid.mean())
        assert (chip.pixels == np.moveaxis(np.where(valid, data, 0), 0, -1)).all()


def test_float_nan_is_masked(tmp_path: Path) -> None:
    data = np.random.default_rng(0).uniform(0, 1000, (1, 224, 224)).astype(np.float32)
    data[0, :, :56] = np.nan
    with open_scene(write_tif(tmp_path / "f.tif", data)) as scene:
        assert scene.stretch is not None and all(math.isfinite(v) for v in scene.stretch[0])
        chip = scene.read(next(scene.windows()))
        assert chip.valid_fraction == pytest.approx(0.75)
        assert (chip.pixels[:, :56] == 0).all() and chip.pixels[:, 56:].any()


def test_small_scene_gives_one_padded_chip(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(1, 255, (3, 60, 100), dtype=np.uint8)
    path = write_tif(tmp_path / "small.tif", data)
    with open_scene(path) as scene:
        specs = list(scene.windows())
        assert specs == [ChipSpec(window=Window(col=0, row=0, width=224, height=224), padded=True)]
        chip = scene.read(specs[0])
        assert chip.valid_fraction == pytest.approx(6000 / 224**2)
        assert (chip.pixels[:60, :100] == np.moveaxis(data, 0, -1)).all()
        assert not chip.pixels[60:].any() and not chip.pixels[:, 100:].any()
        p = scene.payload(chip)
        assert p.padded
        assert (render_chip(p) == chip.pixels).all()


# -- dtypes, stretch, scale/offset --------------------------------------------------------------


def test_uint16_stretch_is_shared_and_overlaps_agree(scenes_dir: Path) -> None:
    path = scenes_dir / "rio-color/rgb16.tif"
    with rasterio.open(path) as ds:
        full = ds.read().astype(np.float64)
    expected = [list(np.percentile(b, [2, 98])) for b in full]
    with open_scene(path, TileOptions(stride=112)) as scene:
        assert scene.stretch is not None
        assert np.allclose(scene.stretch, expected, rtol=1e-12)
        specs = {(s.window.col, s.window.row): s for s in scene.windows()}
        a, b = scene.read(specs[(0, 0)]), scene.read(specs[(112, 0)])
        c = scene.read(specs[(0, 112)])
        assert (a.pixels[:, 112:] == b.pixels[:, :112]).all()
        assert (a.pixels[112:] == c.pixels[:112]).all()
        assert scene.payload(a).stretch == scene.payload(b).stretch
        lo, hi = expected[0]
        ref = np.rint(np.clip((full[0, :224, :224] - lo) * 255 / (hi - lo), 0, 255))
        assert (a.pixels[..., 0] == ref).all()
        assert a.pixels.std() > 20  # actually stretched, not crushed to black


def test_scale_offset_is_applied_before_stretch(scenes_dir: Path) -> None:
    path = scenes_dir / "rio-tiler/cog_scale_epsg4326.tif"
    with rasterio.open(path) as ds:
        raw = ds.read(1).astype(np.float64)
        scale, offset = ds.scales[0], ds.offsets[0]
    physical = raw[raw != 0] * scale + offset
    lo, hi = np.percentile(physical, [2, 98])
    with open_scene(path) as scene:
        assert scene.bands == (1, 1, 1)
        assert scene.stretch is not None
        assert scene.stretch[0] == pytest.approx([lo, hi])
        assert 999 < scene.stretch[0][0] < scene.stretch[0][1] < 1010  # physical units, not raw counts
        spec = next(scene.windows())
        chip = scene.read(spec)
        block = raw[:224, :224]
        ref = np.rint(np.clip((block * scale + offset - lo) * 255 / (hi - lo), 0, 255))
        ref[block == 0] = 0
        assert (chip.pixels[..., 0] == ref).all()
        assert (chip.pixels[..., 0] == chip.pixels[..., 2]).all()


# -- bands --------------------------------------------------------------------------------------


def test_band_selection_and_replication(scenes_dir: Path) -> None:
    path = scenes_dir / "rasterio/RGB.byte.tif"
    with open_scene(path) as rgb, open_scene(path, TileOptions(bands=(3, 2, 1))) as bgr, \
            open_scene(path, TileOptions(bands=(2,))) as grey:
        spec = next(rgb.windows())
        a, b, g = rgb.read(spec).pixels, bgr.read(spec).pixels, grey.read(spec).pixels
        assert bgr.bands == (3, 2, 1) and grey.bands == (2, 2, 2)
        assert (a[..., ::-1] == b).all() and not (a == b).all()
        assert (g[..., 0] == a[..., 1]).all() and (g[..., 0] == g[..., 2]).all()
    with open_scene(scenes_dir / "rasterio/shade.tif") as shade:
        px = shade.read(next(shade.windows())).pixels
        assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()


def test_missing_band_is_a_clear_error(scenes_dir: Path) -> None:
    with pytest.raises(InvalidInput, match=r"band 4 but .*RGB\.byte\.tif has only 3 bands"):
        open_scene(scenes_dir / "rasterio/RGB.byte.tif", TileOptions(bands=(4, 3, 2)))


# -- target GSD ---------------------------------------------------------------------------------


def test_target_gsd_reads_coarser_chips(scenes_dir: Path) -> None:
    path = scenes_dir / "rasterio/cogeo.tif"
    with open_scene(path) as native, open_scene(path, TileOptions(gsd=2.4)) as coarse:
        assert coarse.gsd == pytest.approx(2.4, rel=0.005)
        win = round(224 * 2.4 / native.native_gsd)
        specs = list(coarse.windows())
        assert {(s.window.width, s.window.height) for s in specs} == {(win, win)}
        assert len(specs) == len(expected_starts(1024, win, win)) ** 2 == 4
        assert (win / 224) ** 2 == pytest.approx(16, rel=0.02)  # each chip covers ~16 native chips
        assert len(specs) < native.count() / 4
        chip = coarse.read(specs[0])
        assert chip.pixels.shape == (224, 224, 3) and chip.valid_fraction == 1.0
        p = coarse.payload(chip)
        assert p.gsd == pytest.approx(2.4, rel=0.005)
        assert (render_chip(p) == chip.pixels).all()
        # same ground as a 4x-decimated native read of that window
        with rasterio.open(path) as ds:
            ref = ds.read(window=RioWindow(0, 0, win, win), out_shape=(3, 224, 224))
        assert np.abs(chip.pixels.astype(int) - np.moveaxis(ref, 0, -1)).mean() < 12


# -- multi-scale chips --------------------------------------------------------------------------


def scale_counts(specs: list[ChipSpec]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for spec in specs:
        counts[spec.scale] = counts.get(spec.scale, 0) + 1
    return counts


@pytest.mark.parametrize(
    ("width", "height", "stride", "scales"),
    [(1024, 1024, None, (1, 4)), (2000, 1300, 112, (1, 2, 4)), (700, 500, None, (1, 4)), (3000, 250, 200, (3, 1))],
)
def test_scales_chip_at_every_factor_with_the_grid_arithmetic(
    tmp_path: Path, width: int, height: int, stride: int | None, scales: tuple[int, ...]
) -> None:
    """Each scale is the plain grid at `scale` x the native window and stride; finest scale first."""
    data = np.random.default_rng(0).integers(0, 255, (3, height, width), dtype=np.uint8)
    path = write_tif(tmp_path / "s.tif", data, transform=from_origin(500000, 5000000, 0.5, 0.5))
    options = TileOptions(stride=stride, scales=scales)
    with open_scene(path, options) as scene:
        specs = list(scene.windows())
        step = 224 if stride is None else stride
        expected = {
            s: len(expected_starts(width, 224 * s, step * s)) * len(expected_starts(height, 224 * s, step * s))
            for s in scales
        }
        assert scale_counts(specs) == expected and scene.count() == len(specs) == sum(expected.values())
        assert [s.scale for s in specs] == sorted(s.scale for s in specs)
        for spec in specs:
            assert (spec.window.width, spec.window.height) == (224 * spec.scale, 224 * spec.scale)
            starts = expected_starts(width, 224 * spec.scale, step * spec.scale)
            assert spec.window.col in starts
        payloads = [scene.payload(scene.read(spec)) for spec in (specs[0], specs[-1])]
    assert [p.scale for p in payloads] == [min(scales), max(scales)]
    for p in payloads:
        assert p.gsd == pytest.approx(0.5 * p.scale, rel=1e-9)
        assert p.window.width == 224 * p.scale and p.chip_size == 224


def test_coarse_chip_is_the_decimated_window_and_renders_again(scenes_dir: Path) -> None:
    """cogeo.tif (1024², 0.597 m, overviews 2..64): scale 4 = 2.39 m chips read through the overviews."""
    path = scenes_dir / "rasterio/cogeo.tif"
    with open_scene(path, TileOptions(scales=(1, 4))) as scene:
        specs = list(scene.windows())
        assert scale_counts(specs) == {1: 25, 4: 4}
        assert scene.gsd == scene.native_gsd == scene.grid_at(1).gsd
        assert scene.grid_at(4).gsd == pytest.approx(4 * scene.native_gsd, rel=1e-9)
        coarse = next(s for s in specs if s.scale == 4)
        chip = scene.read(coarse)
        p = scene.payload(chip)
    assert p.scale == 4 and p.gsd == pytest.approx(2.3887, rel=1e-4) and chip.valid_fraction == 1.0
    assert (render_chip(p) == chip.pixels).all()
    with rasterio.open(path) as ds:
        ref = ds.read(window=RioWindow(0, 0, 896, 896), out_shape=(3, 224, 224))
    assert np.abs(chip.pixels.astype(int) - np.moveaxis(ref, 0, -1)).mean() < 12


def test_scales_multiply_a_target_gsd(scenes_dir: Path) -> None:
    path = scenes_dir / "rasterio/cogeo.tif"
    with open_scene(path, TileOptions(gsd=1.2, scales=(1, 2))) as scene:
        native = scene.native_gsd
        base, double = scene.grid_at(1), scene.grid_at(2)
        assert base.window == (round(224 * 1.2 / native),) * 2 and double.window == (round(448 * 1.2 / native),) * 2
        assert base.gsd == pytest.approx(1.2, rel=0.005) and double.gsd == pytest.approx(2.4, rel=0.005)
        assert scale_counts(list(scene.windows())) == {
            1: len(expected_starts(1024, base.window[0], base.window[0])) ** 2,
            2: len(expected_starts(1024, double.window[0], double.window[0])) ** 2,
        }


# -- refusals -----------------------------------------------------------------------------------


def test_scene_without_crs_is_refused(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "nocrs.tif", np.ones((1, 32, 32), np.uint8), crs=None)
    with pytest.raises(SceneError, match=r"nocrs\.tif has a geotransform but no CRS"):
        open_scene(path)


def test_scene_without_geotransform_is_refused(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "plain.tif", np.ones((1, 32, 32), np.uint8), crs=None, transform=None)
    with pytest.raises(SceneError, match=r"plain\.tif has no geotransform"):
        open_scene(path)


def test_gcp_only_scene_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gcps.tif"
    gcps = [
        GroundControlPoint(row=0, col=0, x=10.0, y=50.0),
        GroundControlPoint(row=0, col=32, x=10.1, y=50.0),
        GroundControlPoint(row=32, col=0, x=10.0, y=49.9),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8") as dst:
            dst.write(np.ones((1, 32, 32), np.uint8))
            dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
    with pytest.raises(SceneError, match=r"gcps\.tif has only GCPs.*gdalwarp"):
        open_scene(path)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="not found"):
        open_scene(tmp_path / "nope.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(SceneError, match=r"junk\.tif"):
        open_scene(tmp_path / "junk.tif")


# -- huge scenes: windowed I/O only -------------------------------------------------------------


@pytest.mark.slow
def test_huge_sparse_scene_is_read_through_windows(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": 20000, "height": 20000, "count": 3, "dtype": "uint16", "nodata": 0,
        "crs": "EPSG:32633", "transform": from_origin(300000, 5000000, 1, 1),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "sparse_ok": True,
    }
    patch = np.random.default_rng(2).integers(1, 4000, (3, 512, 512), dtype=np.uint16)
    with rasterio.open(path, "w", **profile) as dst:
        for col, row in [(0, 0), (5120, 5120), (19456, 19456)]:
            dst.write(patch, window=RioWindow(col, row, 512, 512))
    assert path.stat().st_size < 5_000_000
    tracemalloc.start()
    try:
        with open_scene(path, TileOptions(scales=(1, 16))) as scene:
            n = len(expected_starts(20000, 224, 224))
            m = len(expected_starts(20000, 224 * 16, 224 * 16))
            assert scene.count() == n * n + m * m == 90 * 90 + 6 * 6
            specs = list(scene.windows())
            chips = scene.read_many([specs[0], specs[n * n - 1], specs[45 * 90 + 45], specs[n * n]])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 * 2**20, peak  # the scene itself is 2.4 GB; the stretch sample ~6 MB
    assert chips[0].valid_fraction == 1.0 and chips[0].pixels.any()
    assert chips[2].valid_fraction == 0.0 and not chips[2].pixels.any()
    # A scale-16 chip is 3584² native pixels decimated into 224², not a 3584² array in memory.
    coarse = chips[3]
    assert coarse.spec.scale == 16 and coarse.spec.window.width == 3584 and coarse.pixels.shape == (224, 224, 3)
    assert 0.0 < coarse.valid_fraction < 0.05  # one 512² patch of data in its corner


# -- ids, render, threads -----------------------------------------------------------------------


def test_scene_id_is_a_content_hash(tmp_path: Path, scenes_dir: Path) -> None:
    src = scenes_dir / "rio-tiler/cog_rgb.tif"
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    shutil.copy(src, a)
    shutil.copy(src, b)
    with open_scene(src) as s0, open_scene(a) as s1, open_scene(b) as s2:
        assert s0.id == s1.id == s2.id
    with b.open("ab") as f:
        f.write(b"x")  # trailing bytes: still a readable TIFF, different content
    with open_scene(b) as s3:
        assert s3.id != s1.id


def test_datetime_from_tiff_tag(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "dt.tif", np.ones((1, 8, 8), np.uint8))
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(TIFFTAG_DATETIME="2020:01:02 03:04:05")
    with open_scene(path) as scene:
        assert scene.datetime == "2020-01-02T03:04:05"
        assert scene.payload(scene.read(next(scene.windows()))).datetime == scene.datetime


@pytest.mark.parametrize(
    "name", ["rasterio/RGB.byte.tif", "rio-tiler/cog_scale_epsg4326.tif", "rio-tiler/mosaic_cog3.tif"]
)
def test_render_chip_reproduces_ingested_pixels(scenes_dir: Path, name: str) -> None:
    with open_scene(scenes_dir / name, TileOptions(stride=200)) as scene:
        for spec in list(scene.windows())[-2:]:
            chip = scene.read(spec)
            stored = msgspec.json.decode(msgspec.json.encode(scene.payload(chip)), type=ChipPayload)
            assert (render_chip(stored) == chip.pixels).all()


def test_render_chip_refuses_changed_or_missing_file(tmp_path: Path, scenes_dir: Path) -> None:
    path = Path(shutil.copy(scenes_dir / "rio-tiler/cog_rgb.tif", tmp_path / "c.tif"))
    with open_scene(path) as scene:
        payload = scene.payload(scene.read(next(scene.windows())))
    with path.open("ab") as f:
        f.write(b"x")
    with pytest.raises(SceneError, match="changed"):
        render_chip(payload)
    path.unlink()
    with pytest.raises(SceneError, match="gone"):
        render_chip(payload)


def test_reads_from_two_threads_match_serial_reads(scenes_dir: Path) -> None:
    with open_scene(scenes_dir / "rio-tiler/cog.tif") as scene:
        specs = list(scene.windows())[:40]
        serial = [scene.read(s).pixels for s in specs]
        with ThreadPoolExecutor(2) as pool:
            threaded = list(pool.map(scene.read, specs))
        assert all((s == t.pixels).all() for s, t in zip(serial, threaded, strict=True))
        assert len(scene._handles) >= 2  # each worker thread got its own handle
    with pytest.raises(SceneError, match="closed"):
        scene.read(specs[0])


def test_scene_is_a_context_manager(scenes_dir: Path) -> None:
    scene = open_scene(scenes_dir / "rio-color/rgb8.tif")
    assert isinstance(scene, Scene)
    with scene as s:
        assert s is scene
    assert all(ds.closed for ds in [scene._local.ds])


def test_tiler_imports_without_engine_models_or_torch() -> None:
    """The tiler is usable on its own: importing it must not pull in the store, the models or torch."""
    import subprocess
    import sys

    code = (
        "import sys, geosearch.tilers; "
        "heavy = [m for m in ('torch', 'qdrant_client', 'geosearch.engine', 'geosearch.store', 'geosearch.models',"
        " 'geosearch.plugins') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.home())
    assert out.stdout.strip() == ""
