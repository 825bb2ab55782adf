"""Search benchmark: text -> results latency, recall@10 against exact numpy, store open time, disk, RSS.

Real chip embeddings (every chip of ../shared/data/scenes + the 2,100 UCM images, embedded once with the
default embedder and cached in /tmp) are replicated with small Gaussian jitter to each size, with random
centres and footprints over the conterminous US so that bbox selectivity is controlled. For each size:

* build: upsert through the store interface (`ChipPoint`, batches of 2,048), then `finish_ingest()`
  (the HNSW build, timed separately), in a child process;
* serve: a fresh child process loads the default embedder, opens the store and warms it as `geosearch
  serve` does (both timed), runs `Engine.search`
  in-process (text encoding included; every request has its own query text, so the text cache never
  hits), then serves the real Litestar app with uvicorn on 127.0.0.1 while this process sends
  `GET /search?q=...&bbox=...`; the server's RSS and PSS are read from /proc (the engine maps its
  vector file twice, so RSS counts those page-cache pages twice; PSS counts them once);
* baselines in the same run: numpy brute force over the same vectors (exact: this is the ground truth)
  and qdrant-client local mode (`backend="qdrant"`, in memory unless --qdrant-client-path) up to
  `--qdrant-client-max` points.

Filters: none, and boxes selecting 0.1 %, 1 %, 20 % and 100 % of the chips. Recall@10 counts a hit as
correct when its exact score reaches the 10th best exact score (ties within 1e-6 are not misses).

Run from the repository root:

    python benchmarks/search.py                                  # 10k, 100k, 1M; 100 queries per filter
    python benchmarks/search.py --sizes 10000 --queries 20       # quick check
    python benchmarks/search.py --sizes 100000 --store-option hnsw_ef=128
    python benchmarks/search.py --store-option 'vector_datatype="float16"'   # the README's table

Writes benchmarks/results/search.json and updates its keys of benchmarks/results/summary.json.
Stores and vectors live under $GEOSEARCH_BENCH_CACHE (default /tmp/geosearch-bench); a store is rebuilt
when its size/options change or with --rebuild. Torch and BLAS run with OMP_NUM_THREADS=1 unless set:
on a small machine shared with other work, intra-op threads that wait for busy cores make the encoding
of one short query many times slower than one thread does.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch/numpy load their thread pools

import argparse
import dataclasses
import hashlib
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

REGION = (-125.0, 25.0, -67.0, 49.0)  # west, south, east, north: conterminous US
HALF_RANGE = (0.0005, 0.003)  # footprint half-extent in degrees (~50-300 m chips)
JITTER = 0.25  # norm of the Gaussian jitter added to a base vector before renormalising
FILTERS: list[tuple[str, float | None]] = [("none", None), ("0.1%", 0.001), ("1%", 0.01), ("20%", 0.2), ("100%", 1.0)]
BATCH = 2048
TIE_EPS = 1e-6


# ---- data ---------------------------------------------------------------------------------------
def geo_path_for(vec_path: Path) -> Path:
    return vec_path.with_name(vec_path.name.replace("vectors_", "geo_", 1)).with_suffix(".npz")


def load_geo(path: str | Path) -> dict[str, NDArray[Any]]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def dataset(n: int, base: NDArray[np.float32], model_id: str, seed: int = 0) -> tuple[Path, dict[str, NDArray[Any]]]:
    """Vectors (.npy, float32, unit rows) and geometry for `n` chips, cached by size, model and seed."""
    root = C.cache_dir() / "data"
    root.mkdir(exist_ok=True)
    tag = f"n{n}_s{seed}_b{len(base)}_j{JITTER}_{C.slug(model_id)}"
    vec_path = root / f"vectors_{tag}.npy"
    geo_path = geo_path_for(vec_path)
    if vec_path.exists() and geo_path.exists():
        return vec_path, load_geo(geo_path)
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(
        vec_path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, base.shape[1])
    )
    step = 65536
    for i in range(0, n, step):
        k = min(step, n - i)
        x = base[rng.integers(0, len(base), k)]
        x = x + rng.standard_normal(x.shape).astype(np.float32) * np.float32(JITTER / np.sqrt(base.shape[1]))
        out[i : i + k] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    os.replace(vec_path.with_suffix(".tmp.npy"), vec_path)
    w, s, e, nn = REGION
    geo = {
        "lon": rng.uniform(w, e, n),
        "lat": rng.uniform(s, nn, n),
        "half": rng.uniform(*HALF_RANGE, n),
    }
    np.savez(geo_path, lon=geo["lon"], lat=geo["lat"], half=geo["half"])
    return vec_path, geo


def point_id(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def point_index(pid: str) -> int:
    return uuid.UUID(pid).int - 1


def chip_points(vectors: NDArray[np.float32], geo: dict[str, NDArray[Any]], start: int, model_id: str) -> list[Any]:
    from geosearch.schemas.chips import ChipPayload, GeoPoint, Window
    from geosearch.store import ChipPoint

    points = []
    for j in range(len(vectors)):
        i = start + j
        lon, lat, h = float(geo["lon"][i]), float(geo["lat"][i]), float(geo["half"][i])
        ring = [[lon - h, lat - h], [lon + h, lat - h], [lon + h, lat + h], [lon - h, lat + h], [lon - h, lat - h]]
        k = i % 10_000
        payload = ChipPayload(
            scene_id=f"bench-{i // 10_000:05d}",
            scene_path="/bench/synthetic.tif",
            window=Window(col=(k % 100) * 224, row=(k // 100) * 224, width=224, height=224),
            chip_size=224,
            crs="EPSG:4326",
            footprint={"type": "Polygon", "coordinates": [ring]},
            centre=GeoPoint(lon=lon, lat=lat),
            gsd=0.6,
            valid_fraction=1.0,
            bands=[1, 2, 3],
            ingested_at="2024-01-01T00:00:00Z",
            model_id=model_id,
        )
        points.append(ChipPoint(id=point_id(i), vector=vectors[j], payload=payload))
    return points


def upsert_chips(
    store: Any, vectors: NDArray[np.float32], geo: dict[str, NDArray[Any]], model_id: str, *, progress: bool = False
) -> float:
    """Every chip through the store interface in batches of BATCH; returns the seconds spent in `upsert`."""
    n = len(vectors)
    spent = 0.0
    for start in range(0, n, BATCH):
        batch = np.ascontiguousarray(vectors[start : start + BATCH])
        points = chip_points(batch, geo, start, model_id)
        t = time.perf_counter()
        store.upsert(points)
        spent += time.perf_counter() - t
        if progress and (start // BATCH) % 50 == 0:
            print(f"  upserted {start + len(batch):,}/{n:,}", file=sys.stderr, flush=True)
    return spent


def random_box(rng: np.random.Generator, fraction: float) -> tuple[float, float, float, float]:
    w, s, e, n = REGION
    if fraction >= 1.0:
        return (w - 1.0, s - 1.0, e + 1.0, n + 1.0)
    bw, bh = (e - w) * np.sqrt(fraction), (n - s) * np.sqrt(fraction)
    x0, y0 = rng.uniform(w, e - bw), rng.uniform(s, n - bh)
    return (round(x0, 6), round(y0, 6), round(x0 + bw, 6), round(y0 + bh, 6))


def bbox_of(item: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """A planned query's box as the store takes it (JSON turned the tuple into a list)."""
    return tuple(item["bbox"]) if item["bbox"] is not None else None  # type: ignore[return-value]


