"""Load benchmark: a real `geosearch serve` under concurrent clients, and memory over repeated ingests.

Serving: the store is search.py's (`search.ensure_store`: real chip/UCM embeddings replicated with
jitter over the conterminous US; reused from $GEOSEARCH_BENCH_CACHE when search.py or an earlier run
built it with the same size and options, otherwise built there). `geosearch serve` runs on it as a
subprocess on 127.0.0.1 (its environment without GEOSEARCH_*/QDRANT_* variables, so no rate limit
or other deployment setting applies; OMP_NUM_THREADS=1 unless set, as in search.py; its log goes to a
file). Client threads, each with its own keep-alive httpx connection, send `GET /search?q=...&bbox=...`
back to back for `--duration` seconds per phase: a short 1-client warm-up, then each `--clients`
level, then `--soak` more phases at the largest level back to back (memory must not keep growing).
Queries cycle through the 2,029 distinct UCM caption sentences (more than the engine's 512-entry
text cache, so every request encodes its text) and a mix of no box and boxes selecting 0.1 %, 1 %,
20 % and 100 % of the chips. Per phase: requests/s, latency percentiles of the successful requests,
errors (any non-200 or exception), and the server's VmRSS / PSS (smaps_rollup), threads and CPU
seconds at its start and end (and the largest RSS sampled during it).

Ingest repeat: a child process loads the default embedder once and calls `geosearch.ingest.ingest()`
`--ingest-rounds` times on one small real scene (../shared/data/scenes/rasterio/cogeo.tif, default
options, captions on), reporting its RSS, PSS and threads after every call: "same" re-ingests into one
store with force, "fresh" into a new temporary store each time (engine closed after it; the captioner
is loaded once and shared). It runs in the caller's environment, as `geosearch ingest` would (no
OMP_NUM_THREADS=1 unless the caller set it).

Run from the repository root:

    python benchmarks/load.py                                  # 100k chips, 1/8/32 clients, 20 s each
    python benchmarks/load.py --chips 1000 --duration 3 --clients 1,4 --soak 1 --ingest-rounds 3   # quick

Writes benchmarks/results/load.json (`serve` and `ingest_repeat` sections).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as search.py: the server inherits it (not the ingest child)

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import search as S

INGEST_SCENE = C.SCENES_DIR / "rasterio" / "cogeo.tif"
CLIENT_TIMEOUT_S = 60.0
SAMPLE_EVERY_S = 0.5


# ---- children -----------------------------------------------------------------------------------
def child_store(spec: dict[str, Any]) -> dict[str, Any]:
    """The machine, the default model's id and search.py's store of spec["chips"] chips (built if missing)."""
    from geosearch import load_embedder
    from geosearch.config import parse_store_options

    machine = C.machine()
    embedder = load_embedder()
    base = C.base_vectors(embedder)
    model_id = embedder.model_id
    del embedder
    options = parse_store_options(spec["store_options"])
    args = argparse.Namespace(rebuild=spec["rebuild"])
    _, _, _, store_dir, build = S.ensure_store(int(spec["chips"]), args, base, model_id, options)
    return {
        "machine": machine,
        "model_id": model_id,
        "store": str(store_dir),
        "build": build,
        "store_options": options,
        "base_vectors": len(base),
    }


def child_ingest_repeat(spec: dict[str, Any]) -> dict[str, Any]:
    """`ingest()` of one scene `rounds` times in this process, memory after each call."""
    if spec["omp_num_threads"] is None:  # the caller's threads, as `geosearch ingest` would run
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = spec["omp_num_threads"]
    from geosearch.ingest.runtime import prepare_process

    prepare_process()  # as `geosearch ingest`, before the model loads
    from geosearch import load_embedder
    from geosearch.engine import Engine
    from geosearch.ingest import IngestOptions, ingest
    from geosearch.plugins.cpu import runtime_info
    from geosearch.store import open_store

    start = C.memory_mb()
    embedder = load_embedder()
    loaded = C.memory_mb()
    root = Path(tempfile.mkdtemp(prefix="geosearch-load-ingest-"))
    captioner = None
    engine: Engine | None = None
    calls: list[dict[str, Any]] = []
    try:
        for i in range(int(spec["rounds"])):
            if engine is None or spec["mode"] == "fresh":
                store = open_store(root / f"store-{i}", model_id=embedder.model_id, dim=embedder.dim)
                engine = Engine(embedder, store, captioner=captioner)
            t = time.perf_counter()
            report = ingest(engine, [spec["scene"]], IngestOptions(force=True))
            wall = time.perf_counter() - t
            if not report.ok:
                raise SystemExit(f"ingest failed: {[s.error for s in report.scenes]}")
            captioner = engine.captioner  # loaded by the first call; shared by later engines
            if spec["mode"] == "fresh":
                engine.close()
                engine = None
                shutil.rmtree(root / f"store-{i}", ignore_errors=True)
            calls.append({"call": i + 1, "chips": report.chips, "wall_s": round(wall, 2), **C.memory_mb()})
            print(f"  ingest {spec['mode']} {i + 1}: {calls[-1]}", file=sys.stderr, flush=True)
    finally:
        if engine is not None:
            engine.close()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "mode": spec["mode"],
        "scene": spec["scene"],
        "runtime": runtime_info(embedder),
        "start": start,
        "model_loaded": loaded,
        "calls": calls,
        **growth(calls),
    }


def growth(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS, anonymous RSS, private and PSS growth over the calls: model loaded (before the first) to the
    last, first to last, and the least-squares slope per call after the first (the first call loads the
    captioner and warms allocators)."""
    out: dict[str, Any] = {}
    for key in ("rss", "rss_anon", "private", "pss"):
        values = [c[f"{key}_mb"] for c in calls]
        if None in values:
            continue
        out[f"{key}_first_to_last_mb"] = round(values[-1] - values[0], 1)
        if len(values) >= 3:
            x = np.arange(len(values) - 1, dtype=np.float64)
            out[f"{key}_slope_mb_per_call"] = round(float(np.polyfit(x, values[1:], 1)[0]), 2)
    return out


