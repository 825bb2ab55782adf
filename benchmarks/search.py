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
    python benchmarks/search.py --sizes 10000 --queries 20       # quick check, < 2 min
    python benchmarks/search.py --sizes 100000 --store-option hnsw_ef=128
    python benchmarks/search.py --store-option 'vector_datatype="float16"'   # the README's table

Writes benchmarks/results/search.json and updates its keys of benchmarks/results/summary.json.
Stores and vectors live under $GEOSEARCH_BENCH_CACHE (default /tmp/geosearch-bench); a store is rebuilt
when its size/options change or with --rebuild. Torch and BLAS run with OMP_NUM_THREADS=1 unless set:
on a 2-core machine shared with other work, two intra-op threads made one query encoding ~20x slower.
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


def dataset(n: int, base: NDArray[np.float32], model_id: str, seed: int = 0) -> tuple[Path, dict[str, NDArray[Any]]]:
    """Vectors (.npy, float32, unit rows) and geometry for `n` chips, cached by size, model and seed."""
    root = C.cache_dir() / "data"
    root.mkdir(exist_ok=True)
    tag = f"n{n}_s{seed}_b{len(base)}_j{JITTER}_{C.slug(model_id)}"
    vec_path = root / f"vectors_{tag}.npy"
    geo_path = geo_path_for(vec_path)
    if vec_path.exists() and geo_path.exists():
        with np.load(geo_path) as z:
            return vec_path, {k: z[k] for k in z.files}
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
    np.savez(geo_path, **geo)
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


def random_box(rng: np.random.Generator, fraction: float) -> tuple[float, float, float, float]:
    w, s, e, n = REGION
    if fraction >= 1.0:
        return (w - 1.0, s - 1.0, e + 1.0, n + 1.0)
    bw, bh = (e - w) * np.sqrt(fraction), (n - s) * np.sqrt(fraction)
    x0, y0 = rng.uniform(w, e - bw), rng.uniform(s, n - bh)
    return (round(x0, 6), round(y0, 6), round(x0 + bw, 6), round(y0 + bh, 6))


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
def child_build(spec: dict[str, Any]) -> dict[str, Any]:
    from geosearch.store import open_store

    vectors = np.load(spec["vectors"], mmap_mode="r")
    with np.load(spec["geo"]) as z:
        geo = {k: z[k] for k in z.files}
    n = len(vectors)
    store_dir = Path(spec["store"])
    shutil.rmtree(store_dir, ignore_errors=True)
    t0 = time.perf_counter()
    store = open_store(store_dir, model_id=spec["model_id"], dim=int(vectors.shape[1]), **spec["options"])
    upsert = 0.0
    for start in range(0, n, BATCH):
        batch = np.ascontiguousarray(vectors[start : start + BATCH])
        points = chip_points(batch, geo, start, spec["model_id"])
        t = time.perf_counter()
        store.upsert(points)
        upsert += time.perf_counter() - t
        if spec.get("progress") and (start // BATCH) % 50 == 0:
            print(f"  upserted {start + len(batch):,}/{n:,}", file=sys.stderr, flush=True)
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
        "build_peak_rss_mb": round(C.peak_rss_bytes() / 2**20, 1),
        "disk_mb": round(C.dir_size(store_dir) / 2**20, 1),
    }