def box_mask(geo: dict[str, NDArray[Any]], bbox: tuple[float, float, float, float] | None) -> NDArray[np.bool_]:
    """Chips whose (square) footprint intersects the box: the store's exact semantics."""
    lon, lat, half = geo["lon"], geo["lat"], geo["half"]
    if bbox is None:
        return np.ones(len(lon), dtype=bool)
    w, s, e, n = bbox
    return (lon - half <= e) & (lon + half >= w) & (lat - half <= n) & (lat + half >= s)  # type: ignore[no-any-return]


def exact_topk(
    x: NDArray[np.float32], q: NDArray[np.float32], mask: NDArray[np.bool_], k: int = 10
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """numpy brute force: indices and scores of the k best chips inside the mask."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    scores = x[idx] @ q if len(idx) < len(x) else x @ q
    top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
    top = top[np.argsort(-scores[top])]
    return idx[top].astype(np.int64), scores[top]


def recall(got: list[int], want_scores: NDArray[np.float32], x: NDArray[np.float32], q: NDArray[np.float32]) -> float:
    if len(want_scores) == 0:
        return 1.0 if not got else 0.0
    cut = float(want_scores[-1]) - TIE_EPS
    good = sum(1 for i in set(got) if float(x[i] @ q) >= cut)
    return min(good, len(want_scores)) / len(want_scores)


# ---- children -----------------------------------------------------------------------------------
def timed_searches(queries: Sequence[Any], search: Callable[[Any], Sequence[Any]]) -> list[dict[str, Any]]:
    """One row per query: the seconds `search(query)` took and the chip indices it returned, in order."""
    rows = []
    for query in queries:
        t = time.perf_counter()
        hits = search(query)
        rows.append({"s": time.perf_counter() - t, "ids": [point_index(h.id) for h in hits]})
    return rows


def child_build(spec: dict[str, Any]) -> dict[str, Any]:
    from geosearch.store import open_store

    vectors = np.load(spec["vectors"], mmap_mode="r")
    geo = load_geo(spec["geo"])
    n = len(vectors)
    store_dir = Path(spec["store"])
    shutil.rmtree(store_dir, ignore_errors=True)
    t0 = time.perf_counter()
    store = open_store(store_dir, model_id=spec["model_id"], dim=int(vectors.shape[1]), **spec["options"])
    upsert = upsert_chips(store, vectors, geo, spec["model_id"], progress=bool(spec.get("progress")))
    loop = time.perf_counter() - t0
    t = time.perf_counter()
    store.finish_ingest()
    index_s = time.perf_counter() - t
    unindexed = getattr(store, "unindexed", lambda: None)()
    count = store.count()
    t = time.perf_counter()
    store.close()
    close_s = time.perf_counter() - t
    return {
        "points": count,
        "upsert_s": round(upsert, 2),
        "ingest_loop_s": round(loop, 2),
        "upsert_points_per_s": round(n / upsert, 1) if upsert else None,
        "index_build_s": round(index_s, 2),
        "unindexed_after": unindexed,
        "close_s": round(close_s, 2),
        "build_peak_rss_mb": C.mb(C.peak_rss_bytes()),
        "disk_mb": C.mb(C.dir_size(store_dir)),
    }


def child_serve(spec: dict[str, Any]) -> None:
    """Open the store, time searches in-process, write them out, then serve HTTP until SIGTERM."""
    from geosearch import load_embedder

    queries = json.loads(Path(spec["queries"]).read_text())
    qvec = np.load(spec["query_vectors"])
    embedder = load_embedder()
    store, out = open_warm_store(spec, dim=int(qvec.shape[1]))
    out.update(store_passes(store, qvec, queries))
    out.update(engine_pass(embedder, store, queries["inproc"]))
    Path(spec["result"]).write_text(json.dumps(out))

    import uvicorn

    from geosearch.api import create_app
    from geosearch.engine import Engine

    engine = Engine(embedder, store)  # a fresh engine, text cache empty, as `geosearch serve` starts
    try:
        uvicorn.run(create_app(engine), host="127.0.0.1", port=int(spec["port"]), log_level="warning")
    finally:
        engine.close()


def open_warm_store(spec: dict[str, Any], dim: int) -> tuple[Any, dict[str, Any]]:
    """Open the built store and warm it as `geosearch serve` does; both timed, /proc status around them."""
    from geosearch.store import open_store

    status0 = C.proc_status()
    t = time.perf_counter()
    store = open_store(spec["store"], model_id=spec["model_id"], dim=dim, create=False, **spec["options"])
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    store.warm()
    warm_s = time.perf_counter() - t
    return store, {
        "open_s": round(open_s, 3),
        "warm_s": round(warm_s, 3),
        "status_before_open": status0,
        "status_after_open": C.proc_status(),
    }


def store_passes(store: Any, qvec: NDArray[np.float32], queries: dict[str, Any]) -> dict[str, Any]:
    """Store-only searches: an untimed warm-up, then two timed passes over the same vectors (the first
    pays first-touch costs after open, the second is warm)."""

    def search(item: dict[str, Any]) -> Any:
        return store.search(qvec[item["vec"]], limit=10, bbox=bbox_of(item))

    # first-touch costs are reported by open_s and the RSS figures instead
    for item in queries["warmup"]:
        search(item)
    return {key: timed_searches(queries["store"], search) for key in ("store_first_pass", "store")}


def engine_pass(embedder: Any, store: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    """`Engine.search` in-process, text encoding included, and the encoding of one query alone."""
    from geosearch.engine import Engine
    from geosearch.schemas import SearchQuery

    engine = Engine(embedder, store)
    engine.search(SearchQuery(q="warm-up query text", limit=10))
    queries = [SearchQuery(q=item["text"], bbox=bbox_of(item), limit=10) for item in items]
    inproc = timed_searches(queries, engine.search)
    encode = C.time_runs(lambda: embedder.encode_texts(["storage tanks near a harbour"]), 20)
    return {"inproc": inproc, "text_encode_ms": round(statistics.fmean(encode) * 1e3, 2)}


def child_qdrant_client(spec: dict[str, Any]) -> dict[str, Any]:
    """qdrant-client local mode: build (in memory, or at a path and reopened), then store-only searches."""
    from geosearch.store import open_store

    vectors = np.load(spec["vectors"], mmap_mode="r")
    geo = load_geo(spec["geo"])
    queries = json.loads(Path(spec["queries"]).read_text())
    qvec = np.load(spec["query_vectors"])
    location = spec["location"]
    if location != ":memory:":
        shutil.rmtree(location, ignore_errors=True)
    status0 = C.proc_status()
    store = open_store(location, model_id=spec["model_id"], dim=int(vectors.shape[1]), backend="qdrant")
    t = time.perf_counter()
    upsert_chips(store, vectors, geo, spec["model_id"])
    upsert = time.perf_counter() - t
    open_s = None
    if location != ":memory:":
        store.close()
        t = time.perf_counter()
        store = open_store(location, model_id=spec["model_id"], dim=int(vectors.shape[1]), backend="qdrant")
        open_s = round(time.perf_counter() - t, 3)
    rows = timed_searches(queries, lambda item: store.search(qvec[item["vec"]], limit=10, bbox=bbox_of(item)))
    status = C.proc_status()
    store.close()
    return {
        "location": location,
        "upsert_s": round(upsert, 2),
        "upsert_points_per_s": round(len(vectors) / upsert, 1),
        "open_s": open_s,
        "disk_mb": C.mb(C.dir_size(Path(location))) if location != ":memory:" else None,
        "rss_mb": C.mb(status.get("VmRSS", 0) - status0.get("VmRSS", 0)),
        "rows": rows,
    }


# ---- the HTTP client side -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_query(
    spec: dict[str, Any], items: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, int]]:
    """Start the serving child, wait for its in-process results and the port, then query over HTTP."""
    import httpx

    port = free_port()
    cmd, result = C.child_command(__file__, "serve", {**spec, "port": port}, Path(spec["work"]))
    proc = subprocess.Popen(cmd)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
            wait_until_serving(proc, client, result)
            inproc = json.loads(result.read_text())
            client.get("/search", params={"q": "warm-up over http", "limit": 10}).raise_for_status()
            inproc["http_floor_ms"] = http_floor_ms(client)
            http = [http_search(client, item) for item in items]
            status = C.proc_status(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return inproc, http, status


def wait_until_serving(proc: subprocess.Popen[bytes], client: Any, result: Path, timeout: float = 1800) -> None:
    """Until the child has written its in-process results and answers /health."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"serving child exited with {proc.returncode}")
        if result.exists():
            try:
                if client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError("server did not come up")
        time.sleep(0.2)


def http_floor_ms(client: Any) -> float:
    """Median round trip through uvicorn + Litestar that does no real work (the benchmark store has no
    scene records, so /scenes is empty; /health would count every chip)."""
    floor = C.time_runs(lambda: client.get("/scenes").raise_for_status(), 50)
    return round(statistics.median(floor) * 1000, 2)


def http_search(client: Any, item: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"q": item["text"], "limit": 10}
    if item["bbox"] is not None:
        params["bbox"] = ",".join(f"{v:.6f}" for v in item["bbox"])
    t = time.perf_counter()
    r = client.get("/search", params=params)
    dt = time.perf_counter() - t
    r.raise_for_status()
    return {"s": dt, "ids": [point_index(f["id"]) for f in r.json()["features"]]}


# ---- driver -------------------------------------------------------------------------------------
SEARCH_TIME_OPTIONS = ("hnsw_ef", "acorn", "exact_threshold", "exact_count_limit", "oversampling")
"""Store options that only steer queries: changing them reuses a built store."""


def _same_build(old: Any, new: dict[str, Any]) -> bool:
    def strip(key: Any) -> Any:
        if not isinstance(key, dict) or not isinstance(key.get("options"), dict):
            return key
        opts = {k: v for k, v in key["options"].items() if k not in SEARCH_TIME_OPTIONS}
        return {**key, "options": opts}

    return bool(strip(old) == strip(new))


def ensure_store(
    n: int, args: argparse.Namespace, base: NDArray[np.float32], model_id: str, options: dict[str, Any]
) -> tuple[Path, dict[str, NDArray[Any]], Path, Path, dict[str, Any]]:
    """Dataset and edge store for `n` chips: reused when built earlier with the same inputs."""
    vec_path, geo = dataset(n, base, model_id)
    tag = "" if not options else "-" + hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    work = C.cache_dir() / f"search-{n}{tag}"
    work.mkdir(exist_ok=True)
    store_dir = work / "edge-store"
    from geosearch.store import StoreOptions

    effective = dataclasses.asdict(StoreOptions.from_kwargs(dict(options)))
    build_key = {"n": n, "options": effective, "base": len(base), "jitter": JITTER, "model_id": model_id}
    key_path = work / "edge-build.json"
    build: dict[str, Any]
    if not args.rebuild and key_path.exists() and _same_build(json.loads(key_path.read_text()).get("key"), build_key):
        build = json.loads(key_path.read_text())["build"]
        print(f"reusing store {store_dir} (built earlier: {build})", flush=True)
    else:
        print(f"building edge store ({n:,} points) ...", flush=True)
        spec = {
            "vectors": str(vec_path),
            "geo": str(geo_path_for(vec_path)),
            "store": str(store_dir),
            "model_id": model_id,
            "options": options,
            "progress": n >= 100_000,
        }
        build = C.run_child(__file__, "build", spec, work, timeout=4 * 3600)
        key_path.write_text(json.dumps({"key": build_key, "build": build}))
        print(f"built: {build}", flush=True)
    return vec_path, geo, work, store_dir, build


@dataclass
class Case:
    """One size's data, queries and exact answers, shared by every mode that is scored against them."""

    n: int
    work: Path
    vec_path: Path
    geo: dict[str, NDArray[Any]]
    x: NDArray[np.float32]
    """The vectors in RAM for numpy brute force (this process only; the store children are separate)."""
    text_vectors: NDArray[np.float32]
    plan: dict[str, list[dict[str, Any]]]
    model_id: str
    truth: dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]] = field(default_factory=dict)

    @property
    def query_vectors(self) -> Path:
        return self.work / "query-vectors.npy"

    @property
    def queries(self) -> Path:
        return self.work / "queries.json"


