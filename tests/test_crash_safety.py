"""Crash safety of ingest: one driver and runtime, unfinished scenes never served, SIGKILL at any point,
the store lock, deletes racing searches, --debug, and memory over repeated runs.

Everything runs for real: the tiny random CLIP (`tiny_engine`, `tiny_clip_spec`), real shared scenes, the
embedded Qdrant engine and the installed `geosearch` command in subprocesses. The model failures are a
small real embedder class wrapping the tiny CLIP, handed to `Engine` as an object.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from support import GEOSEARCH

from geosearch.engine import Engine
from geosearch.errors import GeoSearchError, NotFound, StoreLocked
from geosearch.ingest import IngestOptions, SceneStatus, ingest
from geosearch.schemas import SceneInfo
from geosearch.schemas.chips import ChipPayload, GeoPoint, Window
from geosearch.store import ChipPoint, ChipStore, chip_id, open_store
from geosearch.store.ids import scene_point_id
from geosearch.store.records import Where
from geosearch.tilers import TileOptions

PLAIN = IngestOptions(captions=False)
MiB = 1024 * 1024


def cli_env() -> dict[str, str]:
    """The environment of a user's shell, without variables that would change what is measured."""
    env = dict(os.environ)
    for key in ("QDRANT_URL", "GEOSEARCH_STORE", "GDAL_CACHEMAX", "OMP_WAIT_POLICY"):
        env.pop(key, None)
    return env


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GEOSEARCH, *args], capture_output=True, text=True, env=cli_env(), timeout=timeout)


def visible_ids(store: ChipStore) -> set[str]:
    hits, token = store.browse(limit=10_000)
    assert token is None
    return {h.id for h in hits}


def raw_count(store: ChipStore) -> int:
    """Every chip point in the store, hidden ones included (the engine primitive, no scene filter)."""
    return store._count(Where(), exact=True)


def clean_ids(engine: Engine, paths: list[Path], options: IngestOptions = PLAIN) -> set[str]:
    """Chip ids a clean ingest of `paths` writes, into the engine's own (empty) store."""
    report = ingest(engine, paths, options)
    assert report.ok, [s.error for s in report.scenes]
    ids = visible_ids(engine.store)
    assert len(ids) == report.chips == engine.store.count()
    return ids


