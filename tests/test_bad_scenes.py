"""Bad scenes (issue 11): every way a user's raster can be broken gets a one-line reason, never a traceback.

The corpus is generated here with rasterio/numpy/Pillow into tmp_path (plus copies of the real shared
scenes): empty and truncated files, images renamed `.tif`, scenes that cannot be placed on Earth, odd
but valid scenes (rotated, 1x1, all nodata, NaN, negative, many bands, constant), a 60,000² sparse
scene, a missing path, and files rewritten while they are read.

Two levels, no mocks:

- the tiler (fast): `open_scene` refuses each bad file with a `SceneError` whose one-sentence message
  names the file and the problem, and chips each odd-but-valid file sensibly;
- the `geosearch ingest` command on the tiny random CLIP and the real embedded store (slow): one summary
  line per bad file, exit code 1, the good files ingested, the scene already in the store untouched,
  and nothing but those summary lines on stderr (no traceback, no GDAL noise).

Outcomes decided for the legitimately ingestible cases (`ODD`): a scene smaller than a chip gives one
padded chip (as `mosaic_cog3.tif` does in height), which the default `--min-valid 0.5` skips and counts;
all-nodata and NaN-filled scenes ingest with every chip skipped (0 chips written, the reason is
"skipped (valid < 0.5)"); negative int16, 7 bands without colour interpretation and a constant uint16
scene ingest every chip: their stretch is finite (a zero-range band gets [v, v + 1], so the constant
value renders black but valid), and the chips are uint8 (no NaN can reach the embedder).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.windows import Window as RioWindow
from support import GEOSEARCH, write_tif

from geosearch.errors import SceneError
from geosearch.tilers import TileOptions, open_scene
from geosearch.tilers.integrity import file_kind, tiff_problem

MiB = 1024 * 1024

MARS_WKT = (
    'GEOGCRS["Mars (2015) - Sphere / Ocentric",DATUM["Mars (2015) - Sphere",ELLIPSOID["Mars (2015) - Sphere",'
    '3396190,0,LENGTHUNIT["metre",1]]],PRIMEM["Reference Meridian",0,ANGLEUNIT["degree",0.0174532925199433]],'
    'CS[ellipsoidal,2],AXIS["geodetic latitude (Lat)",north,ORDER[1],ANGLEUNIT["degree",0.0174532925199433]],'
    'AXIS["geodetic longitude (Lon)",east,ORDER[2],ANGLEUNIT["degree",0.0174532925199433]],ID["IAU",49900,2015]]'
)
LOCAL_WKT = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'


# -- corpus -------------------------------------------------------------------------------------


def rgb(height: int = 300, width: int = 300, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).integers(1, 255, (3, height, width), dtype=np.uint8)


def good_tif(path: Path, seed: int = 0) -> Path:
    """300x300 RGB uint8, tiled 64: 25 blocks; its IFD and offset tables come first, pixels last."""
    return write_tif(path, rgb(seed=seed), tiled=True, blockxsize=64, blockysize=64)


def truncated(where: str) -> Callable[[Path], Path]:
    """A good TIFF cut short: inside the 8-byte header, its first IFD, its tile offset table, mid-data,
    or 100 bytes before the end (the last tile)."""

    def build(path: Path) -> Path:
        src = good_tif(path.with_name(f"whole-{path.name}"))
        raw = src.read_bytes()
        src.unlink()
        ifd = struct.unpack("<I", raw[4:8])[0]
        (count,) = struct.unpack("<H", raw[ifd : ifd + 2])
        entries = [struct.unpack("<HHII", raw[ifd + 2 + 12 * i : ifd + 14 + 12 * i]) for i in range(count)]
        tile_offsets = next(value for tag, _, _, value in entries if tag == 324)
        cut = {
            "header": 5,
            "ifd": ifd + 2 + 12 * 3,
            "tile_table": tile_offsets + 10,
            "mid_data": len(raw) // 2,
            "near_end": len(raw) - 100,
        }[where]
        path.write_bytes(raw[:cut])
        return path

    return build


def bigtiff_big_endian_cut(path: Path) -> Path:
    src = write_tif(
        path.with_name("whole-be.tif"), rgb(), tiled=True, blockxsize=64, blockysize=64, BIGTIFF="YES", ENDIANNESS="BIG"
    )
    raw = src.read_bytes()
    src.unlink()
    assert raw[:4] == b"MM\x00+"
    path.write_bytes(raw[: len(raw) - 5000])
    return path


def image_as_tif(fmt: str) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        buf = io.BytesIO()
        Image.fromarray(np.moveaxis(rgb(64, 64), 0, -1)).save(buf, fmt)
        path.write_bytes(buf.getvalue())
        return path

    return build


def html_as_tif(path: Path) -> Path:
    path.write_text("<!DOCTYPE html><html><body><h1>403 Forbidden</h1></body></html>\n")
    return path


def zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def gcp_only(path: Path) -> Path:
    gcps = [
        GroundControlPoint(row=0, col=0, x=10.0, y=50.0),
        GroundControlPoint(row=0, col=300, x=10.1, y=50.0),
        GroundControlPoint(row=300, col=0, x=10.0, y=49.9),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8") as dst:
            dst.write(rgb())
            dst.gcps = (gcps, CRS.from_epsg(4326))
    return path


def vrt(path: Path, source: str, geotransform: str) -> Path:
    path.write_text(
        f'<VRTDataset rasterXSize="300" rasterYSize="300"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>{geotransform}</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{source}</SourceFilename><SourceBand>1</SourceBand>'
        '<SrcRect xOff="0" yOff="0" xSize="300" ySize="300"/><DstRect xOff="0" yOff="0" xSize="300" ySize="300"/>'
        "</SimpleSource></VRTRasterBand></VRTDataset>\n"
    )
    return path


def degenerate_vrt(path: Path) -> Path:
    good_tif(path.with_name(f"{path.stem}-source.tif"))  # a good scene of its own in the corpus folder
    return vrt(path, f"{path.stem}-source.tif", "500000, 0, 0, 5000000, 0, -10")


def missing_source_vrt(path: Path) -> Path:
    return vrt(path, "gone.tif", "500000, 10, 0, 5000000, 0, -10")


@dataclass(frozen=True)
class Bad:
    """A file `open_scene` refuses: `reason` must be in the one-line `SceneError` and the CLI summary."""

    build: Callable[[Path], Path]
    reason: str
    suffix: str = ".tif"


BAD: dict[str, Bad] = {
    "zero_byte": Bad(zero_byte, r"is an empty file \(0 bytes\), not a raster"),
    "truncated_header": Bad(truncated("header"), r"is a truncated or corrupt TIFF: the file has only 5 bytes"),
    "truncated_ifd": Bad(truncated("ifd"), r"is a truncated or corrupt TIFF: its image directory .* runs past the end"),
    "truncated_tile_table": Bad(
        truncated("tile_table"), r"is a truncated or corrupt TIFF: its strip/tile offset table .* runs past the end"
    ),
    "truncated_mid_data": Bad(
        truncated("mid_data"), r"is a truncated or corrupt TIFF: its pixel data should run to byte .*blocks missing"
    ),
    "truncated_near_end": Bad(
        truncated("near_end"), r"is a truncated or corrupt TIFF: .*blocks missing or cut: 1 of 25\)"
    ),
    "truncated_bigtiff_big_endian": Bad(bigtiff_big_endian_cut, r"is a truncated or corrupt TIFF: its pixel data"),
    "png_renamed_tif": Bad(image_as_tif("PNG"), r"is not a GeoTIFF \(PNG data\)"),
    "jpeg_renamed_tif": Bad(image_as_tif("JPEG"), r"is not a GeoTIFF \(JPEG data\)"),
    "html_page_renamed_tif": Bad(html_as_tif, r"is not a GeoTIFF \(XML/HTML text data\)"),
    "no_crs": Bad(
        lambda p: write_tif(p, rgb(), crs=None),
        r"has a geotransform but no CRS; assign one first \(gdal_edit.py -a_srs\)",
    ),
    "no_geotransform": Bad(
        lambda p: write_tif(p, rgb(), crs=None, transform=None), r"has no geotransform \(not georeferenced\)"
    ),
    "crs_but_no_geotransform": Bad(lambda p: write_tif(p, rgb(), transform=None), r"has no geotransform"),
    "gcp_only": Bad(gcp_only, r"has only GCPs .*warp it first with gdalwarp"),
    "degenerate_geotransform": Bad(
        degenerate_vrt,
        r"has a degenerate geotransform \(500000, 0, 0, 5000000, 0, -10: zero or non-finite pixel size\)",
        ".vrt",
    ),
    "vrt_missing_source": Bad(missing_source_vrt, r"refers to a file that does not exist: .*gone\.tif", ".vrt"),
    "mars_crs": Bad(
        lambda p: write_tif(p, rgb(), crs=CRS.from_wkt(MARS_WKT), transform=from_origin(10, 20, 0.001, 0.001)),
        r"has a non-Earth CRS \(Mars \(2015\) - Sphere / Ocentric, body radius 3,396 km\)",
    ),
    "engineering_crs": Bad(
        lambda p: write_tif(p, rgb(), crs=CRS.from_wkt(LOCAL_WKT)), r"has a CRS with no ellipsoid \(site grid\)"
    ),
    "off_the_globe": Bad(
        lambda p: write_tif(p, rgb(), crs="EPSG:4326", transform=from_origin(10, 100, 1, 1)),
        r"lies off the globe: its georeferencing puts it at latitudes -200\.\.100",
    ),
}


def corrupt_tile(path: Path) -> Path:
    """Whole and well-formed, but one DEFLATE tile (of 25) is garbage: only a read of it can tell."""
    good = write_tif(path, rgb(), tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(good) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    raw = bytearray(good.read_bytes())
    raw[offset : offset + size] = (b"\x00garbage!" * size)[:size]
    good.write_bytes(bytes(raw))
    return good


UNREADABLE: dict[str, Bad] = {
    "corrupt_tile_data": Bad(
        corrupt_tile,
        r"cannot read the pixels of .*corrupt_tile_data\.tif at window 0,0 224x224 \(is the file corrupt\?\): "
        r"ZIPDecode:Decoding error",
    ),
}
"""Files that open (nothing is wrong in their structure) but whose pixels cannot be decoded: the scene
fails at its first bad chip, with the reason."""


@dataclass(frozen=True)
class Odd:
    """A strange but valid scene: chipped, with `kept` chips of `total` at the default --min-valid 0.5."""

    build: Callable[[Path], Path]
    total: int
    kept: int


ODD: dict[str, Odd] = {
    "rotated_geotransform": Odd(
        lambda p: write_tif(
            p, rgb(), transform=Affine.translation(500000, 5000000) @ Affine.rotation(30) @ Affine.scale(10, -10)
        ),
        4,
        4,
    ),
    "sheared_geotransform": Odd(lambda p: write_tif(p, rgb(), transform=Affine(10, 3, 500000, 2, -10, 5000000)), 4, 4),
    "one_pixel": Odd(lambda p: write_tif(p, rgb(1, 1)), 1, 0),
    "all_nodata": Odd(lambda p: write_tif(p, np.zeros((3, 300, 300), np.uint8), nodata=0), 4, 0),
    "nan_float32": Odd(lambda p: write_tif(p, np.full((1, 300, 300), np.nan, np.float32)), 4, 0),
    "negative_int16": Odd(
        lambda p: write_tif(p, np.random.default_rng(1).integers(-3000, -1, (3, 300, 300), dtype=np.int16)), 4, 4
    ),
    "seven_bands_no_colorinterp": Odd(
        lambda p: write_tif(
            p, np.random.default_rng(2).integers(0, 4000, (7, 300, 300), dtype=np.uint16), photometric="MINISBLACK"
        ),
        4,
        4,
    ),
    "constant_uint16": Odd(lambda p: write_tif(p, np.full((3, 300, 300), 1234, np.uint16)), 4, 4),
}


def build(folder: Path, name: str, case: Bad | Odd) -> Path:
    """Write case `name` into `folder` as `name` + its suffix."""
    suffix = case.suffix if isinstance(case, Bad) else ".tif"
    path = case.build(folder / f"{name}{suffix}")
    assert path.exists()
    return path


# -- the tiler ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_scene_is_refused_in_one_sentence(tmp_path: Path, name: str) -> None:
    path = build(tmp_path, name, BAD[name])
    with pytest.raises(SceneError) as info:
        open_scene(path)
    message = str(info.value)
    assert re.search(BAD[name].reason, message), message
    assert "\n" not in message and len(message) < 400, message
    assert path.name in message  # names the file


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_undecodable_pixels_fail_the_read_in_one_sentence(tmp_path: Path, name: str) -> None:
    path = build(tmp_path, name, UNREADABLE[name])
    with open_scene(path) as scene, pytest.raises(SceneError) as info:
        scene.read_many(list(scene.windows()))
    message = str(info.value)
    assert re.search(UNREADABLE[name].reason, message) and "\n" not in message, message


def test_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match=r"scene file not found: .*nope\.tif$"):
        open_scene(tmp_path / "nope.tif")
    with pytest.raises(SceneError, match=r"is a folder, not a raster file"):
        open_scene(tmp_path)


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_scene_is_chipped_sensibly(tmp_path: Path, name: str) -> None:
    case = ODD[name]
    path = build(tmp_path, name, case)
    with open_scene(path) as scene:
        chips = scene.read_many(list(scene.windows()))
        payloads = [scene.payload(c) for c in chips]
        stretch = scene.stretch
    assert len(chips) == case.total
    assert sum(c.valid_fraction >= 0.5 for c in chips) == case.kept
    for chip, payload in zip(chips, payloads, strict=True):
        assert chip.pixels.dtype == np.uint8 and chip.pixels.shape == (224, 224, 3)
        assert 0.0 <= chip.valid_fraction <= 1.0
        ring = np.array(payload.footprint["coordinates"][0])
        assert np.isfinite(ring).all() and np.isfinite([payload.centre.lon, payload.centre.lat]).all()
    if stretch is not None:
        assert np.isfinite(stretch).all() and all(high > low for low, high in stretch)


def test_one_pixel_scene_is_one_padded_chip(tmp_path: Path) -> None:
    """Smaller than a chip: one padded chip, black except its one pixel; kept only under --min-valid 0."""
    path = write_tif(tmp_path / "one.tif", rgb(1, 1))
    with open_scene(path, TileOptions(min_valid=0.0)) as scene:
        (spec,) = scene.windows()
        chip = scene.read(spec)
    assert spec.padded and chip.valid_fraction == pytest.approx(1 / 224**2)
    assert chip.pixels.any() and np.count_nonzero(chip.pixels.any(axis=2)) == 1


def test_rotated_footprint_follows_the_geotransform(tmp_path: Path) -> None:
    transform = Affine.translation(500000, 5000000) @ Affine.rotation(30) @ Affine.scale(10, -10)
    path = write_tif(tmp_path / "rot.tif", rgb(), transform=transform)
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    with open_scene(path) as scene:
        spec = next(scene.windows())
        ring = scene.payload(scene.read(spec)).footprint["coordinates"][0]
    w = spec.window
    for col, row in [(w.col, w.row), (w.col + w.width, w.row), (w.col + w.width, w.row + w.height)]:
        lon, lat = to_lonlat.transform(*(transform @ (col, row)))
        assert min(abs(lon - x) + abs(lat - y) for x, y in ring) < 1e-9


def test_negative_and_constant_values_stretch_without_nan(tmp_path: Path) -> None:
    neg = write_tif(tmp_path / "neg.tif", np.random.default_rng(1).integers(-3000, -1, (1, 300, 300), dtype=np.int16))
    const = write_tif(tmp_path / "const.tif", np.full((1, 300, 300), 1234, np.uint16))
    with open_scene(neg) as scene:
        assert scene.stretch is not None and all(-3000 <= lo < hi <= -1 for lo, hi in scene.stretch)
        pixels = scene.read(next(scene.windows())).pixels
        assert pixels.min() == 0 and pixels.max() == 255
    with open_scene(const) as scene:
        assert scene.stretch == [[1234.0, 1235.0]] * 3
        chip = scene.read(next(scene.windows()))
        assert chip.valid_fraction == 1.0 and not chip.pixels.any()


def test_every_cut_of_a_tiff_is_refused(tmp_path: Path) -> None:
    """Cut at 40 offsets from 1 byte to 1 byte short: never opened, never anything but a SceneError."""
    whole = good_tif(tmp_path / "whole.tif").read_bytes()
    cut = tmp_path / "cut.tif"
    for size in sorted({*np.linspace(1, len(whole) - 1, 40).astype(int).tolist(), len(whole) - 1}):
        cut.write_bytes(whole[:size])
        with pytest.raises(SceneError, match="truncated or corrupt TIFF"):
            open_scene(cut)


def test_integrity_check_passes_every_shared_scene_and_sparse_files(scenes_dir: Path, tmp_path: Path) -> None:
    """No false alarm: COGs with overviews, striped, JPEG/LZW/DEFLATE, masks; sparse blocks (offset 0)."""
    scenes = sorted(scenes_dir.rglob("*.tif"))
    assert len(scenes) == 14
    for path in scenes:
        assert file_kind(str(path)) == "TIFF" and tiff_problem(str(path)) is None, path
    sparse = tmp_path / "sparse.tif"
    with rasterio.open(
        sparse,
        "w",
        driver="GTiff",
        width=4096,
        height=4096,
        count=1,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(0, 0, 1, 1),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        sparse_ok=True,
    ) as dst:
        dst.write(np.ones((1, 256, 256), np.uint8), window=RioWindow(512, 512, 256, 256))
    assert tiff_problem(str(sparse)) is None
    with open_scene(sparse) as scene:
        assert scene.count() == 19 * 19


# -- a file that changes while it is read -------------------------------------------------------


def mutate(path: Path, how: str) -> None:
    """Change the scene as another program would: rewrite in place (same size), cut, or replace it."""
    if how == "rewrite":
        fresh = write_tif(
            path.with_name("fresh.tif"), rgb(1120, 1120, seed=9), tiled=True, blockxsize=256, blockysize=256
        )
        data = fresh.read_bytes()
        assert len(data) == path.stat().st_size
        with path.open("r+b") as f:
            f.write(data)
    elif how == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    else:
        fresh = write_tif(
            path.with_name("fresh.tif"), rgb(1120, 1120, seed=9), tiled=True, blockxsize=256, blockysize=256
        )
        os.replace(fresh, path)


@pytest.mark.parametrize("how", ["rewrite", "truncate", "replace"])
def test_file_changed_while_read_fails_the_next_read(tmp_path: Path, how: str) -> None:
    """Chips read before the change are the hashed content's; every read after it fails cleanly."""
    path = write_tif(tmp_path / "scene.tif", rgb(1120, 1120), tiled=True, blockxsize=256, blockysize=256)
    reference = Path(shutil.copy(path, tmp_path / "reference.tif"))
    with open_scene(path) as scene:
        specs = list(scene.windows())
        before = scene.read_many(specs[:3])
        changer = threading.Thread(target=mutate, args=(path, how))
        changer.start()
        changer.join()
        for spec in specs[3:6]:
            with pytest.raises(SceneError, match=r"scene\.tif changed while it was being read") as info:
                scene.read(spec)
            assert "\n" not in str(info.value)
    with open_scene(reference) as original:
        assert all((original.read(c.spec).pixels == c.pixels).all() for c in before)