# ---- the server ---------------------------------------------------------------------------------
def server_env() -> dict[str, str]:
    """This environment without deployment configuration (rate limit, keys, store, Qdrant url ...)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GEOSEARCH_", "QDRANT_"))}


def geosearch_command() -> list[str]:
    script = Path(sys.executable).with_name("geosearch")
    found = str(script) if script.exists() else shutil.which("geosearch")
    if found is None:
        raise SystemExit("the geosearch console script is not installed")
    return [found]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    ready_s: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_server(store: str, store_options: list[str], log: Path, timeout: float = 600) -> Server:
    """`geosearch serve` on a free port; returns once /health answers 200."""
    import httpx

    port = S.free_port()
    cmd = [*geosearch_command(), "serve", "--store", store, "--host", "127.0.0.1", "--port", str(port)]
    for option in store_options:
        cmd += ["--store-option", option]
    print(f"$ {' '.join(cmd)}  (log: {log})", flush=True)
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env())
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"geosearch serve exited with {proc.returncode}; see {log}")
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"geosearch serve did not come up in {timeout:.0f} s; see {log}")
            time.sleep(0.2)
    return Server(proc, port, log, time.perf_counter() - t0)


def log_problems(log: Path) -> dict[str, Any]:
    """Server-side trouble in its log: tracebacks, ERROR lines and access-log lines with a 5xx status."""
    lines = log.read_text(errors="replace").splitlines()
    bad = [ln for ln in lines if "Traceback" in ln or "ERROR" in ln or '" 5' in ln]
    fivexx = sum(1 for ln in lines if '" 5' in ln)
    return {
        "log_lines": len(lines),
        "tracebacks_or_errors": len(bad),
        "access_5xx": fivexx,
        "samples": bad[:5],
        "tail": lines[-4:],
    }


# ---- the clients --------------------------------------------------------------------------------
def query_plan(chips: int, count: int = 10_000) -> list[tuple[dict[str, str], str]]:
    """(query parameters, filter name) per request: texts cycle through every UCM sentence, filters
    through none and boxes of 0.1 % .. 100 % of the chips (a new random box each time)."""
    texts = C.ucm_sentences()
    rng = np.random.default_rng(2024 + chips)
    plan = []
    for i in range(count):
        name, frac = S.FILTERS[i % len(S.FILTERS)]
        params = {"q": texts[i % len(texts)], "limit": "10"}
        if frac is not None:
            params["bbox"] = ",".join(f"{v:.6f}" for v in S.random_box(rng, frac))
        plan.append((params, name))
    return plan


@dataclass
class Tally:
    """One client thread's requests."""

    ok_s: list[float] = field(default_factory=list)
    ok_filter: list[str] = field(default_factory=list)
    hits: int = 0
    empty: int = 0
    closed: int = 0
    """Responses that asked to close the connection (keep-alive lost)."""
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    error_s: list[float] = field(default_factory=list)


