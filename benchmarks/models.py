"""Model speed: image embeddings/s, text query latency, captions/s, load time and peak memory.

    python benchmarks/models.py [--threads 2] [--device cpu|cuda] [--out benchmarks/results/models.json]

Each configuration runs in its own subprocess so load time and peak RSS are its own. Inputs are real
UCM test images (../shared/data/ucm-captions), batch 32 at 224 px. The bf16 + channels_last image
path is kept only if its embeddings stay at cosine >= 0.99 to fp32 (reported per run).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UCM = ROOT.parent / "shared" / "data" / "ucm-captions"
QUERIES = [
    "many planes parked next to the terminal",
    "a baseball field beside green trees",
    "storage tanks near the harbour",
    "a river crossing farmland",
    "dense residential houses with roads",
]


def _images(n: int) -> Any:
    import numpy as np

    from geosearch.training.data import load_images, load_ucm

    recs = load_ucm(UCM, "test")
    imgs = load_images(recs[: min(n, len(recs))])
    reps = -(-n // len(imgs))
    return np.ascontiguousarray(np.concatenate([imgs] * reps)[:n, 16:240, 16:240])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rate(fn: Any, items: int, repeats: int) -> tuple[float, list[float]]:
    """Median items/s over `repeats` timed runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return items / statistics.median(times), times


def run_embedder(precision: str, device: str, threads: int, batch: int, repeats: int) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from geosearch import load_embedder

    t0 = time.perf_counter()
    emb = load_embedder(None, precision=precision, device=device, batch_size=batch)
    load_s = time.perf_counter() - t0
    images = _images(batch)
    rate, _ = _rate(lambda: emb.encode_images(images), batch, repeats)
    # Precision is a property of the towers: compare them without the caption memory, whose
    # top-k neighbour choice can amplify a last-bit difference (its effect is scored by `geosearch eval`).
    tower = load_embedder(None, precision=precision, device=device, memory=False)
    ref = load_embedder(None, precision="fp32", device=device, memory=False).encode_images(images)
    cos = float(np.min(np.sum(ref * tower.encode_images(images), axis=1)))
    emb.encode_texts(QUERIES[:1])
    lat = []
    for _ in range(max(3, repeats)):
        for q in QUERIES:
            t1 = time.perf_counter()
            emb.encode_texts([q])
            lat.append((time.perf_counter() - t1) * 1000)
    return {
        "what": f"embedder {precision}",
        "model": emb.model_id,
        "images_per_s": round(rate, 1),
        "text_query_ms_p50": round(statistics.median(lat), 2),
        "min_cosine_to_fp32": round(cos, 4),
        "load_s": round(load_s, 2),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def run_captioner(spec: str, device: str, threads: int, batch: int, repeats: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    from geosearch import load_captioner, load_embedder

    t0 = time.perf_counter()
    emb = load_embedder(None, device=device)
    cap = load_captioner(spec, embedder=emb)
    load_s = time.perf_counter() - t0
    images = _images(batch)
    rate, _ = _rate(lambda: cap.caption(images), batch, repeats)
    return {
        "what": f"captioner {spec}",
        "model": cap.model_id,
        "captions_per_s": round(rate, 2),
        "example": cap.caption(images[:1])[0],
        "load_s": round(load_s, 2),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def _child(args: argparse.Namespace) -> None:
    kind, _, name = args.child.partition(":")
    if kind == "embedder":
        result = run_embedder(name, args.device, args.threads, args.batch, args.repeats)
    else:
        result = run_captioner(name, args.device, args.threads, args.batch, max(1, args.repeats // 2))
    print(json.dumps(result))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "models.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    configs = ["embedder:fp32", "embedder:auto", "captioner:nearest-caption", "captioner:lite-capret"]
    rows = []
    for cfg in configs:
        cmd = [sys.executable, __file__, "--child", cfg, "--threads", str(args.threads), "--device", args.device]
        cmd += ["--batch", str(args.batch), "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{cfg} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
            rows.append({"what": cfg, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'configuration':<28}{'items/s':>10}{'query ms':>10}{'cos>=':>8}{'load s':>8}{'RSS MB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['what']:<28} failed: {r['error']}")
            continue
        rate = r.get("images_per_s", r.get("captions_per_s"))
        q = r.get("text_query_ms_p50", "")
        c = r.get("min_cosine_to_fp32", "")
        print(f"{r['what']:<28}{rate:>10}{q:>10}{c:>8}{r['load_s']:>8}{r['peak_rss_mb']:>8}")
    result = {
        "machine": {"cores": args.threads, "cpu": _cpu_model(), "device": args.device},
        "batch": args.batch,
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