# -- the command line ---------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    peak_rss: int
    """Peak resident set of the command's process, in bytes (its own rusage, from wait4)."""


def run_cli(*args: str, store: Path, timeout: float = 600) -> Run:
    """Run the installed `geosearch` command; measure its own peak RSS with wait4 (not the test's)."""
    env = {**os.environ, "GEOSEARCH_STORE": str(store)}
    for key in ("QDRANT_URL", "GDAL_CACHEMAX"):
        env.pop(key, None)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([GEOSEARCH, *args], stdout=out, stderr=err, env=env, cwd=store.parent)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, out.read(), err.read(), int(usage.ru_maxrss) * 1024)


SUMMARY = re.compile(r"^(failed|ingested|already)\s+(\S+?)(?::\s+|\s+\()(.*)$")


def summary_lines(run: Run) -> dict[str, tuple[str, str]]:
    """File name -> (status, rest of its line), from the per-scene lines of an ingest summary."""
    lines: dict[str, tuple[str, str]] = {}
    for line in (run.stdout + run.stderr).splitlines():
        match = SUMMARY.match(line)
        if match:
            name = Path(match.group(2)).name
            assert name not in lines, f"two summary lines for {name}"
            lines[name] = (match.group(1), match.group(3))
    return lines


def snapshot(store: Path, model: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Every served chip (id -> its properties, score left out) and every scene (id -> SceneInfo)."""
    found = run_cli("search", "a field", "--model", model, "--limit", "1000", "--geojson", store=store)
    assert found.code == 0, found.stderr
    chips: dict[str, Any] = {}
    for feature in json.loads(found.stdout)["features"]:
        props = dict(feature["properties"])
        score = props.pop("score")
        assert isinstance(score, float) and np.isfinite(score), feature  # no NaN vector anywhere
        chips[feature["id"]] = {"geometry": feature["geometry"], **props}
    listed = run_cli("scenes", "--json", "--model", model, store=store)
    assert listed.code == 0, listed.stderr
    scenes = {s["id"]: s for s in json.loads(listed.stdout)}
    return chips, scenes


BASELINE = "rio-tiler/cog_rgb.tif"  # 383x232: 4 chips (edge-shifted), already in the store before the bad corpus
SHARED_GOOD = "rio-color/rgb8.tif"  # 438x500: 6 chips, copied into the mixed folder


@dataclass
class CorpusRun:
    folder: Path
    before: tuple[dict[str, Any], dict[str, dict[str, Any]]]
    after: tuple[dict[str, Any], dict[str, dict[str, Any]]]
    run: Run
    lines: dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory, tiny_clip_spec: str, scenes_dir: Path) -> CorpusRun:
    """A store holding one good scene, then ONE ingest of a folder that mixes every bad and odd file with
    good ones (some in a subfolder), plus a path that does not exist."""
    root = tmp_path_factory.mktemp("bad_corpus")
    store = root / "store"
    model = tiny_clip_spec
    first = run_cli("ingest", str(scenes_dir / BASELINE), "--model", model, "--no-captions", "--quiet", store=store)
    assert first.code == 0, first.stderr
    before = snapshot(store, model)
    folder = root / "scenes"
    (folder / "sub").mkdir(parents=True)
    for i, (name, case) in enumerate({**BAD, **UNREADABLE, **ODD}.items()):
        build(folder / "sub" if i % 3 == 0 else folder, name, case)
    good_tif(folder / "good_generated.tif", seed=5)
    shutil.copy(scenes_dir / SHARED_GOOD, folder / "sub" / "good_shared.tif")
    shutil.copy(scenes_dir / BASELINE, folder / "baseline_copy.tif")  # same content: already in the store
    missing = root / "no_such_scene.tif"
    run = run_cli("ingest", str(folder), str(missing), "--model", model, "--no-captions", "--quiet", store=store)
    after = snapshot(store, model)
    return CorpusRun(folder, before, after, run, summary_lines(run))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted({**BAD, **UNREADABLE}))
def test_cli_reports_each_bad_file_in_one_line(corpus_run: CorpusRun, name: str) -> None:
    case = {**BAD, **UNREADABLE}[name]
    status, rest = corpus_run.lines[f"{name}{case.suffix}"]
    assert status == "failed", rest
    assert re.search(case.reason, rest), rest


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ODD))
def test_cli_ingests_each_odd_file_sensibly(corpus_run: CorpusRun, name: str) -> None:
    case = ODD[name]
    status, rest = corpus_run.lines[f"{name}.tif"]
    assert status == "ingested", rest
    assert rest.startswith(f"{case.kept} chips, {case.total - case.kept}"), rest
    chips, scenes = corpus_run.after
    (scene,) = [s for s in scenes.values() if s["path"].endswith(f"/{name}.tif")]
    assert scene["chips"] == case.kept and sum(c["scene"] == scene["id"] for c in chips.values()) == case.kept


@pytest.mark.slow
def test_cli_bad_corpus_run_as_a_whole(corpus_run: CorpusRun) -> None:
    """Exit 1; nothing on stderr but the `failed` lines; good files in; the old scene untouched; no orphans."""
    run = corpus_run.run
    assert run.code == 1, run.stderr
    assert "Traceback" not in run.stderr
    stray = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("failed   ")]
    assert stray == [], stray
    lines = corpus_run.lines
    assert lines["no_such_scene.tif"][0] == "failed" and "scene file not found" in lines["no_such_scene.tif"][1]
    assert lines["good_generated.tif"] == ("ingested", "4 chips, 0 skipped")
    assert lines["good_shared.tif"][0] == "ingested" and lines["good_shared.tif"][1].startswith("6 chips")
    assert lines["baseline_copy.tif"][0] == "already"
    # the VRT's good source (`degenerate_geotransform-source.tif`) is a good scene of its own
    expected_files = len(BAD) + len(UNREADABLE) + len(ODD) + 5
    assert len(lines) == expected_files, sorted(lines)
    failed = sum(status == "failed" for status, _ in lines.values())
    assert failed == len(BAD) + len(UNREADABLE) + 1
    assert f"{failed} failed" in run.stdout

    before_chips, before_scenes = corpus_run.before
    after_chips, after_scenes = corpus_run.after
    (baseline_id,) = before_scenes
    assert after_scenes[baseline_id] == before_scenes[baseline_id]  # not redone, not touched
    assert {k: v for k, v in after_chips.items() if v["scene"] == baseline_id} == before_chips
    # served chips are exactly the recorded scenes' chips: a failed scene leaves none behind
    assert {c["scene"] for c in after_chips.values()} <= set(after_scenes)
    assert len(after_chips) == sum(s["chips"] for s in after_scenes.values())
    ingested = {Path(s["path"]).name for s in after_scenes.values()}
    assert ingested == {
        "cog_rgb.tif",
        "good_generated.tif",
        "good_shared.tif",
        "degenerate_geotransform-source.tif",
        *(f"{name}.tif" for name in ODD),
    }


@pytest.mark.slow
def test_cli_changed_file_while_ingesting_fails_that_scene_only(tmp_path: Path, tiny_clip_spec: str) -> None:
    """The file is cut while `geosearch ingest` reads it (after its first chips are written): that scene
    fails with the reason, no chip of it stays in the store, and the next scene is still ingested."""
    store = tmp_path / "store"
    scene = write_tif(tmp_path / "changing.tif", rgb(1280, 1280), tiled=True, blockxsize=256, blockysize=256)
    after = good_tif(tmp_path / "zz_after.tif")
    env = {**os.environ, "GEOSEARCH_STORE": str(store)}
    env.pop("QDRANT_URL", None)
    proc = subprocess.Popen(
        [
            GEOSEARCH,
            "ingest",
            str(scene),
            str(after),
            "--model",
            tiny_clip_spec,
            "--no-captions",
            "--chip-size",
            "32",
            "--batch-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None and proc.stdout is not None
    progress = re.compile(rb"\b([1-9]\d*)/(\d+)\b")
    seen = b""
    changed = False
    while chunk := os.read(proc.stderr.fileno(), 4096):
        seen += chunk
        if not changed and progress.search(seen[-200:]):
            os.truncate(scene, scene.stat().st_size // 2)  # first chips are in: cut the file
            changed = True
    stdout = proc.stdout.read().decode()
    assert proc.wait(timeout=300) == 1, seen.decode(errors="replace")
    assert changed, "no progress was seen before the ingest ended"
    stderr = seen.decode(errors="replace")
    assert "Traceback" not in stderr
    assert re.search(r"failed\s+\S*changing\.tif: .*changed while it was being read", stderr), stderr
    assert re.search(r"ingested\s+\S*zz_after\.tif: 100 chips", stdout), stdout
    chips, scenes = snapshot(store, tiny_clip_spec)
    assert [Path(s["path"]).name for s in scenes.values()] == ["zz_after.tif"]
    assert len(chips) == 100 and {c["scene"] for c in chips.values()} == set(scenes)


@pytest.mark.slow
def test_cli_60k_scene_ingests_in_bounded_memory(tmp_path: Path, tiny_clip_spec: str) -> None:
    """A 60,000 x 60,000 x 3 uint8 scene (10.8 GB of pixels, a 2.5 MB sparse GeoTIFF with three 512²
    patches of data) ingests with the default options: 268² = 71,824 chips listed, the nodata ones
    skipped, and the command's own peak RSS stays within 256 MiB of a one-small-scene ingest's."""
    small_store, huge_store = tmp_path / "small", tmp_path / "huge"
    small = good_tif(tmp_path / "small.tif")
    huge = tmp_path / "huge.tif"
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": 60000,
        "height": 60000,
        "count": 3,
        "dtype": "uint8",
        "nodata": 0,
        "crs": "EPSG:32633",
        "transform": from_origin(300000, 5000000, 1, 1),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "sparse_ok": True,
    }
    patch = np.random.default_rng(0).integers(1, 255, (3, 512, 512), dtype=np.uint8)
    with rasterio.open(huge, "w", **profile) as dst:
        for col, row in [(0, 0), (30208, 30208), (59392, 59392)]:
            dst.write(patch, window=RioWindow(col, row, 512, 512))
    assert huge.stat().st_size < 5 * MiB
    args = ("--model", tiny_clip_spec, "--no-captions", "--quiet")
    base = run_cli("ingest", str(small), *args, store=small_store)
    assert base.code == 0, base.stderr
    run = run_cli("ingest", str(huge), *args, store=huge_store)
    assert run.code == 0, run.stderr
    match = re.search(r"ingested\s+\S*huge\.tif: (\d+) chips, (\d+) skipped", run.stdout)
    assert match, run.stdout
    kept, skipped = int(match.group(1)), int(match.group(2))
    assert kept + skipped == 268 * 268 and 0 < kept < 30
    print(f"peak RSS: small scene {base.peak_rss / MiB:.0f} MiB, 60k² scene {run.peak_rss / MiB:.0f} MiB")
    assert run.peak_rss < base.peak_rss + 256 * MiB, (base.peak_rss / MiB, run.peak_rss / MiB)