class Cursor:
    """The next plan index, shared by all clients of a run (so phases continue where the last stopped)."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            i, self._next = self._next, self._next + 1
            return i


def client_loop(
    url: str, plan: list[tuple[dict[str, str], str]], cursor: Cursor, start: threading.Barrier, stop_at: list[float]
) -> Tally:
    import httpx

    tally = Tally()
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        start.wait()
        while time.monotonic() < stop_at[0]:
            params, name = plan[cursor() % len(plan)]
            t = time.perf_counter()
            try:
                r = client.get("/search", params=params)
                dt = time.perf_counter() - t
                if r.status_code != 200:
                    kind = f"HTTP {r.status_code}"
                    sample = f"{kind}: {r.text[:200]}"
                else:
                    n = len(r.json()["features"])
                    tally.ok_s.append(dt)
                    tally.ok_filter.append(name)
                    tally.hits += n
                    tally.empty += n == 0
                    tally.closed += r.headers.get("connection", "").lower() == "close"
                    continue
            except Exception as e:  # every failure is counted, none stops the run
                dt = time.perf_counter() - t
                kind = type(e).__name__
                sample = f"{kind}: {e}"[:200]
            tally.errors[kind] += 1
            tally.error_s.append(dt)
            if len(tally.error_samples) < 3:
                tally.error_samples.append(sample)
    return tally


def run_phase(
    name: str, server: Server, clients: int, duration: float, plan: list[tuple[dict[str, str], str]], cursor: Cursor
) -> dict[str, Any]:
    """`clients` threads for `duration` seconds; the server's memory at the start and end, and sampled."""
    tallies: list[Tally] = [Tally() for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    stop_at = [float("inf")]

    def work(k: int) -> None:
        tallies[k] = client_loop(server.url, plan, cursor, barrier, stop_at)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(clients)]
    for th in threads:
        th.start()
    load0 = os.getloadavg()[0]
    mem0 = C.memory_mb(server.proc.pid)
    client_cpu0 = time.process_time()
    barrier.wait()
    t0 = time.perf_counter()
    stop_at[0] = time.monotonic() + duration
    peak = mem0["rss_mb"] or 0.0
    while any(th.is_alive() for th in threads):
        time.sleep(SAMPLE_EVERY_S)
        peak = max(peak, C.memory_mb(server.proc.pid)["rss_mb"] or 0.0)
    elapsed = time.perf_counter() - t0
    mem1 = C.memory_mb(server.proc.pid)
    ok_s = [s for t in tallies for s in t.ok_s]
    filters = [f for t in tallies for f in t.ok_filter]
    errors: Counter[str] = Counter()
    for t in tallies:
        errors.update(t.errors)
    n_err = sum(errors.values())
    per_filter = {
        f: C.latency_percentiles([s for s, g in zip(ok_s, filters, strict=True) if g == f]) for f, _ in S.FILTERS
    }
    server_cpu = None if mem0["cpu_s"] is None or mem1["cpu_s"] is None else round(mem1["cpu_s"] - mem0["cpu_s"], 2)
    return {
        "phase": name,
        "clients": clients,
        "elapsed_s": round(elapsed, 2),
        "requests": len(ok_s) + n_err,
        "ok": len(ok_s),
        "errors": n_err,
        "errors_by_kind": dict(errors),
        "error_samples": [s for t in tallies for s in t.error_samples][:5],
        "requests_per_s": round((len(ok_s) + n_err) / elapsed, 2),
        "ok_per_s": round(len(ok_s) / elapsed, 2),
        "latency": C.latency_percentiles(ok_s),
        "latency_by_filter": per_filter,
        "hits_per_response": round(sum(t.hits for t in tallies) / max(1, len(ok_s)), 2),
        "empty_responses": sum(t.empty for t in tallies),
        "connection_close_responses": sum(t.closed for t in tallies),
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_request": round(server_cpu * 1e3 / len(ok_s), 2) if server_cpu and ok_s else None,
        "client_cpu_s": round(time.process_time() - client_cpu0, 2),
        "loadavg_1m_at_start": round(load0, 2),
        "server_memory_start": mem0,
        "server_memory_end": mem1,
        "server_rss_sampled_max_mb": peak,
        "rss_growth_mb": _delta(mem1["rss_mb"], mem0["rss_mb"]),
        "pss_growth_mb": _delta(mem1["pss_mb"], mem0["pss_mb"]),
        "anon_growth_mb": _delta(mem1["rss_anon_mb"], mem0["rss_anon_mb"]),
        "private_growth_mb": _delta(mem1["private_mb"], mem0["private_mb"]),
    }


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else round(after - before, 1)


