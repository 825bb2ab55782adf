"""Ingest benchmark: scene -> chips/s end to end versus model-only throughput, per-stage time, peak RSS.

A mosaic GeoTIFF (EPSG:3857, 0.6 m, RGB uint8, tiled 512 px, DEFLATE) is assembled with rasterio from
crops of the shared scenes (../shared/data/scenes) into a temporary directory, never the repository,
at 2,500^2, 5,000^2 and 10,000^2 px. Each configuration runs in a fresh child process, so its peak RSS
(ru_maxrss) is its own:

* ingest: `geosearch.ingest.ingest` into a fresh embedded store with the default embedder
  (`load_embedder()`), without captions at every size, and with the "nearest-caption" captioner
  (sharing the loaded embedder) at the largest size; end to end = chips written / wall time of
  `ingest()` (planning, reading, model, store writes and `finish_ingest` included);
* model only, in the same process, passes before each of 3 ingest rounds and after the last
  (the machine is shared, so both rates are medians of runs interleaved in time): the same model
  calls on pre-loaded uint8 chip tensors of the same scene at the same batch size (`encode_images`,
  plus captioning as the pipeline does it: `caption_vectors` on the chip vectors when the captioner
  shares the embedder).

Efficiency = end-to-end chips/s / model-only chips/s (target >= 0.85). Both run in the process set-up
of `geosearch ingest` (`geosearch.ingest.runtime.prepare_process`: OMP_WAIT_POLICY=PASSIVE unless it is
set), and `ingest()` applies the same per-run runtime as the command (GDAL cache, GIL interval, niceness).
Memory is flat when peak RSS at 10,000^2 is about that at 2,500^2 (`ingest_rss_growth_ratio`, first
ingest of each fresh process; the peak after every round is listed too).

Run from the repository root:

    python benchmarks/ingest.py                              # 2,500^2, 5,000^2, 10,000^2 (+ captions)
    python benchmarks/ingest.py --sizes 2500 --no-captions   # quick check

Writes benchmarks/results/ingest.json and updates its keys of benchmarks/results/summary.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geosearch.ingest.runtime import prepare_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

prepare_process()  # as `geosearch ingest` does, before torch loads (nothing above imports it)

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
@dataclass
class ModelOnly:
    """The pipeline's model calls on pre-loaded uint8 chips of the scene, at the ingest batch size."""

    embedder: Any
    captioner: Any
    pixels: NDArray[np.uint8]
    batch: int
    reuse: bool
    """As the pipeline does: a captioner sharing the embedder captions the chip vectors, no second pass."""
    rates: list[float] = field(default_factory=list)
    """chips/s of every pass so far."""

    def step(self, chunk: NDArray[np.uint8]) -> None:
        vectors = self.embedder.encode_images(chunk)
        if self.captioner is not None:
            if self.reuse:
                self.captioner.caption_vectors(vectors)
            else:
                self.captioner.caption(chunk)

    def passes(self, count: int) -> None:
        def one_pass() -> None:
            for i in range(0, len(self.pixels), self.batch):
                self.step(self.pixels[i : i + self.batch])

        self.rates += [len(self.pixels) / s for s in C.time_runs(one_pass, count)]


@dataclass
class Round:
    """One ingest into a fresh store."""

    chips: int
    skipped: int
    wall_s: float
    stage_seconds: dict[str, float]
    peak_rss: int
    """Process peak RSS after the round (ru_maxrss only grows)."""
    rss_after: int
    disk: int
    runtime: dict[str, object]
    """What the run ran with, read back from the process (`IngestReport.runtime`)."""