def query_plan(n: int, nq: int, texts: list[str]) -> dict[str, list[dict[str, Any]]]:
    """`nq` queries per filter and mode. Every request gets its own text (no text-cache hits); the
    store-only pass reuses the in-process queries, so boxes are shared by modes; one warm-up per filter."""
    rng = np.random.default_rng(1000 + n)
    plan: dict[str, list[dict[str, Any]]] = {"store": [], "inproc": [], "http": [], "warmup": []}
    cursor = 0
    for name, frac in FILTERS:
        for _ in range(nq):
            bbox = random_box(rng, frac) if frac is not None else None
            for mode in ("inproc", "http"):
                plan[mode].append({"filter": name, "bbox": bbox, "text": texts[cursor], "vec": cursor})
                cursor += 1
            plan["store"].append({**plan["inproc"][-1]})
        plan["warmup"].append(
            {
                "filter": name,
                "bbox": random_box(rng, frac) if frac is not None else None,
                "vec": len(texts) - 1 - len(plan["warmup"]),
            }
        )
    return plan


def ground_truth(case: Case) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Fill `case.truth` with numpy brute force; its latency and the match count per filter."""
    numpy_lat: dict[str, list[float]] = {}
    matches: dict[str, list[int]] = {}
    for item in case.plan["inproc"] + case.plan["http"]:
        q = case.text_vectors[item["vec"]]
        t = time.perf_counter()
        mask = box_mask(case.geo, item["bbox"])
        case.truth[item["vec"]] = exact_topk(case.x, q, mask)
        numpy_lat.setdefault(item["filter"], []).append(time.perf_counter() - t)
        matches.setdefault(item["filter"], []).append(int(mask.sum()))
    return numpy_lat, matches


def score(
    case: Case, rows: list[dict[str, Any]], items: list[dict[str, Any]], *, recall_min: bool = True
) -> dict[str, dict[str, Any]]:
    """Per filter: latency summary of `rows` and recall@10 of their ids against the exact answers."""
    per: dict[str, dict[str, list[float]]] = {}
    for row, item in zip(rows, items, strict=True):
        d = per.setdefault(item["filter"], {"s": [], "recall": []})
        d["s"].append(row["s"])
        d["recall"].append(recall(row["ids"], case.truth[item["vec"]][1], case.x, case.text_vectors[item["vec"]]))
    out: dict[str, dict[str, Any]] = {}
    for f, d in per.items():
        out[f] = {**C.latency_summary(d["s"]), "recall_mean": round(float(np.mean(d["recall"])), 4)}
        if recall_min:
            out[f]["recall_min"] = round(float(np.min(d["recall"])), 2)
    return out


def rss_report(before: dict[str, int], after_open: dict[str, int], after_q: dict[str, int]) -> dict[str, Any]:
    """The server's memory, and the store's share of it: what the process gained from opening it on."""
    return {
        "server_rss_mb": C.mb(after_q.get("VmRSS")),
        "server_peak_rss_mb": C.mb(after_q.get("VmHWM")),
        "server_rss_anon_mb": C.mb(after_q.get("RssAnon")),
        "server_rss_file_mb": C.mb(after_q.get("RssFile")),
        "embedder_rss_mb": C.mb(before.get("VmRSS")),
        "store_rss_after_open_mb": C.mb(after_open.get("VmRSS", 0) - before.get("VmRSS", 0)),
        "store_rss_mb": C.mb(after_q.get("VmRSS", 0) - before.get("VmRSS", 0)),
        "store_rss_anon_mb": C.mb(after_q.get("RssAnon", 0) - before.get("RssAnon", 0)),
        "store_pss_mb": C.mb(after_q.get("Pss", 0) - before.get("Pss", 0)),
    }


def bench_size(
    n: int,
    args: argparse.Namespace,
    base: NDArray[np.float32],
    texts: list[str],
    text_vectors: NDArray[np.float32],
    model_id: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    print(f"\n== {n:,} chips ==", flush=True)
    vec_path, geo, work, store_dir, build = ensure_store(n, args, base, model_id, options)
    x = np.load(vec_path)
    case = Case(n, work, vec_path, geo, x, text_vectors, query_plan(n, args.queries, texts), model_id)
    np.save(case.query_vectors, text_vectors)
    case.queries.write_text(json.dumps(case.plan))
    numpy_lat, matches = ground_truth(case)
    serve_spec = {
        "work": str(work),
        "store": str(store_dir),
        "model_id": model_id,
        "options": options,
        "queries": str(case.queries),
        "query_vectors": str(case.query_vectors),
    }
    inproc, http, server_status = serve_and_query(serve_spec, case.plan["http"])
    result: dict[str, Any] = {
        "points": n,
        "build": build,
        "open_s": inproc["open_s"],
        "warm_s": inproc["warm_s"],
        "disk_mb": C.mb(C.dir_size(store_dir)),
        "selectivity": {f: round(float(np.mean(v)) / n, 5) for f, v in matches.items()},
        "matches_mean": {f: round(float(np.mean(v)), 1) for f, v in matches.items()},
        "text_encode_ms": inproc["text_encode_ms"],
        "http_floor_ms": inproc["http_floor_ms"],
        "inproc": score(case, inproc["inproc"], case.plan["inproc"]),
        "store_only": score(case, inproc["store"], case.plan["store"]),
        "store_only_first_pass": score(case, inproc["store_first_pass"], case.plan["store"]),
        "http": score(case, http, case.plan["http"]),
        "http_all": C.latency_summary([r["s"] for r in http]),
        "inproc_all": C.latency_summary([r["s"] for r in inproc["inproc"]]),
        "numpy": {f: C.latency_summary(v) for f, v in numpy_lat.items()},
        "rss": rss_report(inproc["status_before_open"], inproc["status_after_open"], server_status),
    }
    if n <= args.qdrant_client_max:
        result["qdrant_client_local"] = qdrant_client_local(args, case)
    return result


def qdrant_client_local(args: argparse.Namespace, case: Case) -> dict[str, Any]:
    """The same points in qdrant-client local mode (filters evaluated in Python): store-only latency."""
    location = str(case.work / "qdrant-local") if args.qdrant_client_path else ":memory:"
    print(f"qdrant-client local mode ({location}) ...", flush=True)
    per_filter = max(1, min(args.queries, args.qdrant_client_queries))
    items: list[dict[str, Any]] = []
    for name, _ in FILTERS:
        items.extend([it for it in case.plan["store"] if it["filter"] == name][:per_filter])
    queries_path = case.work / "queries-qdrant.json"
    queries_path.write_text(json.dumps(items))
    spec = {
        "vectors": str(case.vec_path),
        "geo": str(geo_path_for(case.vec_path)),
        "location": location,
        "model_id": case.model_id,
        "queries": str(queries_path),
        "query_vectors": str(case.query_vectors),
    }
    res = C.run_child(__file__, "qdrant-client", spec, case.work, timeout=4 * 3600)
    res["store_only"] = score(case, res.pop("rows"), items, recall_min=False)
    return res


def print_tables(results: dict[str, Any]) -> None:
    def cell(d: dict[str, Any] | None) -> str:
        return "-" if not d else f"{d['p50_ms']:.1f}/{d['p99_ms']:.1f}"

    def recalls(d: dict[str, Any]) -> str:
        return f"{d['recall_mean']:.4f} ({d['recall_min']:.1f})"

    print("\nlatency p50/p99 ms (store: warm pass, store 1st: first pass after open); recall@10 mean (min)")
    latency_columns = [
        ("chips", ">9,"), ("filter", ">6"), ("match", ">9,.0f"), ("http", ">13"), ("in-proc", ">13"),
        ("store", ">13"), ("store 1st", ">13"), ("numpy", ">13"), ("qc-local", ">15"),
        ("recall http", ">13"), ("recall inproc", ">14"),
    ]  # fmt: skip
    latency_rows = []
    for size, r in results.items():
        qc = r.get("qdrant_client_local", {}).get("store_only", {})
        for name, _ in FILTERS:
            h, i, s = r["http"][name], r["inproc"][name], r["store_only"][name]
            latency_rows.append(
                [
                    int(size), name, r["matches_mean"][name], cell(h), cell(i), cell(s),
                    cell(r["store_only_first_pass"][name]), cell(r["numpy"][name]), cell(qc.get(name)),
                    recalls(h), recalls(i),
                ]
            )  # fmt: skip
    C.print_table(latency_columns, latency_rows, rule=True)

    print("\nper size: build and resources")
    resource_columns = [
        ("chips", ">9,"), ("upsert s", ">9.1f"), ("pts/s", ">8.0f"), ("hnsw s", ">8.1f"), ("open s", ">7.2f"),
        ("warm s", ">7.2f"), ("disk MB", ">8.0f"), ("store RSS", ">10.0f"), ("PSS", ">7.0f"), ("anon", ">7.0f"),
        ("server RSS", ">11.0f"), ("http all p50/p99", ">17"), ("text ms", ">8.1f"), ("http floor", ">10.1f"),
    ]  # fmt: skip
    resource_rows: list[list[Any] | str] = []
    for size, r in results.items():
        b, m = r["build"], r["rss"]
        resource_rows.append(
            [
                int(size), b["upsert_s"], b["upsert_points_per_s"] or 0, b["index_build_s"], r["open_s"],
                r["warm_s"], r["disk_mb"], m["store_rss_mb"], m["store_pss_mb"], m["store_rss_anon_mb"],
                m["server_rss_mb"], cell(r["http_all"]), r["text_encode_ms"], r["http_floor_ms"],
            ]
        )  # fmt: skip
        qc = r.get("qdrant_client_local")
        if qc:
            resource_rows.append(
                f"{'':>9} qdrant-client local ({qc['location']}): upsert {qc['upsert_s']:.1f} s "
                f"({qc['upsert_points_per_s']:.0f} pts/s), reopen {qc['open_s']} s, disk {qc['disk_mb']} MB, "
                f"RSS {qc['rss_mb']:.0f} MB"
            )
    C.print_table(resource_columns, resource_rows, rule=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated chip counts")
    parser.add_argument("--queries", type=int, default=100, help="queries per filter and mode (max 200)")
    parser.add_argument("--out", type=Path, default=C.RESULTS / "search.json")
    parser.add_argument("--summary", type=Path, default=C.RESULTS / "summary.json")
    parser.add_argument(
        "--store-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra open_store option for the edge store (JSON value), repeatable",
    )
    parser.add_argument(
        "--qdrant-client-max", type=int, default=10_000, help="largest size also run in qdrant-client local mode"
    )
    parser.add_argument(
        "--qdrant-client-queries", type=int, default=20, help="queries per filter for qdrant-client local"
    )
    parser.add_argument(
        "--qdrant-client-path",
        action="store_true",
        help="qdrant-client local mode at a path (reopen time, disk) instead of :memory: (same search code; "
        "its sqlite persistence commits each point, so building is slow)",
    )
    parser.add_argument("--build-only", action="store_true", help="only build (or check) the stores, no queries")
    parser.add_argument("--rebuild", action="store_true", help="rebuild stores even if a matching one exists")
    return parser


def query_texts(queries: int) -> list[str]:
    """Distinct real query texts: one per query of every filter and mode, plus a warm-up per filter
    (the last ones). Raises ValueError when the captions are too few."""
    texts = C.ucm_sentences()
    need = len(FILTERS) * queries * 2 + len(FILTERS)
    if need > len(texts):
        raise ValueError(f"--queries {queries} needs {need} distinct query texts; only {len(texts)} available")
    return texts[: need - len(FILTERS)] + texts[-len(FILTERS) :]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    from geosearch.config import parse_store_options

    options = parse_store_options(args.store_option)
    try:
        texts = query_texts(args.queries)
    except ValueError as e:
        parser.error(str(e))

    from geosearch import load_embedder
    from geosearch.plugins.cpu import runtime_info

    machine = C.machine()
    t0 = time.perf_counter()
    embedder = load_embedder()
    machine["embedder_runtime"] = runtime_info(embedder)  # how the query vectors were encoded
    base = C.base_vectors(embedder)
    text_vectors = embedder.encode_texts(texts)
    model_id = embedder.model_id
    del embedder
    print(f"{len(base)} real base vectors, {len(texts)} query texts ({time.perf_counter() - t0:.0f} s)", flush=True)

    if args.build_only:
        for n in sizes:
            ensure_store(n, args, base, model_id, options)
        return 0
    results: dict[str, Any] = {}
    for n in sizes:
        results[str(n)] = bench_size(n, args, base, texts, text_vectors, model_id, options)
        C.write_json(args.out, _report(results, machine, args, options, model_id, len(base)))
    print_tables(results)
    print(f"\nwrote {args.out}")
    keys = summary_keys(results, options)
    print(f"updated {C.update_summary(keys, args.summary)}: {keys}")
    return 0


def summary_keys(results: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """This benchmark's keys of summary.json: the worst mean recall, and the 1M headline figures."""
    keys: dict[str, Any] = {
        "search_store_options": options,
        "recall_at_10_min": min(
            r[mode][f]["recall_mean"] for r in results.values() for mode in ("http", "inproc") for f, _ in FILTERS
        ),
    }
    if "1000000" in results:
        keys["search_http_p50_ms_1m"] = results["1000000"]["http_all"]["p50_ms"]
        keys["search_http_p99_ms_1m"] = results["1000000"]["http_all"]["p99_ms"]
        keys["search_store_rss_mb_1m"] = results["1000000"]["rss"]["store_rss_mb"]
        keys["search_store_pss_mb_1m"] = results["1000000"]["rss"]["store_pss_mb"]
    return keys


def _report(
    results: dict[str, Any],
    machine: dict[str, Any],
    args: argparse.Namespace,
    options: dict[str, Any],
    model_id: str,
    base: int,
) -> dict[str, Any]:
    return {
        "benchmark": "search",
        "date": C.now_iso(),
        "machine": machine,
        "model_id": model_id,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "queries_per_filter": args.queries,
        "store_options": options,
        "data": {"base_vectors": base, "jitter_norm": JITTER, "region": REGION, "footprint_half_deg": HALF_RANGE},
        "results": results,
    }


if __name__ == "__main__":
    C.child_entry({"build": child_build, "qdrant-client": child_qdrant_client, "serve": child_serve})
    sys.exit(main())