# ---- driver -------------------------------------------------------------------------------------
def serve_section(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Store (search.py's), server, phases. Returns (the store child's answer, the serve section)."""
    import httpx

    print(f"store of {args.chips:,} chips (search.py's builder; cache {C.cache_dir()}) ...", flush=True)
    spec = {"chips": args.chips, "store_options": args.store_option, "rebuild": args.rebuild}
    info = C.run_child(__file__, "store", spec, work, timeout=4 * 3600)
    plan = query_plan(args.chips)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    phases = [("warm-up", 1, args.warmup)] if args.warmup > 0 else []
    phases += [(f"{c} clients", c, args.duration) for c in levels]
    phases += [(f"soak {i + 1}/{args.soak}", max(levels), args.duration) for i in range(args.soak)]

    server = start_server(info["store"], args.store_option, work / "serve.log")
    results: list[dict[str, Any]] = []
    try:
        ready = C.memory_mb(server.proc.pid)
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            health = client.get("/health").json()
        print(f"serving {health.get('chips', health)} chips after {server.ready_s:.1f} s; RSS {ready}", flush=True)
        cursor = Cursor()
        for name, clients, duration in phases:
            r = run_phase(name, server, clients, duration, plan, cursor)
            results.append(r)
            lat = r["latency"]
            print(
                f"  {name}: {r['requests']} requests, {r['requests_per_s']} req/s, p50/p95/p99 "
                f"{lat['p50_ms']:.1f}/{lat['p95_ms']:.1f}/{lat['p99_ms']:.1f} ms, {r['errors']} errors, "
                f"RSS {r['server_memory_start']['rss_mb']} -> {r['server_memory_end']['rss_mb']} MB",
                flush=True,
            )
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            health_after = client.get("/health").status_code
        final = C.memory_mb(server.proc.pid)
    finally:
        code = server.stop()
    soak = [r for r in results if r["phase"].startswith("soak")]
    level_last = next((r for r in results if r["phase"] == f"{max(levels)} clients"), None)
    section = {
        "server_command": "geosearch serve --store STORE --host 127.0.0.1 --port PORT"
        + "".join(f" --store-option {o}" for o in args.store_option),
        "server_env_dropped": sorted(k for k in os.environ if k.startswith(("GEOSEARCH_", "QDRANT_"))),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "server_runtime": health.get("runtime"),  # CPU capability, threads, runtime, precision of its embedder
        "health": health,
        "ready_s": round(server.ready_s, 2),
        "server_memory_ready": ready,
        "server_memory_final": final,
        "health_after": health_after,
        "exit_code": code,  # -15: uvicorn shut down gracefully and re-raised the SIGTERM it was sent
        "server_log": log_problems(server.log),
        "query_mix": {"texts": len(C.ucm_sentences()), "filters": [f for f, _ in S.FILTERS], "limit": 10},
        "client": {"kind": "threads, one keep-alive httpx.Client each", "timeout_s": CLIENT_TIMEOUT_S},
        "duration_s": args.duration,
        "phases": results,
        "errors_total": sum(r["errors"] for r in results),
        "soak_rss_growth_mb": [r["rss_growth_mb"] for r in soak],
        "soak_pss_growth_mb": [r["pss_growth_mb"] for r in soak],
        "soak_anon_growth_mb": [r["anon_growth_mb"] for r in soak],
        "rss_growth_over_soak_mb": (
            _delta(soak[-1]["server_memory_end"]["rss_mb"], soak[0]["server_memory_start"]["rss_mb"]) if soak else None
        ),
        "rss_growth_ready_to_final_mb": _delta(final["rss_mb"], ready["rss_mb"]),
        "pss_growth_ready_to_final_mb": _delta(final["pss_mb"], ready["pss_mb"]),
        "max_level_requests_per_s": level_last["requests_per_s"] if level_last else None,
    }
    return info, section


def caller_omp_threads() -> str | None:
    """OMP_NUM_THREADS as the caller set it, or None: this module defaults it to 1 for the server, and
    /proc/self/environ is the environment the process started with."""
    try:
        started = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        return os.environ.get("OMP_NUM_THREADS")
    found = [item.partition(b"=")[2].decode() for item in started if item.startswith(b"OMP_NUM_THREADS=")]
    return found[0] if found else None


def ingest_section(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"scene": str(INGEST_SCENE), "rounds": args.ingest_rounds}
    for mode in ("same", "fresh"):
        print(f"ingest repeat ({mode} store) x{args.ingest_rounds}: {INGEST_SCENE.name} ...", flush=True)
        spec = {"scene": str(INGEST_SCENE), "rounds": args.ingest_rounds, "mode": mode}
        spec["omp_num_threads"] = caller_omp_threads()
        out[mode] = C.run_child(__file__, "ingest-repeat", spec, work, timeout=3600)
    return out


def print_serve(section: dict[str, Any]) -> None:
    columns = [
        ("phase", "<12"), ("clients", ">7"), ("requests", ">8"), ("req/s", ">7.1f"), ("p50 ms", ">7.1f"),
        ("p95 ms", ">7.1f"), ("p99 ms", ">7.1f"), ("errors", ">6"), ("RSS start", ">9.1f"), ("RSS end", ">8.1f"),
        ("dRSS", ">6.1f"), ("dAnon", ">6.1f"), ("PSS start", ">9.1f"), ("PSS end", ">8.1f"), ("max RSS", ">8.1f"),
        ("threads", ">7"), ("cpu ms/req", ">10.1f"),
    ]  # fmt: skip
    rows: list[list[Any] | str] = []
    for r in section["phases"]:
        m0, m1, lat = r["server_memory_start"], r["server_memory_end"], r["latency"]
        rows.append(
            [
                r["phase"], r["clients"], r["requests"], r["requests_per_s"], lat["p50_ms"], lat["p95_ms"],
                lat["p99_ms"], r["errors"], m0["rss_mb"], m1["rss_mb"], r["rss_growth_mb"], r["anon_growth_mb"],
                m0["pss_mb"], m1["pss_mb"], r["server_rss_sampled_max_mb"], m1["threads"],
                r["server_cpu_ms_per_request"] or float("nan"),
            ]
        )  # fmt: skip
        for sample in r["error_samples"]:
            rows.append(f"    error: {sample}")
    print("\nGET /search against `geosearch serve` (server memory in MiB at the phase's start and end; dAnon:")
    print("growth of its anonymous RSS, the heap; PSS also moves when other processes map the same files)")
    C.print_table(columns, rows, rule=True)
    ready, final = section["server_memory_ready"], section["server_memory_final"]
    print(
        f"server ready in {section['ready_s']} s at RSS {ready['rss_mb']} MB (PSS {ready['pss_mb']}); final RSS "
        f"{final['rss_mb']} MB (PSS {final['pss_mb']}), peak {final['peak_rss_mb']} MB; soak RSS growth per phase "
        f"{section['soak_rss_growth_mb']} MB (anon {section['soak_anon_growth_mb']}); client errors "
        f"{section['errors_total']}; server log: {section['server_log']['tracebacks_or_errors']} errors, exit "
        f"{section['exit_code']}"
    )


def print_ingest(section: dict[str, Any]) -> None:
    for mode in ("same", "fresh"):
        r = section.get(mode)
        if not r:
            continue
        print(
            f"\ningest() x{len(r['calls'])} of {Path(r['scene']).name} ({mode} store): RSS at start "
            f"{r['start']['rss_mb']} MB, model loaded {r['model_loaded']['rss_mb']} MB"
        )
        columns = [
            ("call", ">4"), ("chips", ">5"), ("wall s", ">6.2f"), ("RSS MB", ">7.1f"), ("dRSS", ">6.1f"),
            ("PSS MB", ">7.1f"), ("anon MB", ">7.1f"), ("private", ">7.1f"), ("threads", ">7"),
        ]  # fmt: skip
        rows: list[list[Any] | str] = []
        prev = r["model_loaded"]["rss_mb"]
        for c in r["calls"]:
            rows.append([c["call"], c["chips"], c["wall_s"], c["rss_mb"], c["rss_mb"] - prev, c["pss_mb"],
                         c["rss_anon_mb"], c["private_mb"], c["threads"]])  # fmt: skip
            prev = c["rss_mb"]
        C.print_table(columns, rows)
        print(
            f"first to last call: RSS {r['rss_first_to_last_mb']:+} MB, anon {r['rss_anon_first_to_last_mb']:+} MB; "
            f"slope after the first call: RSS {r.get('rss_slope_mb_per_call')} MB/call, anon "
            f"{r.get('rss_anon_slope_mb_per_call')}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chips", type=int, default=100_000, help="store size (search.py's dataset)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    parser.add_argument("--soak", type=int, default=3, help="extra phases at the largest level, back to back")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of 1-client warm-up (not a level)")
    parser.add_argument(
        "--store-option", action="append", default=[], metavar="KEY=VALUE", help="open_store option, repeatable"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the store even if a matching one exists")
    parser.add_argument("--ingest-rounds", type=int, default=10, help="ingest() calls per ingest-repeat mode")
    parser.add_argument("--skip-ingest-repeat", action="store_true")
    parser.add_argument("--skip-serve", action="store_true", help="only the ingest-repeat section")
    parser.add_argument("--out", type=Path, default=C.RESULTS / "load.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python benchmarks/load.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {"benchmark": "load", "date": C.now_iso(), "command": command.strip(), "chips": args.chips}
    with tempfile.TemporaryDirectory(prefix="geosearch-load-") as tmp:
        work = Path(tmp)
        if not args.skip_serve:
            info, serve = serve_section(args, work)
            report.update(machine=info.pop("machine"), store=info, serve=serve)
            C.write_json(args.out, report)
            print_serve(serve)
        if not args.skip_ingest_repeat:
            report["ingest_repeat"] = ingest_section(args, work)
            report.setdefault("machine", C.machine())
            C.write_json(args.out, report)
            print_ingest(report["ingest_repeat"])
    if "machine" not in report:
        report["machine"] = C.machine()
    C.write_json(args.out, report)
    print(f"\nwrote {args.out}")
    errors = report.get("serve", {}).get("errors_total", 0)
    return 1 if errors else 0


if __name__ == "__main__":
    C.child_entry({"store": child_store, "ingest-repeat": child_ingest_repeat})
    sys.exit(main())
