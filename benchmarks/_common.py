"""Helpers shared by the benchmark scripts: child processes, timing, memory probes, machine info, tables,
JSON results and the real base embeddings."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"
SCENES_DIR = SHARED_DATA / "scenes"
UCM_DIR = SHARED_DATA / "ucm-captions"


def cache_dir() -> Path:
    """Scratch space outside the repository (vectors, stores, mosaics)."""
    path = Path(os.environ.get("GEOSEARCH_BENCH_CACHE", Path(tempfile.gettempdir()) / "geosearch-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- memory ------------------------------------------------------------------------------------
def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile ... and Pss of a process in bytes (Linux /proc).

    Pss counts a page once however often it is mapped (RSS counts a file mapped twice twice).
    """
    out: dict[str, int] = {}
    for name in ("status", "smaps_rollup"):
        try:
            text = Path(f"/proc/{pid}/{name}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB" and key not in out:
                out[key] = int(parts[0]) * 1024
    return out


def proc_counts(pid: int | str = "self") -> dict[str, int]:
    """Threads, and CPU seconds (user + system) x 100, of a process (Linux /proc): what `proc_status`
    leaves out because /proc gives them without a kB unit."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                out["Threads"] = int(line.split()[1])
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        out["cpu_cs"] = round((int(fields[11]) + int(fields[12])) * 100 / ticks)  # utime + stime
    except (OSError, ValueError, IndexError):
        pass
    return out


def memory_mb(pid: int | str = "self") -> dict[str, Any]:
    """A process's memory in MiB (RSS, PSS, anonymous and file-backed RSS, peak RSS), its thread count
    and CPU seconds so far: one probe for reports that follow a process over time."""
    status, counts = proc_status(pid), proc_counts(pid)
    return {
        "rss_mb": mb(status.get("VmRSS")),
        "pss_mb": mb(status.get("Pss")),
        "rss_anon_mb": mb(status.get("RssAnon")),
        "rss_file_mb": mb(status.get("RssFile")),
        # pages only this process maps: unlike PSS, not moved by other processes mapping the same files
        "private_mb": mb(status["Private_Clean"] + status["Private_Dirty"]) if "Private_Dirty" in status else None,
        "peak_rss_mb": mb(status.get("VmHWM")),
        "threads": counts.get("Threads"),
        "cpu_s": None if "cpu_cs" not in counts else counts["cpu_cs"] / 100,
    }


def rss_bytes() -> int:
    return proc_status().get("VmRSS", 0)


def peak_rss_bytes() -> int:
    """Peak resident set of this process (ru_maxrss is KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def mb(value: float | None, digits: int | None = 1) -> float | None:
    """Bytes as MiB rounded to `digits` (None: a whole number); None stays None."""
    return None if value is None else round(value / 2**20, digits)


def dir_size(path: Path) -> int:
    """Allocated bytes under `path` (sparse files count what they occupy, like `du`)."""
    total = 0
    for p in path.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_file() and not p.is_symlink():
            total += st.st_blocks * 512
    return total


# ---- child processes ------------------------------------------------------------------------------
def run_child(
    script: str | Path,
    kind: str,
    spec: dict[str, Any],
    work: Path,
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
) -> dict[str, Any]:
    """Run `script --child KIND SPEC` in a fresh interpreter (its own peak RSS, thread pools, env) and
    return the JSON it wrote to ``spec["result"]``. A failed child raises CalledProcessError, with its
    output attached when `capture` is set (otherwise that output goes to this terminal)."""
    cmd, result = child_command(script, kind, spec, work)
    env = None if env is None else dict(env)
    subprocess.run(cmd, check=True, timeout=timeout, env=env, capture_output=capture, text=True)
    return json.loads(result.read_text())  # type: ignore[no-any-return]


def child_command(script: str | Path, kind: str, spec: dict[str, Any], work: Path) -> tuple[list[str], Path]:
    """Write `spec` (plus where the child puts its result) under `work`; the command line and result path."""
    spec_path, result = work / f"{kind}-spec.json", work / f"{kind}-result.json"
    result.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({**spec, "result": str(result)}))
    return [sys.executable, str(script), "--child", kind, str(spec_path)], result


def child_entry(handlers: Mapping[str, Callable[[dict[str, Any]], dict[str, Any] | None]]) -> None:
    """The child side of `run_child`: when argv is `--child KIND SPEC`, run the handler for KIND, write
    what it returns (None: it wrote its result itself) to ``spec["result"]`` and exit."""
    if len(sys.argv) != 4 or sys.argv[1] != "--child":
        return
    spec = json.loads(Path(sys.argv[3]).read_text())
    result = handlers[sys.argv[2]](spec)
    if result is not None:
        Path(spec["result"]).write_text(json.dumps(result))
    sys.exit(0)


# ---- timing and statistics -----------------------------------------------------------------------
def time_runs(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of each of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_rate(fn: Callable[[], object], items: int, repeats: int) -> float:
    """Median items/s of `fn` (which handles `items` items) over `repeats` timed calls after one warm-up."""
    fn()
    return items / statistics.median(time_runs(fn, repeats))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in seconds]
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
        "n": len(ms),
    }


