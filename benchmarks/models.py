"""Model speed: image embeddings/s, text query latency, captions/s, load time and peak memory, per runtime.

    python benchmarks/models.py [--threads 2] [--device cpu|cuda] [--repeats 5] [--embedders-only]
                                [--out benchmarks/results/models.json]

Each configuration runs in its own subprocess so load time and peak RSS are its own. Inputs are real
UCM test images (../shared/data/ucm-captions), batch 32 at 224 px. Embedder rows: torch fp32 (the
reference), torch bf16, torch auto, ONNX Runtime fp32 and int8, and the shipped default
(`load_embedder()`, runtime and precision 'auto'); each with its cosine to torch fp32 per image, with
the caption memory off (the towers) and on (what a store holds), and with the CPU capability, thread
count, runtime and precision it ran with (`geosearch.plugins.cpu.runtime_info`).

The ``avx2:`` rows rerun torch with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, i.e. as on a CPU
without AVX-512 (bf16 emulated). ONNX Runtime has no such switch: its ``avx2:`` row still uses every
instruction the CPU has, so it says nothing about AVX2 machines beyond "ORT is unaffected by the env".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

QUERIES = [
    "many planes parked next to the terminal",
    "a baseball field beside green trees",
    "storage tanks near the harbour",
    "a river crossing farmland",
    "dense residential houses with roads",
]
EMBEDDERS: dict[str, dict[str, str]] = {
    "torch-fp32": {"runtime": "torch", "precision": "fp32"},
    "torch-bf16": {"runtime": "torch", "precision": "bf16"},
    "torch-auto": {"runtime": "torch", "precision": "auto"},
    "onnx-fp32": {"runtime": "onnx", "precision": "fp32"},
    "onnx-int8": {"runtime": "onnx", "precision": "int8"},
    "default": {},
}
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
DEFAULT_CONFIGS = [
    "towers:ab",
    *(f"embedder:{name}" for name in EMBEDDERS),
    "avx2:embedder:torch-fp32",
    "avx2:embedder:torch-auto",
    "avx2:embedder:onnx-fp32",
    "captioner:nearest-caption",
    "captioner:lite-capret",
]


def _images(n: int) -> Any:
    import numpy as np

    from geosearch.evaluation.datasets import load_images, load_records

    recs = load_records(C.UCM_DIR, "test")
    imgs = load_images(recs[: min(n, len(recs))], size=256)
    reps = -(-n // len(imgs))
    return np.ascontiguousarray(np.concatenate([imgs] * reps)[:n, 16:240, 16:240])


# ---- children: one configuration each -----------------------------------------------------------
def run_embedder(name: str, device: str, batch: int, repeats: int) -> dict[str, Any]:
    from geosearch import load_embedder
    from geosearch.plugins.cpu import runtime_info

    options = {**EMBEDDERS[name], "device": device}
    t0 = time.perf_counter()
    emb = load_embedder(None, batch_size=batch, **options)
    load_s = time.perf_counter() - t0
    images = _images(batch)
    rate = C.median_rate(lambda: emb.encode_images(images), batch, repeats)
    emb.encode_texts(QUERIES[:1])
    lat = []
    for _ in range(max(3, repeats) * 4):
        for q in QUERIES:
            t1 = time.perf_counter()
            emb.encode_texts([q])
            lat.append(time.perf_counter() - t1)
    info = runtime_info(emb)
    peak_mb = C.mb(C.peak_rss_bytes(), None)  # before the reference models of the accuracy gate load
    cos = _min_cosines_to_fp32(images, options, device)
    return {
        "what": f"embedder {name}",
        "model": emb.model_id,
        "images_per_s": round(rate, 1),
        "text_query_ms_p50": C.latency_summary(lat)["p50_ms"],
        "min_cosine_to_fp32": cos["towers"],
        "min_cosine_to_fp32_memory": cos["memory"],
        "load_s": round(load_s, 2),
        "peak_rss_mb": peak_mb,
        "runtime": info,
        "env": {k: os.environ[k] for k in AVX2_ENV if k in os.environ},
    }


def _min_cosines_to_fp32(images: Any, options: dict[str, Any], device: str) -> dict[str, float]:
    """Accuracy gate against the torch fp32 reference, per image: the towers (memory off) and the
    stored vectors (memory on, whose top-k neighbour choice can amplify a small tower difference)."""
    import numpy as np

    from geosearch import load_embedder

    cos = {}
    for memory in (False, True):
        ref = load_embedder(None, runtime="torch", precision="fp32", device=device, memory=memory)
        same = load_embedder(None, memory=memory, **options)
        cos["memory" if memory else "towers"] = round(
            float(np.min(np.sum(ref.encode_images(images) * same.encode_images(images), axis=1))), 4
        )
    return cos


def run_towers_ab(threads: int, batch: int, repeats: int) -> dict[str, Any]:
    """The image tower alone, ONNX Runtime fp32 / int8 vs torch fp32 / bf16, interleaved in one process.

    On a shared machine the rows above run minutes apart under different load; alternating the four
    in the same process is the fair comparison (medians of `repeats` rounds, after a warm-up).
    """
    import numpy as np
    import torch

    from geosearch.plugins import lite_clip, onnx_runtime
    from geosearch.plugins.cpu import cpu_info

    model: Any = lite_clip.build_model()
    trunk = model.visual.trunk.eval().to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32))
    xc, xn = x.contiguous(memory_format=torch.channels_last), x.numpy()
    fp32 = onnx_runtime.session(onnx_runtime.image_tower(model, 224), threads)
    int8 = onnx_runtime.session(onnx_runtime.int8_image_tower(model, 224), threads)

    def torch_run(bf16: bool) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            trunk(xc)

    runs = {
        "onnx-fp32": lambda: fp32.run(None, {"pixels": xn}),
        "onnx-int8": lambda: int8.run(None, {"pixels": xn}),
        "torch-fp32": lambda: torch_run(False),
        "torch-bf16": lambda: torch_run(True),
    }
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(max(3, repeats)):
        for name, fn in runs.items():
            rates[name].append(batch / C.time_runs(fn, 1)[0])
    return {
        "what": f"image tower A/B (interleaved, {threads} threads)",
        "images_per_s": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "runtime": {**cpu_info(), "threads": threads},
    }


def run_captioner(spec: str, device: str, batch: int, repeats: int) -> dict[str, Any]:
    from geosearch import load_captioner, load_embedder
    from geosearch.plugins.cpu import runtime_info

    t0 = time.perf_counter()
    emb = load_embedder(None, device=device)
    cap = load_captioner(spec, embedder=emb)
    load_s = time.perf_counter() - t0
    images = _images(batch)
    rate = C.median_rate(lambda: cap.caption(images), batch, repeats)
    return {
        "what": f"captioner {spec}",
        "model": cap.model_id,
        "captions_per_s": round(rate, 2),
        "example": cap.caption(images[:1])[0],
        "load_s": round(load_s, 2),
        "peak_rss_mb": C.mb(C.peak_rss_bytes(), None),
        "runtime": runtime_info(emb),
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration ("towers:ab", "embedder:NAME", "captioner:SPEC") in this fresh process."""
    import torch

    torch.set_num_threads(spec["threads"])
    kind, _, name = spec["config"].partition(":")
    if kind == "towers":
        result = run_towers_ab(spec["threads"], spec["batch"], spec["repeats"])
    elif kind == "embedder":
        result = run_embedder(name, spec["device"], spec["batch"], spec["repeats"])
    else:
        result = run_captioner(name, spec["device"], spec["batch"], max(1, spec["repeats"] // 2))
    result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)  # the machine may be shared: how busy it was
    return result


# ---- driver -------------------------------------------------------------------------------------
def run_config(cfg: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One configuration in a child process (an ``avx2:`` prefix caps the CPU kernels); its row, or
    its error: a failed configuration does not stop the others."""
    avx2 = cfg.startswith("avx2:")
    spec = {
        "config": cfg.removeprefix("avx2:"),
        "threads": args.threads,
        "device": args.device,
        "batch": args.batch,
        "repeats": args.repeats,
    }
    env = {**os.environ, **(AVX2_ENV if avx2 else {})}
    try:
        row = C.run_child(__file__, "config", spec, work, env=env, capture=True)
    except subprocess.CalledProcessError as e:
        print(f"{cfg} failed:\n{e.stderr[-2000:]}", file=sys.stderr)
        return {"what": cfg, "error": e.stderr.strip().splitlines()[-1:]}
    row["date"] = C.now_iso()
    if avx2:
        row["what"] = f"{row['what']} (AVX2 env)"
        if row.get("runtime", {}).get("runtime") == "onnx":
            row["note"] = "ONNX Runtime ignores the AVX2 variables: it used every instruction of this CPU"
    return row


def print_rows(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("configuration", "<34"), ("cap", ">8"), ("prec", ">6"), ("items/s", ">9"), ("query ms", ">10"),
        ("cos", ">8"), ("cos+mem", ">8"), ("load s", ">8"),
    ]  # fmt: skip
    lines: list[list[Any] | str] = []
    for r in rows:
        rt = r.get("runtime", {})
        rate = r.get("images_per_s", r.get("captions_per_s"))
        if "error" in r:
            lines.append(f"{r['what']:<34} failed: {r['error']}")
        elif isinstance(rate, dict):  # the interleaved A/B row
            lines.append(
                f"{r['what']:<34}{rt.get('capability', ''):>8}  " + ", ".join(f"{k} {v}" for k, v in rate.items())
            )
        else:
            lines.append(
                [
                    r["what"], rt.get("capability", ""), rt.get("image_precision", "") or "", rate,
                    r.get("text_query_ms_p50", ""), r.get("min_cosine_to_fp32", ""),
                    r.get("min_cosine_to_fp32_memory", ""), r["load_s"],
                ]
            )  # fmt: skip
    C.print_table(columns, lines, sep="")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated, e.g. embedder:onnx-fp32")
    p.add_argument("--embedders-only", action="store_true", help="skip the captioner rows")
    p.add_argument("--out", type=Path, default=C.RESULTS / "models.json")
    args = p.parse_args()
    configs = [c for c in args.configs.split(",") if c and not (args.embedders_only and c.startswith("captioner"))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="geosearch-models-bench-") as work:
        for cfg in configs:
            rows.append(run_config(cfg, args, Path(work)))
            if "error" not in rows[-1]:
                print(json.dumps(rows[-1]), flush=True)
    print()
    print_rows(rows)
    # Rows not rerun this time (e.g. captioners after --embedders-only) are kept, each with its own date.
    if args.out.is_file():
        done = {r["what"] for r in rows}
        rows += [r for r in json.loads(args.out.read_text()).get("rows", []) if r.get("what") not in done]
    result = {
        "benchmark": "models",
        "date": C.now_iso(),
        "machine": {**C.machine(), "threads": args.threads, "device": args.device},
        "batch": args.batch,
        "repeats": args.repeats,
        "rows": rows,
    }
    C.write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    C.child_entry({"config": child})
    main()
