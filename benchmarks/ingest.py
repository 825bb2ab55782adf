"""Ingest benchmark: scene -> chips/s end to end versus model-only throughput, per-stage time, peak RSS.

A mosaic GeoTIFF (EPSG:3857, 0.6 m, RGB uint8, tiled 512 px, DEFLATE) is assembled with rasterio from
crops of the shared scenes (../shared/data/scenes) into a temporary directory, never the repository,
at 2,500^2, 5,000^2 and 10,000^2 px. Each configuration runs in a fresh child process, so its peak RSS
(ru_maxrss) is its own:

* ingest: `geosearch.pipeline.ingest` into a fresh embedded store with the default embedder
  (`load_embedder()`), without captions at every size, and with the "nearest-caption" captioner
  (sharing the loaded embedder) at the largest size; end to end = chips written / wall time of
  `ingest()` (planning, reading, model, store writes and `finish_ingest` included);
* model only, in the same process, passes before each of 3 ingest rounds and after the last
  (the machine is shared, so both rates are medians of runs interleaved in time): the same model
  calls on pre-loaded uint8 chip tensors of the same scene at the same batch size (`encode_images`,
  plus captioning as the pipeline does it: `caption_vectors` on the chip vectors when the captioner
  shares the embedder).

Efficiency = end-to-end chips/s / model-only chips/s (target >= 0.85). Both run with
OMP_WAIT_POLICY=PASSIVE unless it is set, as `geosearch ingest` runs (see geosearch.pipeline).
Memory is flat when peak RSS at 10,000^2 is about that at 2,500^2 (`ingest_rss_growth_ratio`, first
ingest of each fresh process; the peak after every round is listed too).

Run from the repository root:

    python benchmarks/ingest.py                              # 2,500^2, 5,000^2, 10,000^2 (+ captions)
    python benchmarks/ingest.py --sizes 2500 --no-captions   # quick check

Writes benchmarks/results/ingest.json and updates its keys of benchmarks/results/summary.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `geosearch ingest` sets it, before torch loads

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CELL = 512
GSD = 0.6
ORIGIN = (-8_590_000.0, 4_720_000.0)  # EPSG:3857 metres (Virginia), top-left corner
CAPTIONER = "nearest-caption"


# ---- the mosaic ---------------------------------------------------------------------------------
def _sources() -> list[NDArray[np.uint8]]:
    """RGB uint8 imagery of the shared scenes, at least one cell in each dimension."""
    import rasterio

    out: list[NDArray[np.uint8]] = []
    for path in C.scene_paths():
        with rasterio.open(path) as ds:
            if ds.dtypes[0] != "uint8" or ds.width < CELL or ds.height < CELL:
                continue
            data = ds.read()
        rgb = np.repeat(data[:1], 3, axis=0) if data.shape[0] < 3 else data[:3]
        img = np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
        if img.mean() > 8:  # skip the (almost fully transparent) alpha test scene
            out.append(img)
    if not out:
        raise SystemExit(f"no usable uint8 scenes under {C.SCENES_DIR}")
    return out


def mosaic(size: int, seed: int = 0) -> Path:
    """A size x size GeoTIFF of random crops/flips of the shared scenes, cached under the temp dir."""
    import rasterio
    from rasterio.transform import from_origin

    path = C.cache_dir() / "mosaics" / f"mosaic_{size}_s{seed}.tif"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    sources = _sources()
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp.tif")
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:3857",
        "transform": from_origin(ORIGIN[0], ORIGIN[1], GSD, GSD),
        "tiled": True,
        "blockxsize": CELL,
        "blockysize": CELL,
        "compress": "deflate",
        "photometric": "RGB",
    }
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, CELL):
            for col in range(0, size, CELL):
                h, w = min(CELL, size - row), min(CELL, size - col)
                src = sources[int(rng.integers(len(sources)))]
                y, x = int(rng.integers(src.shape[0] - CELL + 1)), int(rng.integers(src.shape[1] - CELL + 1))
                tile = src[y : y + CELL, x : x + CELL]
                tile = np.rot90(tile, int(rng.integers(4)))
                if rng.random() < 0.5:
                    tile = tile[:, ::-1]
                block = np.moveaxis(np.ascontiguousarray(tile[:h, :w]), -1, 0)
                dst.write(block, window=rasterio.windows.Window(col, row, w, h))
    tmp.replace(path)
    return path


# ---- child --------------------------------------------------------------------------------------
def child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from geosearch.plugins.base import EmbeddingCaptioner
    from geosearch.tilers import TileOptions, open_scene

    from geosearch import load_captioner, load_embedder
    from geosearch.engine import Engine
    from geosearch.pipeline import IngestOptions, ingest
    from geosearch.store import open_store

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    rss_start = C.rss_bytes()
    from geosearch.plugins.cpu import runtime_info

    embedder = load_embedder()
    captioner = load_captioner(CAPTIONER, embedder=embedder) if spec["captions"] else None
    rss_models = C.rss_bytes()
    batch = int(spec["batch_size"])
    # model only: the same calls on pre-loaded uint8 chips of the same scene, same batch size
    n_model = int(spec["model_chips"])
    with open_scene(spec["scene"], TileOptions()) as scene:
        specs = list(scene.windows())
        step = max(1, len(specs) // n_model)
        pixels = np.stack([scene.read(s).pixels for s in specs[::step][:n_model]])
    # as the pipeline does: a captioner sharing the embedder captions the chip vectors, no second pass
    reuse = isinstance(captioner, EmbeddingCaptioner) and captioner.embedder.model_id == embedder.model_id

    def model_step(chunk: NDArray[np.uint8]) -> None:
        vectors = embedder.encode_images(chunk)
        if captioner is not None:
            if reuse:
                captioner.caption_vectors(vectors)  # type: ignore[union-attr]
            else:
                captioner.caption(chunk)

    def model_passes(out: list[float]) -> None:
        for _ in range(int(spec.get("model_passes", 2))):
            t = time.perf_counter()
            for i in range(0, len(pixels), batch):
                model_step(pixels[i : i + batch])
            out.append(len(pixels) / (time.perf_counter() - t))

    model_step(pixels[:batch])  # warm-up
    passes: list[float] = []
    options = IngestOptions(
        tile=TileOptions(),
        batch_size=batch,
        captions=bool(spec["captions"]),
        gdal_cache_mb=spec["gdal_cache_mb"] or None,
        io_nice=spec["io_nice"] or None,
    )
    # Rounds of (model-only pass, ingest into a fresh store), then a last model pass: the machine is
    # shared, so both rates are medians of passes interleaved in time.
    rates: list[float] = []
    walls: list[float] = []
    stage_runs: list[dict[str, float]] = []
    peaks: list[int] = []  # process peak RSS after each round (ru_maxrss only grows)
    for _ in range(int(spec.get("rounds", 3))):
        model_passes(passes)
        store_dir = Path(tempfile.mkdtemp(prefix="geosearch-ingest-bench-"))
        try:
            store = open_store(store_dir, model_id=embedder.model_id, dim=embedder.dim)
            engine = Engine(embedder, store, captioner=captioner)
            t = time.perf_counter()
            report = ingest(engine, [spec["scene"]], options)
            wall = time.perf_counter() - t
            peaks.append(C.peak_rss_bytes())
            rss_after = C.rss_bytes()
            chips = report.chips
            if not report.ok:
                raise SystemExit(f"ingest failed: {[s.error for s in report.scenes]}")
            engine.close()
            disk = C.dir_size(store_dir)
        finally:
            shutil.rmtree(store_dir, ignore_errors=True)
        rates.append(chips / wall)
        walls.append(wall)
        stage_runs.append(report.stage_seconds)
    model_passes(passes)

    done = len(pixels)
    e2e = float(np.median(rates))
    model = float(np.median(passes))
    middle = int(np.argsort(rates)[len(rates) // 2])  # stage times of the median round
    return {
        "scene_px": spec["size"],
        "captions": bool(spec["captions"]),
        "captioner": CAPTIONER if spec["captions"] else None,
        "captions_reuse_chip_vectors": reuse,
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "runtime": runtime_info(embedder),  # CPU capability, runtime and precision of the embedder
        "chips": chips,
        "skipped": report.skipped,
        "rounds": len(rates),
        "ingest_wall_s": round(walls[middle], 2),
        "stage_seconds": {k: round(v, 2) for k, v in stage_runs[middle].items()},
        "e2e_chips_per_s": round(e2e, 2),
        "e2e_rounds_chips_per_s": [round(x, 1) for x in rates],
        "model_only_chips": done,
        "model_only_chips_per_s": round(model, 2),
        "model_only_passes_chips_per_s": [round(x, 1) for x in passes],
        "gdal_cache_mb": options.gdal_cache_mb,
        "io_nice": options.io_nice,
        "efficiency": round(e2e / model, 3),
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_models_loaded_mb": round(rss_models / 2**20, 1),
        "peak_rss_ingest_mb": round(peaks[0] / 2**20, 1),
        "peak_rss_after_rounds_mb": [round(x / 2**20, 1) for x in peaks],
        "rss_after_ingest_mb": round(rss_after / 2**20, 1),
        "peak_over_models_mb": round((peaks[0] - rss_models) / 2**20, 1),
        "store_disk_mb": round(disk / 2**20, 2),
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="geosearch-ingest-spec-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps({**spec, "out": str(out_path)}))
        cmd = [sys.executable, __file__, "--child", str(spec_path)]
        subprocess.run(cmd, check=True, timeout=3 * 3600)
        return json.loads(out_path.read_text())  # type: ignore[no-any-return]


# ---- driver -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="2500,5000,10000", help="mosaic edge lengths in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-chips", type=int, default=256, help="chips for the model-only measurement")
    parser.add_argument("--model-passes", type=int, default=2, help="model-only passes before each round")
    parser.add_argument("--rounds", type=int, default=3, help="ingest runs, each after model-only passes")
    parser.add_argument("--no-captions", action="store_true", help="skip the run with captions")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    from geosearch.pipeline import IngestOptions

    defaults = IngestOptions()
    parser.add_argument(
        "--gdal-cache-mb", type=int, default=defaults.gdal_cache_mb, help="GDAL block cache (0: GDAL's default)"
    )
    parser.add_argument("--io-nice", type=int, default=defaults.io_nice, help="read/write threads' niceness (0: off)")
    parser.add_argument("--out", type=Path, default=C.RESULTS / "ingest.json")
    parser.add_argument("--summary", type=Path, default=C.RESULTS / "summary.json")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    machine = C.machine()

    runs: list[dict[str, Any]] = []
    plan = [(size, False) for size in sizes]
    if not args.no_captions:
        plan.append((sizes[-1], True))
    for size, captions in plan:
        t = time.perf_counter()
        scene = mosaic(size)
        print(f"mosaic {size}x{size}: {scene} ({time.perf_counter() - t:.1f} s)", flush=True)
        spec = {
            "scene": str(scene),
            "size": size,
            "captions": captions,
            "batch_size": args.batch_size,
            "model_chips": args.model_chips,
            "model_passes": args.model_passes,
            "rounds": args.rounds,
            "threads": args.threads,
            "gdal_cache_mb": args.gdal_cache_mb,
            "io_nice": args.io_nice,
        }
        result = run_child(spec)
        runs.append(result)
        print(json.dumps(result), flush=True)
        C.write_json(args.out, {"benchmark": "ingest", "date": C.now_iso(), "machine": machine, "runs": runs})

    print(
        f"\n{'scene px':>9} {'capt':>5} {'chips':>6} {'e2e/s':>7} {'model/s':>8} {'eff':>6} {'read s':>7} "
        f"{'embed s':>8} {'capt s':>7} {'write s':>8} {'peak RSS':>9} {'over models':>12}"
    )
    for r in runs:
        st = r["stage_seconds"]
        print(
            f"{r['scene_px']:>9} {'yes' if r['captions'] else 'no':>5} {r['chips']:>6} {r['e2e_chips_per_s']:>7.1f} "
            f"{r['model_only_chips_per_s']:>8.1f} {r['efficiency']:>6.3f} {st['read']:>7.1f} {st['embed']:>8.1f} "
            f"{st['caption']:>7.1f} {st['write']:>8.1f} {r['peak_rss_ingest_mb']:>9.0f} "
            f"{r['peak_over_models_mb']:>12.0f}"
        )

    plain = [r for r in runs if not r["captions"]]
    largest = max(plain, key=lambda r: r["scene_px"])
    smallest = min(plain, key=lambda r: r["scene_px"])
    keys: dict[str, Any] = {"ingest_efficiency_cpu": largest["efficiency"]}
    if largest is not smallest:
        keys["ingest_rss_growth_ratio"] = round(largest["peak_rss_ingest_mb"] / smallest["peak_rss_ingest_mb"], 3)
    captioned = [r for r in runs if r["captions"]]
    if captioned:
        keys["ingest_efficiency_cpu_captions"] = captioned[-1]["efficiency"]
    print(f"\nwrote {args.out}; updated {C.update_summary(keys, args.summary)}: {keys}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_spec = json.loads(Path(sys.argv[2]).read_text())
        Path(child_spec["out"]).write_text(json.dumps(child(child_spec)))
        sys.exit(0)
    sys.exit(main())