def child_serve(spec: dict[str, Any]) -> None:
    """Open the store, time searches in-process, write them out, then serve HTTP until SIGTERM."""
    from geosearch.store import open_store

    queries = json.loads(Path(spec["queries"]).read_text())
    qvec = np.load(spec["query_vectors"])
    embedder = None
    if spec["engine"]:
        from geosearch import load_embedder

        embedder = load_embedder()
    status0 = C.proc_status()
    t = time.perf_counter()
    store = open_store(
        spec["store"], model_id=spec["model_id"], dim=int(qvec.shape[1]), create=False, **spec["options"]
    )
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    store.warm()  # as `geosearch serve` does
    warm_s = time.perf_counter() - t
    status1 = C.proc_status()
    out: dict[str, Any] = {
        "open_s": round(open_s, 3),
        "warm_s": round(warm_s, 3),
        "status_before_open": status0,
        "status_after_open": status1,
    }

    def bbox_of(item: dict[str, Any]) -> tuple[float, float, float, float] | None:
        return tuple(item["bbox"]) if item["bbox"] is not None else None  # type: ignore[return-value]

    # warm-up (not timed): first-touch costs are reported by open_s and the RSS numbers instead
    for item in queries["warmup"]:
        store.search(qvec[item["vec"]], limit=10, bbox=bbox_of(item))
    # Two passes over the same vectors: the first pays first-touch costs after open, the second is warm.
    for key in ("store_first_pass", "store"):
        rows = []
        for item in queries["store"]:
            t = time.perf_counter()
            hits = store.search(qvec[item["vec"]], limit=10, bbox=bbox_of(item))
            rows.append({"s": time.perf_counter() - t, "ids": [point_index(h.id) for h in hits]})
        out[key] = rows
    if embedder is not None:
        from geosearch.schemas import SearchQuery

        from geosearch.engine import Engine

        engine = Engine(embedder, store)
        engine.search(SearchQuery(q="warm-up query text", limit=10))
        inproc = []
        for item in queries["inproc"]:
            query = SearchQuery(q=item["text"], bbox=bbox_of(item), limit=10)
            t = time.perf_counter()
            hits = engine.search(query)
            inproc.append({"s": time.perf_counter() - t, "ids": [point_index(h.id) for h in hits]})
        out["inproc"] = inproc
        t = time.perf_counter()
        for _ in range(20):
            embedder.encode_texts(["storage tanks near a harbour"])
        out["text_encode_ms"] = round((time.perf_counter() - t) / 20 * 1e3, 2)
    out["status_after_queries"] = C.proc_status()
    Path(spec["result"]).write_text(json.dumps(out))
    if not spec.get("port"):
        store.close()
        return
    import uvicorn

    from geosearch.api import create_app
    from geosearch.engine import Engine

    assert embedder is not None
    engine = Engine(embedder, store)
    try:
        uvicorn.run(create_app(engine), host="127.0.0.1", port=int(spec["port"]), log_level="warning")
    finally:
        engine.close()


def run_child(kind: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    work = Path(spec["work"])
    spec_path = work / f"{kind}-spec.json"
    result = work / f"{kind}-result.json"
    spec = {**spec, "result": str(result)}
    spec_path.write_text(json.dumps(spec))
    result.unlink(missing_ok=True)
    subprocess.run([sys.executable, __file__, "--child", kind, str(spec_path)], check=True, timeout=timeout)
    return json.loads(result.read_text())  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_and_query(
    spec: dict[str, Any], items: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, int]]:
    """Start the serving child, wait for its in-process results and the port, then query over HTTP."""
    import httpx

    work = Path(spec["work"])
    spec_path = work / "serve-spec.json"
    result = work / "serve-result.json"
    result.unlink(missing_ok=True)
    port = free_port()
    spec = {**spec, "result": str(result), "port": port}
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, __file__, "--child", "serve", str(spec_path)])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 1800
        client = httpx.Client(base_url=base, timeout=60.0)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serving child exited with {proc.returncode}")
            if result.exists():
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not come up")
            time.sleep(0.2)
        inproc = json.loads(result.read_text())
        client.get("/search", params={"q": "warm-up over http", "limit": 10}).raise_for_status()
        # The HTTP floor: a round trip through uvicorn + Litestar that does no real work (the
        # benchmark store has no scene records; /health would count every chip).
        floor = []
        for _ in range(50):
            t = time.perf_counter()
            client.get("/scenes").raise_for_status()
            floor.append(time.perf_counter() - t)
        inproc["http_floor_ms"] = round(statistics.median(floor) * 1000, 2)
        http = []
        for item in items:
            params: dict[str, Any] = {"q": item["text"], "limit": 10}
            if item["bbox"] is not None:
                params["bbox"] = ",".join(f"{v:.6f}" for v in item["bbox"])
            t = time.perf_counter()
            r = client.get("/search", params=params)
            dt = time.perf_counter() - t
            r.raise_for_status()
            ids = [point_index(f["id"]) for f in r.json()["features"]]
            http.append({"s": dt, "ids": ids})
        status = C.proc_status(proc.pid)
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return inproc, http, status