# ---- 1. one driver, one runtime ----------------------------------------------------------------------
def test_library_ingest_runs_with_the_configured_runtime(tiny_engine, scenes_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """GDAL's cache cap as GDAL reports it inside the run is the configured MiB (rasterio takes bytes: a
    bare 64 used to mean 64 bytes), and the caller's cap is back afterwards."""
    import rasterio.env

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    report = ingest(
        tiny_engine, [scenes_dir / "rio-tiler" / "cog_rgb.tif"], IngestOptions(captions=False, gdal_cache_mb=48)
    )
    assert report.ok
    assert report.runtime["gdal_cache_bytes"] == 48 * MiB
    assert report.runtime["switch_interval_s"] == pytest.approx(0.0005)
    assert rasterio.env.get_gdal_config("GDAL_CACHEMAX") == before


@pytest.mark.slow
def test_cli_ingest_runs_with_the_same_runtime_as_the_library(
    tmp_path, tiny_engine, tiny_clip_spec, scenes_dir
) -> None:  # type: ignore[no-untyped-def]
    """`geosearch ingest` goes through the library's driver: its reader thread reports the same GDAL cache
    cap, GIL interval and I/O niceness as a library run with default options, plus OMP_WAIT_POLICY."""
    scene = str(scenes_dir / "rio-tiler" / "cog_rgb.tif")
    result = cli(
        "--debug",
        "ingest",
        scene,
        "--model",
        tiny_clip_spec,
        "--no-captions",
        "--quiet",
        "--store",
        str(tmp_path / "s"),
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stderr.splitlines() if "ingest runtime (reader thread):" in x)
    seen = dict(item.split("=", 1) for item in line.split("):", 1)[1].split())
    library = ingest(tiny_engine, [scene], PLAIN).runtime
    assert int(seen["gdal_cache_bytes"]) == PLAIN.gdal_cache_mb * MiB == library["gdal_cache_bytes"]  # type: ignore[operator]
    assert float(seen["switch_interval_s"]) == library["switch_interval_s"]
    assert seen["io_nice"] == str(library["io_nice"])
    assert seen["omp_wait_policy"] == "PASSIVE"
    assert "1 scenes ingested" in result.stdout


# ---- 2. unfinished scenes are never served -----------------------------------------------------------
class FailingEmbedder:
    """The tiny CLIP, failing with `error` from its `fail_at`-th batch on, once `written` is set (the
    writer has stored chips of the scene), so a failure lands mid-scene with chips already in the store."""

    def __init__(self, inner: Any, fail_at: int, error: BaseException, written: threading.Event) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.fail_at = fail_at
        self.error = error
        self.written = written
        self.calls = 0

    def encode_images(self, images: Any) -> Any:
        self.calls += 1
        if self.calls >= self.fail_at:
            assert self.written.wait(60)
            raise self.error
        return self.inner.encode_images(images)

    def encode_texts(self, texts: Any) -> Any:
        return self.inner.encode_texts(texts)


def written_after(chips: int) -> tuple[threading.Event, Callable[[int, int, int], None]]:
    event = threading.Event()

    def progress(done: int, scenes: int, total: int) -> None:
        if done >= chips:
            event.set()

    return event, progress


def test_run_stopped_mid_scene_serves_nothing_of_it_and_rerun_replaces_it(
    tiny_engine, tiny_clip_spec, scenes_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """A fatal model error after two batches of a scene chipped on another grid (stride 112): none of its
    stored chips are served, and the next run with the default grid leaves exactly a clean run's chips."""
    from geosearch import load_embedder

    scene = scenes_dir / "rasterio" / "cogeo.tif"
    store = tiny_engine.store
    written, progress = written_after(8)
    failing = Engine(FailingEmbedder(tiny_engine.embedder, 3, RuntimeError("model crashed"), written), store)
    options = IngestOptions(tile=TileOptions(stride=112), captions=False, batch_size=4)
    with pytest.raises(RuntimeError, match="model crashed"):
        ingest(failing, [scene], options, progress)
    assert raw_count(store) >= 8  # chips of the unfinished scene are in the store ...
    assert store.count() == 0 and visible_ids(store) == set()  # ... and never served
    assert store.search(np.ones(store.dim, dtype=np.float32), limit=1000) == []
    assert store.list_scenes() == [] and list(store.unfinished_scenes().values()) == ["ingesting"]

    report = ingest(tiny_engine, [scene], PLAIN)
    assert report.scenes[0].status == SceneStatus.INGESTED
    with Engine(
        load_embedder(tiny_clip_spec, device="cpu"),
        open_store(tmp_path / "clean", model_id=store.model_id, dim=store.dim),
    ) as clean:
        expected = clean_ids(clean, [scene])
    assert visible_ids(store) == expected and raw_count(store) == store.count() == len(expected) == 25
    assert store.unfinished_scenes() == {}


def test_engine_deletes_a_scene_a_stopped_run_left_unfinished(tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """`geosearch delete` / DELETE /scenes/{id} also clears a scene that a killed run left hidden."""
    scene = scenes_dir / "rasterio" / "cogeo.tif"
    store = tiny_engine.store
    written, progress = written_after(8)
    failing = Engine(FailingEmbedder(tiny_engine.embedder, 3, RuntimeError("model crashed"), written), store)
    with pytest.raises(RuntimeError, match="model crashed"):
        ingest(failing, [scene], IngestOptions(captions=False, batch_size=4), progress)
    (scene_id,) = store.unfinished_scenes()
    assert tiny_engine.delete_scene(scene_id) >= 8
    assert raw_count(store) == 0 and store.unfinished_scenes() == {}
    with pytest.raises(NotFound):
        tiny_engine.delete_scene(scene_id)


def test_scene_failing_mid_scene_is_dropped_and_the_others_go_on(tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """A model error the engine reports (GeoSearchError) fails that scene only: its partial chips are
    deleted, the next scene is ingested, and a re-run ingests the failed one exactly."""
    first, second = scenes_dir / "rasterio" / "cogeo.tif", scenes_dir / "rio-tiler" / "cog_rgb.tif"
    store = tiny_engine.store
    written, progress = written_after(4)
    failing = Engine(FailingEmbedder(tiny_engine.embedder, 3, GeoSearchError("out of memory"), written), store)
    # Fails from the 3rd batch on: cogeo (25 chips) midway; cog_rgb (4 chips, one batch) after it too.
    report = ingest(failing, [first, second], IngestOptions(captions=False, batch_size=4), progress)
    assert [s.status for s in report.scenes] == [SceneStatus.FAILED, SceneStatus.FAILED]
    assert report.scenes[0].error == "out of memory"
    assert raw_count(store) == store.count() == 0 and store.unfinished_scenes() == {}

    again = ingest(tiny_engine, [first, second], PLAIN)
    assert [s.status for s in again.scenes] == [SceneStatus.INGESTED, SceneStatus.INGESTED]
    assert raw_count(store) == store.count() == again.chips == 29


@pytest.mark.parametrize("backend", ["edge", "qdrant-local"])
def test_scene_states_hide_unfinished_scenes_in_both_engines(tmp_path: Path, backend: str) -> None:
    """begin_scene hides a scene and clears its old chips; its new chips stay unserved (search, browse,
    count, get, get_vector) until put_scene; a record without a state (older stores) counts as complete;
    an edge store reopened after the process stopped mid-scene still hides it; delete_scene works in
    any state."""
    rng = np.random.default_rng(0)
    location = str(tmp_path / "store") if backend == "edge" else ":memory:"
    store = open_store(location, model_id="m", dim=8)
    old, old_info = synthetic_scene("a", 5, 8, "m", rng)
    store.upsert(old)
    store.put_scene(old_info)
    assert store.count() == 5 and store.get(old[0].id) is not None

    assert store.begin_scene("a") == 5  # the old version's chips go
    new, _ = synthetic_scene("a", 3, 8, "m", rng)
    store.upsert(new)
    other, other_info = synthetic_scene("b", 4, 8, "m", rng)
    store.upsert(other)
    store.put_scene(other_info)
    assert raw_count(store) == 7 and store.count() == 4 and store.count(scene="a") == 0
    assert {h.payload.scene_id for h in store.search(new[0].vector, limit=100)} == {"b"}
    assert store.search(new[0].vector, limit=100, scene="a") == []
    assert visible_ids(store) == {p.id for p in other}
    assert store.get(new[0].id) is None and store.get_vector(new[0].id) is None
    assert store.get_scene("a") is None and [s.id for s in store.list_scenes()] == ["b"]
    assert store.unfinished_scenes() == {"a": "ingesting"}
    if backend == "edge":  # the hidden state is on disk, not only in this process
        store.close()
        store = open_store(location, model_id="m", dim=8)
        assert store.unfinished_scenes() == {"a": "ingesting"} and store.count() == 4

    store.put_scene(msgspec.structs.replace(old_info, chips=3))
    assert store.count() == 7 and store.count(scene="a") == 3 and store.unfinished_scenes() == {}
    assert store.get_vector(new[0].id) is not None
    assert store.delete_scene("a") == 3 and store.delete_scene("a") == 0
    assert store.count() == raw_count(store) == 4 and store.unfinished_scenes() == {}
    legacy = msgspec.to_builtins(msgspec.structs.replace(other_info, id="c"))  # a record from before states
    store._scene_put(scene_point_id("c"), legacy)
    assert [s.id for s in store.list_scenes()] == ["b", "c"] and store.unfinished_scenes() == {}
    store.close()


# ---- 3. SIGKILL at random points ---------------------------------------------------------------------
KILL_SCENES = ("rasterio/cogeo.tif", "rio-tiler/cog_rgb.tif", "rasterio/RGB.byte.tif", "rio-tiler/cog.tif")


def start_ingest(store: Path, spec: str, scenes: list[str], *extra: str) -> subprocess.Popen[str]:
    args = [GEOSEARCH, "--debug", "ingest", *scenes, "--store", str(store), "--model", spec, "--no-captions"]
    return subprocess.Popen(
        [*args, "--quiet", "--batch-size", "4", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def wait_for_writes(proc: subprocess.Popen[str], batches: int, timeout: float = 120) -> int:
    """Read the ingest's debug log until `batches` batches are written (or it ends); returns those seen."""
    assert proc.stderr is not None
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < batches and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += "write: wrote" in line
    return seen


def check_store_serves_only_finished_scenes(
    store_dir: Path, model_id: str, dim: int, expected: dict[str, int]
) -> dict[str, int]:
    """Open the store (the killed process's lock must not stand in the way): every scene recorded
    complete holds exactly its chips, and nothing else is served. Returns {scene id: chips} of those."""
    with open_store(store_dir, model_id=model_id, dim=dim) as store:
        complete = {s.id: s.chips for s in store.list_scenes()}
        for scene_id, chips in complete.items():
            assert chips == expected[scene_id] == store.count(scene=scene_id)
        hits, _ = store.browse(limit=10_000)
        assert {h.payload.scene_id for h in hits} <= set(complete)
        assert len(hits) == store.count() == sum(complete.values())
        found = store.search(np.ones(dim, dtype=np.float32), limit=1000)
        assert {h.payload.scene_id for h in found} <= set(complete)
        assert set(store.unfinished_scenes()) <= set(expected) - set(complete)
        return complete


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_completes_exactly(
    tmp_path, tiny_engine, tiny_clip_spec, scenes_dir
) -> None:  # type: ignore[no-untyped-def]
    """`geosearch ingest` (batches of 4) SIGKILLed after a random number of batches written, four times
    over the same store (the last at a random moment after that): each time the store opens, serves only
    scenes recorded complete, each whole; then one more run leaves exactly a clean ingest's chips."""
    scenes = [str(scenes_dir / name) for name in KILL_SCENES]
    report = ingest(tiny_engine, scenes, PLAIN)  # the clean reference, in a store of its own
    expected = {s.scene_id or "": s.chips for s in report.scenes}
    expected_ids = visible_ids(tiny_engine.store)
    model_id, dim = tiny_engine.embedder.model_id, tiny_engine.embedder.dim
    store_dir = tmp_path / "killed"
    lock = store_dir / tiny_engine.store.collection / ".geosearch.lock"
    rng = random.Random(11)
    complete: dict[str, int] = {}
    killed = 0
    for trial in range(4):
        left = sum((n + 3) // 4 for scene_id, n in expected.items() if scene_id not in complete)
        force = ("--force",) if left < 3 else ()  # re-ingest finished scenes, so the kill still lands mid-run
        batches = sum((n + 3) // 4 for n in expected.values()) if force else left
        proc = start_ingest(store_dir, tiny_clip_spec, scenes, *force)
        try:
            wait_for_writes(proc, rng.randint(1, batches - 2))
            if trial == 3:
                time.sleep(rng.uniform(0.0, 0.3))  # and one at a random time, not on a log line
            proc.kill()
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed += code == -signal.SIGKILL
        # The dead owner's pid stays in the lock file, unless the run had already closed the store (and
        # cleared it) when the kill landed; either way the next open below must succeed.
        assert lock.read_text().strip() in ("", str(proc.pid))
        complete = check_store_serves_only_finished_scenes(store_dir, model_id, dim, expected)
    assert killed >= 3  # (almost) every trial died mid-run

    done = cli("ingest", *scenes, "--store", str(store_dir), "--model", tiny_clip_spec, "--no-captions", "--quiet")
    assert done.returncode == 0, done.stderr
    assert check_store_serves_only_finished_scenes(store_dir, model_id, dim, expected) == expected
    with open_store(store_dir, model_id=model_id, dim=dim) as store:
        assert visible_ids(store) == expected_ids  # no duplicates, no gaps
        assert raw_count(store) == len(expected_ids) and store.unfinished_scenes() == {}


# ---- 4. one process owns an embedded store -----------------------------------------------------------
@pytest.mark.slow
def test_second_ingest_into_the_same_store_is_refused_with_the_owner_pid(tmp_path, tiny_clip_spec, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    store_dir = tmp_path / "store"
    scenes = [str(scenes_dir / name) for name in KILL_SCENES]
    first = start_ingest(store_dir, tiny_clip_spec, scenes, "--stride", "32")  # long enough to still run
    try:
        assert wait_for_writes(first, 1) == 1
        second = cli(
            "ingest", *scenes, "--store", str(store_dir), "--model", tiny_clip_spec, "--no-captions", "--quiet"
        )
        assert first.poll() is None, "the first ingest ended before the second tried the store"
    finally:
        first.send_signal(signal.SIGINT)
        _, first_err = first.communicate(timeout=60)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        next(x for x in second.stderr.splitlines() if x.startswith("geosearch: error: store "))
    ]
    assert f"is locked by PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
    assert first.returncode == 130 and "interrupted" in first_err
    done = cli("ingest", *scenes, "--store", str(store_dir), "--model", tiny_clip_spec, "--no-captions", "--quiet")
    assert done.returncode == 0 and "4 scenes ingested" in done.stdout, done.stderr


def test_stale_lock_of_a_killed_process_is_recovered(tmp_path: Path) -> None:
    """The kernel drops the lock of a SIGKILLed owner: the next open takes the store over and the lock
    file names the new owner."""
    code = textwrap.dedent(
        f"""
        import time
        from geosearch.store import open_store
        store = open_store({str(tmp_path)!r}, model_id="m", dim=4)
        print("OPEN", flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "OPEN"
        with pytest.raises(StoreLocked, match=f"is locked by PID {owner.pid} "):
            open_store(tmp_path, model_id="m", dim=4)
    finally:
        owner.kill()
        owner.wait(timeout=30)
    (lock,) = tmp_path.glob("*/.geosearch.lock")
    assert lock.read_text().strip() == str(owner.pid)  # stale: its owner is dead
    with open_store(tmp_path, model_id="m", dim=4) as store:
        assert store.count() == 0
        assert lock.read_text().strip() == str(os.getpid())


# ---- 5. deleting while serving -----------------------------------------------------------------------
def synthetic_scene(
    scene_id: str, n: int, dim: int, model_id: str, rng: np.random.Generator
) -> tuple[list[ChipPoint], SceneInfo]:
    lon, lat = float(rng.uniform(-60, 60)), float(rng.uniform(-40, 40))
    points = []
    for i in range(n):
        vec = rng.normal(size=dim).astype(np.float32)
        window = Window(col=i * 224, row=0, width=224, height=224)
        ring = [
            [lon + i * 0.01, lat],
            [lon + i * 0.01 + 0.01, lat],
            [lon + i * 0.01 + 0.01, lat + 0.01],
            [lon + i * 0.01, lat + 0.01],
        ]
        payload = ChipPayload(
            scene_id=scene_id,
            scene_path=f"/data/{scene_id}.tif",
            window=window,
            chip_size=224,
            crs="EPSG:4326",
            footprint={"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            centre=GeoPoint(lon=lon + i * 0.01 + 0.005, lat=lat + 0.005),
            gsd=1.0,
            valid_fraction=1.0,
            model_id=model_id,
        )
        points.append(ChipPoint(chip_id(scene_id, window, 224, model_id), vec / np.linalg.norm(vec), payload))
    info = SceneInfo(
        id=scene_id, path=f"/data/{scene_id}.tif", crs="EPSG:4326", width=n * 224, height=224,
        chips=n, skipped=0, bbox=[lon, lat, lon + n * 0.01, lat + 0.01], model_id=model_id,
    )  # fmt: skip
    return points, info


SCENES = 20


@pytest.mark.slow  # a stress test: a few seconds of searches racing deletions
def test_deleting_scenes_while_searching_never_serves_a_half_deleted_scene(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    """Searches racing `Engine.delete_scene`: every scene in a result was complete when the search began,
    and is there with all its chips (the limit covers the whole store)."""
    store = tiny_engine.store
    rng = np.random.default_rng(3)
    for k in range(SCENES):
        points, info = synthetic_scene(f"scene{k:02d}", 12, store.dim, store.model_id, rng)
        store.upsert(points)
        store.put_scene(info)
    stop = threading.Event()
    errors: list[str] = []
    checks = [0]

    def searcher(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not stop.is_set():
            before = {s.id: s.chips for s in store.list_scenes()}
            if local.random() < 0.5:
                hits = store.search(local.normal(size=store.dim).astype(np.float32), limit=1000)
            else:
                hits, _ = store.browse(limit=1000)
            per_scene: dict[str, int] = {}
            for h in hits:
                per_scene[h.payload.scene_id] = per_scene.get(h.payload.scene_id, 0) + 1
            for scene_id, n in per_scene.items():
                if scene_id not in before or n != before[scene_id]:
                    errors.append(f"{scene_id}: {n} chips served, listed before: {before.get(scene_id)}")
            checks[0] += 1

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the threads as finely as the interpreter allows
    threads = [threading.Thread(target=searcher, args=(seed,)) for seed in range(3)]
    try:
        for t in threads:
            t.start()
        for k in range(SCENES):
            assert tiny_engine.delete_scene(f"scene{k:02d}") == 12
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(previous)
    assert not errors, errors[:5]
    assert checks[0] > SCENES and store.count() == raw_count(store) == 0 and store.list_scenes() == []


# ---- 6. --debug --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_errors_are_one_line_and_tracebacks_only_with_debug(tmp_path, tiny_clip_spec, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """An unexpected error (here the store path is a file) is one line naming it; --debug adds the
    traceback; a user error (no rasters) also gets its traceback only with --debug."""
    not_a_dir = tmp_path / "store"
    not_a_dir.write_text("a file, not a store directory")
    scene = str(scenes_dir / "rio-tiler" / "cog_rgb.tif")
    args = ("ingest", scene, "--store", str(not_a_dir), "--model", tiny_clip_spec, "--no-captions", "--quiet")
    plain = cli(*args)
    assert plain.returncode == 1
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geosearch: error: NotADirectoryError: "), plain.stderr
    assert "--debug" in lines[0]
    debug = cli(*args, "--debug")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("geosearch: error: NotADirectoryError: ")

    user_error = ("ingest", str(tmp_path / "no-such-*.tif"))
    assert cli(*user_error).stderr.strip() == "geosearch: error: no raster files found in the given paths"
    with_debug = cli("--debug", *user_error)
    assert with_debug.returncode == 2 and "Traceback" in with_debug.stderr
    assert with_debug.stderr.strip().splitlines()[-1] == "geosearch: error: no raster files found in the given paths"


# ---- 7. memory over repeated runs --------------------------------------------------------------------
MEMORY_SCRIPT = """
import gc, json, shutil, sys, tempfile
from pathlib import Path
from geosearch import load_embedder
from geosearch.engine import Engine
from geosearch.ingest import IngestOptions, ingest
from geosearch.store import open_store

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

embedder = load_embedder(sys.argv[1], device="cpu")
scenes = sys.argv[2:]
out = []
for _ in range(10):
    store_dir = tempfile.mkdtemp()
    with Engine(embedder, open_store(store_dir, model_id=embedder.model_id, dim=embedder.dim)) as engine:
        assert ingest(engine, scenes, IngestOptions(captions=False)).ok
    shutil.rmtree(store_dir)
    gc.collect()
    out.append(rss_mb())
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_repeated_ingest_calls_do_not_grow_memory(tmp_path, tiny_clip_spec, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """RSS after each of 10 `ingest()` calls (fresh store each) in a fresh process. Measured with the
    tiny model and three scenes: before, +6 to +10 MB a call (about +90 MB from the 2nd to the 10th
    call); now within a few MB in all."""
    import json

    scenes = [str(scenes_dir / n) for n in ("rasterio/cogeo.tif", "rio-tiler/cog_rgb.tif", "rasterio/RGB.byte.tif")]
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, tiny_clip_spec, *scenes],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rss = json.loads(result.stdout.strip().splitlines()[-1])
    growth = rss[-1] - rss[1]
    print(f"RSS after each call (MB): {[round(x) for x in rss]}; growth from call 2 to 10: {growth:.1f} MB")
    assert growth < 25, rss