def sample_chips(scene_path: str, n: int) -> NDArray[np.uint8]:
    """`n` chips spread evenly over the scene's default tiling, read into memory."""
    from geosearch.tilers import TileOptions, open_scene

    with open_scene(scene_path, TileOptions()) as scene:
        specs = list(scene.windows())
        step = max(1, len(specs) // n)
        return np.stack([scene.read(s).pixels for s in specs[::step][:n]])


def ingest_round(embedder: Any, captioner: Any, scene: str, options: Any) -> Round:
    """`ingest()` of the scene into a fresh store in a temporary directory, removed afterwards."""
    from geosearch.engine import Engine
    from geosearch.ingest import ingest
    from geosearch.store import open_store

    store_dir = Path(tempfile.mkdtemp(prefix="geosearch-ingest-bench-"))
    try:
        store = open_store(store_dir, model_id=embedder.model_id, dim=embedder.dim)
        engine = Engine(embedder, store, captioner=captioner)
        t = time.perf_counter()
        report = ingest(engine, [scene], options)
        wall = time.perf_counter() - t
        peak, rss_after = C.peak_rss_bytes(), C.rss_bytes()
        if not report.ok:
            raise SystemExit(f"ingest failed: {[s.error for s in report.scenes]}")
        engine.close()
        disk = C.dir_size(store_dir)
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    return Round(report.chips, report.skipped, wall, report.stage_seconds, peak, rss_after, disk, report.runtime)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh process: rounds of (model-only passes, ingest into a fresh store),
    then a last model-only pass. The machine may be shared, so both rates are medians of passes
    interleaved in time."""
    import torch

    from geosearch import load_captioner, load_embedder
    from geosearch.ingest import IngestOptions
    from geosearch.plugins.base import EmbeddingCaptioner
    from geosearch.tilers import TileOptions

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    rss_start = C.rss_bytes()
    embedder = load_embedder()
    captioner = load_captioner(CAPTIONER, embedder=embedder) if spec["captions"] else None
    rss_models = C.rss_bytes()
    batch = int(spec["batch_size"])
    reuse = isinstance(captioner, EmbeddingCaptioner) and captioner.embedder.model_id == embedder.model_id
    model = ModelOnly(embedder, captioner, sample_chips(spec["scene"], int(spec["model_chips"])), batch, reuse)
    model.step(model.pixels[:batch])  # warm-up
    options = IngestOptions(
        tile=TileOptions(),
        batch_size=batch,
        captions=bool(spec["captions"]),
        gdal_cache_mb=spec["gdal_cache_mb"] or None,
        io_nice=spec["io_nice"] or None,
    )
    rounds: list[Round] = []
    for _ in range(int(spec.get("rounds", 3))):
        model.passes(int(spec.get("model_passes", 2)))
        rounds.append(ingest_round(embedder, captioner, spec["scene"], options))
    model.passes(int(spec.get("model_passes", 2)))
    return child_result(spec, embedder, model, rounds, options, rss_start, rss_models)


def child_result(
    spec: dict[str, Any],
    embedder: Any,
    model: ModelOnly,
    rounds: list[Round],
    options: Any,
    rss_start: int,
    rss_models: int,
) -> dict[str, Any]:
    """The configuration's row: medians over the rounds, stage times of the median round, chips, RSS
    and disk of the last round, peaks of the first (and of every round)."""
    import torch

    from geosearch.plugins.cpu import runtime_info

    rates = [r.chips / r.wall_s for r in rounds]
    e2e = float(np.median(rates))
    model_rate = float(np.median(model.rates))
    middle = rounds[int(np.argsort(rates)[len(rates) // 2])]
    first, last = rounds[0], rounds[-1]
    return {
        "scene_px": spec["size"],
        "captions": bool(spec["captions"]),
        "captioner": CAPTIONER if spec["captions"] else None,
        "captions_reuse_chip_vectors": model.reuse,
        "batch_size": model.batch,
        "torch_threads": torch.get_num_threads(),
        "runtime": runtime_info(embedder),  # CPU capability, runtime and precision of the embedder
        "chips": last.chips,
        "skipped": last.skipped,
        "rounds": len(rates),
        "ingest_wall_s": round(middle.wall_s, 2),
        "stage_seconds": {k: round(v, 2) for k, v in middle.stage_seconds.items()},
        "e2e_chips_per_s": round(e2e, 2),
        "e2e_rounds_chips_per_s": [round(x, 1) for x in rates],
        "model_only_chips": len(model.pixels),
        "model_only_chips_per_s": round(model_rate, 2),
        "model_only_passes_chips_per_s": [round(x, 1) for x in model.rates],
        "gdal_cache_mb": options.gdal_cache_mb,
        "ingest_runtime": first.runtime,  # GDAL's cache cap in bytes as GDAL reported it during the run, ...
        "io_nice": options.io_nice,
        "efficiency": round(e2e / model_rate, 3),
        "rss_start_mb": C.mb(rss_start),
        "rss_models_loaded_mb": C.mb(rss_models),
        "peak_rss_ingest_mb": C.mb(first.peak_rss),
        "peak_rss_after_rounds_mb": [C.mb(r.peak_rss) for r in rounds],
        "rss_after_ingest_mb": C.mb(last.rss_after),
        "peak_over_models_mb": C.mb(first.peak_rss - rss_models),
        "store_disk_mb": C.mb(last.disk, 2),
    }


# ---- driver -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from geosearch.ingest import IngestOptions

    defaults = IngestOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="2500,5000,10000", help="mosaic edge lengths in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-chips", type=int, default=256, help="chips for the model-only measurement")
    parser.add_argument("--model-passes", type=int, default=2, help="model-only passes before each round")
    parser.add_argument("--rounds", type=int, default=3, help="ingest runs, each after model-only passes")
    parser.add_argument("--no-captions", action="store_true", help="skip the run with captions")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument(
        "--gdal-cache-mb", type=int, default=defaults.gdal_cache_mb, help="GDAL block cache (0: GDAL's default)"
    )
    parser.add_argument("--io-nice", type=int, default=defaults.io_nice, help="read/write threads' niceness (0: off)")
    parser.add_argument("--out", type=Path, default=C.RESULTS / "ingest.json")
    parser.add_argument("--summary", type=Path, default=C.RESULTS / "summary.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    machine = C.machine()
    runs: list[dict[str, Any]] = []
    plan = [(size, False) for size in sizes]
    if not args.no_captions:
        plan.append((sizes[-1], True))
    with tempfile.TemporaryDirectory(prefix="geosearch-ingest-spec-") as work:
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
            result = C.run_child(__file__, "ingest", spec, Path(work), timeout=3 * 3600)
            runs.append(result)
            print(json.dumps(result), flush=True)
            C.write_json(args.out, {"benchmark": "ingest", "date": C.now_iso(), "machine": machine, "runs": runs})
    print()
    print_runs(runs)
    keys = summary_keys(runs)
    print(f"\nwrote {args.out}; updated {C.update_summary(keys, args.summary)}: {keys}")
    return 0


def print_runs(runs: list[dict[str, Any]]) -> None:
    columns = [
        ("scene px", ">9"), ("capt", ">5"), ("chips", ">6"), ("e2e/s", ">7.1f"), ("model/s", ">8.1f"),
        ("eff", ">6.3f"), ("read s", ">7.1f"), ("embed s", ">8.1f"), ("capt s", ">7.1f"), ("write s", ">8.1f"),
        ("peak RSS", ">9.0f"), ("over models", ">12.0f"),
    ]  # fmt: skip
    rows = []
    for r in runs:
        st = r["stage_seconds"]
        rows.append(
            [
                r["scene_px"], "yes" if r["captions"] else "no", r["chips"], r["e2e_chips_per_s"],
                r["model_only_chips_per_s"], r["efficiency"], st["read"], st["embed"], st["caption"], st["write"],
                r["peak_rss_ingest_mb"], r["peak_over_models_mb"],
            ]
        )  # fmt: skip
    C.print_table(columns, rows)


def summary_keys(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """This benchmark's keys of summary.json: efficiency at the largest size (with captions too) and
    the peak-RSS growth from the smallest to the largest size."""
    plain = [r for r in runs if not r["captions"]]
    largest = max(plain, key=lambda r: r["scene_px"])
    smallest = min(plain, key=lambda r: r["scene_px"])
    keys: dict[str, Any] = {"ingest_efficiency_cpu": largest["efficiency"]}
    if largest is not smallest:
        keys["ingest_rss_growth_ratio"] = round(largest["peak_rss_ingest_mb"] / smallest["peak_rss_ingest_mb"], 3)
    captioned = [r for r in runs if r["captions"]]
    if captioned:
        keys["ingest_efficiency_cpu_captions"] = captioned[-1]["efficiency"]
    return keys


if __name__ == "__main__":
    C.child_entry({"ingest": child})
    sys.exit(main())