# ---- driver -------------------------------------------------------------------------------------
def mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


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
            "work": str(work),
            "vectors": str(vec_path),
            "geo": str(geo_path_for(vec_path)),
            "store": str(store_dir),
            "model_id": model_id,
            "options": options,
            "progress": n >= 100_000,
        }
        build = run_child("build", spec, timeout=4 * 3600)
        key_path.write_text(json.dumps({"key": build_key, "build": build}))
        print(f"built: {build}", flush=True)
    return vec_path, geo, work, store_dir, build


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
    geo_path = geo_path_for(vec_path)
    x = np.load(vec_path)  # in RAM for numpy brute force (this process only; the store child is separate)

    # Query plan: every request gets its own text (no text-cache hits); boxes are shared by modes.
    rng = np.random.default_rng(1000 + n)
    nq = args.queries
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
    qv_path = work / "query-vectors.npy"
    np.save(qv_path, text_vectors)
    queries_path = work / "queries.json"
    queries_path.write_text(json.dumps(plan))

    # ground truth + numpy latency
    truth: dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]] = {}
    numpy_lat: dict[str, list[float]] = {}
    matches: dict[str, list[int]] = {}
    for item in plan["inproc"] + plan["http"]:
        q = text_vectors[item["vec"]]
        t = time.perf_counter()
        mask = box_mask(geo, item["bbox"])
        truth[item["vec"]] = exact_topk(x, q, mask)
        numpy_lat.setdefault(item["filter"], []).append(time.perf_counter() - t)
        matches.setdefault(item["filter"], []).append(int(mask.sum()))

    serve_spec = {
        "work": str(work),
        "store": str(store_dir),
        "model_id": model_id,
        "options": options,
        "queries": str(queries_path),
        "query_vectors": str(qv_path),
        "engine": True,
    }
    inproc, http, server_status = serve_and_query(serve_spec, plan["http"])

    def score(mode: str, rows: list[dict[str, Any]], items: list[dict[str, Any]]) -> dict[str, Any]:
        per: dict[str, dict[str, list[float]]] = {}
        for row, item in zip(rows, items, strict=True):
            q = text_vectors[item["vec"]]
            r = recall(row["ids"], truth[item["vec"]][1], x, q) if item["vec"] in truth else None
            if r is None:
                want = exact_topk(x, q, box_mask(geo, item["bbox"]))
                r = recall(row["ids"], want[1], x, q)
            d = per.setdefault(item["filter"], {"s": [], "recall": []})
            d["s"].append(row["s"])
            d["recall"].append(r)
        return {
            f: {
                **C.latency_summary(d["s"]),
                "recall_mean": round(float(np.mean(d["recall"])), 4),
                "recall_min": round(float(np.min(d["recall"])), 2),
            }
            for f, d in per.items()
        }

    result: dict[str, Any] = {
        "points": n,
        "build": build,
        "open_s": inproc["open_s"],
        "warm_s": inproc["warm_s"],
        "disk_mb": mb(C.dir_size(store_dir)),
        "selectivity": {f: round(float(np.mean(v)) / n, 5) for f, v in matches.items()},
        "matches_mean": {f: round(float(np.mean(v)), 1) for f, v in matches.items()},
        "text_encode_ms": inproc.get("text_encode_ms"),
        "http_floor_ms": inproc.get("http_floor_ms"),
        "inproc": score("inproc", inproc["inproc"], plan["inproc"]),
        "store_only": score("store", inproc["store"], plan["store"]),
        "store_only_first_pass": score("store", inproc["store_first_pass"], plan["store"]),
        "http": score("http", http, plan["http"]),
        "http_all": C.latency_summary([r["s"] for r in http]),
        "inproc_all": C.latency_summary([r["s"] for r in inproc["inproc"]]),
        "numpy": {f: C.latency_summary(v) for f, v in numpy_lat.items()},
    }
    before, after_open, after_q = inproc["status_before_open"], inproc["status_after_open"], server_status
    result["rss"] = {
        "server_rss_mb": mb(after_q.get("VmRSS")),
        "server_peak_rss_mb": mb(after_q.get("VmHWM")),
        "server_rss_anon_mb": mb(after_q.get("RssAnon")),
        "server_rss_file_mb": mb(after_q.get("RssFile")),
        "embedder_rss_mb": mb(before.get("VmRSS")),
        "store_rss_after_open_mb": mb(after_open.get("VmRSS", 0) - before.get("VmRSS", 0)),
        "store_rss_mb": mb(after_q.get("VmRSS", 0) - before.get("VmRSS", 0)),
        "store_rss_anon_mb": mb(after_q.get("RssAnon", 0) - before.get("RssAnon", 0)),
        "store_pss_mb": mb(after_q.get("Pss", 0) - before.get("Pss", 0)),
    }
    if n <= args.qdrant_client_max:
        result["qdrant_client_local"] = qdrant_client_local(
            args, work, vec_path, geo_path, model_id, plan, truth, x, text_vectors, qv_path
        )
    return result