def latency_percentiles(seconds: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Percentiles (``p50_ms`` ...), mean and max of latencies in seconds, in ms, and their count."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    out = {f"p{q:g}_ms": round(percentile(ms.tolist(), q), 3) for q in qs}
    out["mean_ms"] = round(float(ms.mean()), 3) if len(ms) else float("nan")
    out["max_ms"] = round(float(ms.max()), 3) if len(ms) else float("nan")
    out["n"] = len(ms)
    return out


# ---- machine and summary ------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """The machine a result was measured on (recorded in every result file)."""
    from geosearch.plugins.cpu import capability, cpu_model, native_bf16

    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_capability": capability(),  # PyTorch's kernel level (AVX2, AVX512, ...): speed depends on it
        "native_bf16": native_bf16(),
        "memory_gb": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def print_table(
    columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any] | str], *, sep: str = " ", rule: bool = False
) -> None:
    """Print a header and one line per row: `columns` are (title, format spec), the spec starting with
    its alignment and width (">9,", "<34", ">8.1f"), which the title takes too; a row given as a
    string is printed as it is (notes, failures). `rule` draws a dashed line under the header."""
    head = sep.join(format(title, _align_width(spec)) for title, spec in columns)
    print(head)
    if rule:
        print("-" * len(head))
    for row in rows:
        if isinstance(row, str):
            print(row)
        else:
            print(sep.join(format(value, spec) for value, (_, spec) in zip(row, columns, strict=True)))


def _align_width(spec: str) -> str:
    """The alignment and width that open a format spec (">9" of ">9,.0f")."""
    match = re.match(r"[<>^]?\d*", spec)
    return match.group() if match else ""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def update_summary(keys: dict[str, Any], path: Path | None = None) -> Path:
    """Read-modify-write `benchmarks/results/summary.json`: each script owns only its own keys."""
    path = path or RESULTS / "summary.json"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    data.update(keys)
    data["machine"] = {
        k: v for k, v in machine().items() if k in ("cores", "cpu_model", "cpu_capability", "native_bf16", "memory_gb")
    }
    data["date"] = now_iso()
    write_json(path, data)
    return path


# ---- real embeddings ----------------------------------------------------------------------------
def scene_paths() -> list[Path]:
    return sorted(p for p in SCENES_DIR.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))


def scene_chip_pixels() -> NDArray[np.uint8]:
    """Every chip (default tiling, min_valid 0.5) of every shared scene, as (N, 224, 224, 3) uint8."""
    from geosearch.tilers import TileOptions, open_scene

    options = TileOptions()
    chips: list[NDArray[np.uint8]] = []
    for path in scene_paths():
        with open_scene(path, options) as scene:
            for spec in scene.windows():
                chip = scene.read(spec)
                if chip.valid_fraction >= options.min_valid:
                    chips.append(chip.pixels)
    return np.stack(chips)


def ucm_pixels(limit: int | None = None) -> NDArray[np.uint8]:
    """UCM-Captions images resized to 224x224 RGB (bilinear), in file-name order."""
    from PIL import Image

    files = sorted((UCM_DIR / "images").glob("*.jpg"), key=lambda p: int(p.stem))
    if limit is not None:
        files = files[:limit]
    out = np.empty((len(files), 224, 224, 3), np.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            out[i] = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    return out


def ucm_sentences() -> list[str]:
    """Unique UCM caption sentences (real user-like queries), in a fixed order."""
    data = json.loads((UCM_DIR / "captions.json").read_text())
    seen: dict[str, None] = {}
    for image in data["images"]:
        for sentence in image["sentences"]:
            text = " ".join(str(sentence["raw"]).split()).strip(" .")
            if text:
                seen.setdefault(text, None)
    return list(seen)


def base_vectors(embedder: Any, *, log: Any = print) -> NDArray[np.float32]:
    """Real chip embeddings (shared scenes + UCM), computed once per model and cached in /tmp."""
    path = cache_dir() / f"base-{slug(embedder.model_id)}.npy"
    if path.exists():
        cached: NDArray[np.float32] = np.load(path)
        return cached
    t0 = time.perf_counter()
    pixels = np.concatenate([scene_chip_pixels(), ucm_pixels()])
    log(f"embedding {len(pixels)} real chips once (cached in {path}) ...")
    vectors = np.concatenate([embedder.encode_images(pixels[i : i + 64]) for i in range(0, len(pixels), 64)]).astype(
        np.float32
    )
    np.save(path, vectors)
    log(f"embedded {len(vectors)} chips in {time.perf_counter() - t0:.0f} s")
    return vectors


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)