def child_qdrant_client(spec: dict[str, Any]) -> dict[str, Any]:
    """qdrant-client local mode: build (in memory, or at a path and reopened), then store-only searches."""
    from geosearch.store import open_store

    vectors = np.load(spec["vectors"], mmap_mode="r")
    with np.load(spec["geo"]) as z:
        geo = {k: z[k] for k in z.files}
    queries = json.loads(Path(spec["queries"]).read_text())
    qvec = np.load(spec["query_vectors"])
    location = spec["location"]
    if location != ":memory:":
        shutil.rmtree(location, ignore_errors=True)
    status0 = C.proc_status()
    store = open_store(location, model_id=spec["model_id"], dim=int(vectors.shape[1]), backend="qdrant")
    t = time.perf_counter()
    for start in range(0, len(vectors), BATCH):
        store.upsert(chip_points(np.ascontiguousarray(vectors[start : start + BATCH]), geo, start, spec["model_id"]))
    upsert = time.perf_counter() - t
    open_s = None
    if location != ":memory:":
        store.close()
        t = time.perf_counter()
        store = open_store(location, model_id=spec["model_id"], dim=int(vectors.shape[1]), backend="qdrant")
        open_s = round(time.perf_counter() - t, 3)
    rows = []
    for item in queries:
        bbox = tuple(item["bbox"]) if item["bbox"] is not None else None
        t = time.perf_counter()
        hits = store.search(qvec[item["vec"]], limit=10, bbox=bbox)  # type: ignore[arg-type]
        rows.append({"s": time.perf_counter() - t, "ids": [point_index(h.id) for h in hits]})
    status = C.proc_status()
    store.close()
    return {
        "location": location,
        "upsert_s": round(upsert, 2),
        "upsert_points_per_s": round(len(vectors) / upsert, 1),
        "open_s": open_s,
        "disk_mb": mb(C.dir_size(Path(location))) if location != ":memory:" else None,
        "rss_mb": mb(status.get("VmRSS", 0) - status0.get("VmRSS", 0)),
        "rows": rows,
    }


def qdrant_client_local(
    args: argparse.Namespace,
    work: Path,
    vec_path: Path,
    geo_path: Path,
    model_id: str,
    plan: dict[str, list[dict[str, Any]]],
    truth: dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]],
    x: NDArray[np.float32],
    text_vectors: NDArray[np.float32],
    qv_path: Path,
) -> dict[str, Any]:
    """The same points in qdrant-client local mode (filters evaluated in Python): store-only latency."""
    location = str(work / "qdrant-local") if args.qdrant_client_path else ":memory:"
    print(f"qdrant-client local mode ({location}) ...", flush=True)
    per_filter = max(1, min(args.queries, args.qdrant_client_queries))
    items: list[dict[str, Any]] = []
    for name, _ in FILTERS:
        items.extend([it for it in plan["store"] if it["filter"] == name][:per_filter])
    queries_path = work / "queries-qdrant.json"
    queries_path.write_text(json.dumps(items))
    spec = {
        "work": str(work),
        "vectors": str(vec_path),
        "geo": str(geo_path),
        "location": location,
        "model_id": model_id,
        "queries": str(queries_path),
        "query_vectors": str(qv_path),
    }
    res = run_child("qdrant-client", spec, timeout=4 * 3600)
    per: dict[str, dict[str, list[float]]] = {}
    for row, item in zip(res.pop("rows"), items, strict=True):
        d = per.setdefault(item["filter"], {"s": [], "recall": []})
        d["s"].append(row["s"])
        d["recall"].append(recall(row["ids"], truth[item["vec"]][1], x, text_vectors[item["vec"]]))
    res["store_only"] = {
        f: {**C.latency_summary(d["s"]), "recall_mean": round(float(np.mean(d["recall"])), 4)} for f, d in per.items()
    }
    return res


def print_tables(results: dict[str, Any]) -> None:
    def cell(d: dict[str, Any] | None, key: str = "p50_ms") -> str:
        return "-" if not d else f"{d['p50_ms']:.1f}/{d['p99_ms']:.1f}"

    print("\nlatency p50/p99 ms (store: warm pass, store 1st: first pass after open); recall@10 mean (min)")
    head = (
        f"{'chips':>9} {'filter':>6} {'match':>9} {'http':>13} {'in-proc':>13} {'store':>13} {'store 1st':>13} "
        f"{'numpy':>13} "
        f"{'qc-local':>15} {'recall http':>13} {'recall inproc':>14}"
    )
    print(head)
    print("-" * len(head))
    for size, r in results.items():
        qc = r.get("qdrant_client_local", {}).get("store_only", {})
        for name, _ in FILTERS:
            h, i, s = r["http"][name], r["inproc"][name], r["store_only"][name]
            first = r.get("store_only_first_pass", {}).get(name)
            print(
                f"{int(size):>9,} {name:>6} {r['matches_mean'][name]:>9,.0f} {cell(h):>13} {cell(i):>13} {cell(s):>13} "
                f"{cell(first):>13} {cell(r['numpy'][name]):>13} {cell(qc.get(name)):>15} "
                f"{h['recall_mean']:.4f} ({h['recall_min']:.1f}) {i['recall_mean']:.4f} ({i['recall_min']:.1f})"
            )
    print("\nper size: build and resources")
    head2 = (
        f"{'chips':>9} {'upsert s':>9} {'pts/s':>8} {'hnsw s':>8} {'open s':>7} {'warm s':>7} {'disk MB':>8} "
        f"{'store RSS':>10} {'PSS':>7} {'anon':>7} {'server RSS':>11} {'http all p50/p99':>17} {'text ms':>8} "
        f"{'http floor':>10}"
    )
    print(head2)
    print("-" * len(head2))
    for size, r in results.items():
        b, m = r["build"], r["rss"]
        print(
            f"{int(size):>9,} {b['upsert_s']:>9.1f} {b['upsert_points_per_s'] or 0:>8.0f} {b['index_build_s']:>8.1f} "
            f"{r['open_s']:>7.2f} {r.get('warm_s') or 0:>7.2f} {r['disk_mb']:>8.0f} {m['store_rss_mb']:>10.0f} "
            f"{m.get('store_pss_mb') or 0:>7.0f} {m['store_rss_anon_mb']:>7.0f} "
            f"{m['server_rss_mb']:>11.0f} {cell(r['http_all']):>17} {r['text_encode_ms'] or 0:>8.1f} "
            f"{r.get('http_floor_ms') or 0:>10.1f}"
        )
        qc = r.get("qdrant_client_local")
        if qc:
            print(
                f"{'':>9} qdrant-client local ({qc['location']}): upsert {qc['upsert_s']:.1f} s "
                f"({qc['upsert_points_per_s']:.0f} pts/s), reopen {qc['open_s']} s, disk {qc['disk_mb']} MB, "
                f"RSS {qc['rss_mb']:.0f} MB"
            )


def main(argv: list[str] | None = None) -> int:
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
        "its sqlite persistence commits each point, ~60 points/s here)",
    )
    parser.add_argument("--build-only", action="store_true", help="only build (or check) the stores, no queries")
    parser.add_argument("--rebuild", action="store_true", help="rebuild stores even if a matching one exists")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    from geosearch.config import parse_store_options

    options = parse_store_options(args.store_option)

    from geosearch.plugins.cpu import runtime_info

    from geosearch import load_embedder

    machine = C.machine()
    t0 = time.perf_counter()
    embedder = load_embedder()
    machine["embedder_runtime"] = runtime_info(embedder)  # how the query vectors were encoded
    base = C.base_vectors(embedder)
    texts = C.ucm_sentences()
    need = len(FILTERS) * args.queries * 2 + len(FILTERS)
    if need > len(texts):
        parser.error(f"--queries {args.queries} needs {need} distinct query texts; only {len(texts)} available")
    texts = texts[: need - len(FILTERS)] + texts[-len(FILTERS) :]
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

    keys: dict[str, Any] = {
        "search_store_options": options,
        "recall_at_10_min": min(
            r[mode][f]["recall_mean"] for r in results.values() for mode in ("http", "inproc") for f, _ in FILTERS
        )
    }
    if "1000000" in results:
        keys["search_http_p50_ms_1m"] = results["1000000"]["http_all"]["p50_ms"]
        keys["search_http_p99_ms_1m"] = results["1000000"]["http_all"]["p99_ms"]
        keys["search_store_rss_mb_1m"] = results["1000000"]["rss"]["store_rss_mb"]
        keys["search_store_pss_mb_1m"] = results["1000000"]["rss"]["store_pss_mb"]
    print(f"updated {C.update_summary(keys, args.summary)}: {keys}")
    return 0


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
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        kind, spec_file = sys.argv[2], Path(sys.argv[3])
        child_spec = json.loads(spec_file.read_text())
        if kind == "build":
            Path(child_spec["result"]).write_text(json.dumps(child_build(child_spec)))
        elif kind == "qdrant-client":
            Path(child_spec["result"]).write_text(json.dumps(child_qdrant_client(child_spec)))
        else:
            child_serve(child_spec)
        sys.exit(0)
    sys.exit(main())
