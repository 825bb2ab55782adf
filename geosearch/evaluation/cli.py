"""`geosearch eval`: retrieval, zero-shot and captioning metrics on any Karpathy-format dataset.

UCM-Captions and AID + RSICD (../shared/data) are the two the project reports, comparable to the
literature. Zero-shot scene classification runs where the images carry a class.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from geosearch.errors import GeoSearchError
from geosearch.evaluation.captions import CAPTION_KEYS
from geosearch.evaluation.run import run_evaluation

PUBLISHED = {
    # UCM-Captions test: BLEU-4, METEOR, ROUGE-L, CIDEr as reported by the papers.
    "MLCA-Net": (0.668, 0.435, 0.772, 3.240),
    "RSGPT": (0.657, 0.422, 0.783, 3.332),
    "SkyEyeGPT": (0.784, 0.462, 0.795, 2.368),
}


def _num(v: float | None, pct: bool = False) -> str:
    return "-" if v is None else (f"{v:6.2f}" if pct else f"{v:6.3f}")


def format_report(result: dict[str, Any]) -> str:
    """A readable table of one `run_evaluation` result (next to the published numbers on UCM)."""
    r = result["retrieval"]
    m = result["model"]
    lines = [
        f"{result.get('dataset', 'dataset')} {result.get('split', '')}, {result['n_images']} images; "
        f"embedder {m['embedder']}",
        "retrieval (%)  R@1    R@5    R@10",
        "  text->image " + " ".join(_num(r["t2i"][k], True) for k in ("R@1", "R@5", "R@10")),
        "  image->text " + " ".join(_num(r["i2t"][k], True) for k in ("R@1", "R@5", "R@10")),
        f"  mR (t2i) {_num(r['mR'], True)}   mR (both ways) {_num(r.get('mR6'), True)}",
        *(
            [
                f"zero-shot scene classification {result['zero_shot']['accuracy']:.2f} % "
                f"({result['zero_shot']['n_classes']} classes)"
            ]
            if result.get("zero_shot")
            else []
        ),
        "",
        f"{'captioning':<28}" + "".join(f"{k:>8}" for k in CAPTION_KEYS),
    ]
    for label, key in ((m["captioner"], "captioning"), (m["fast_captioner"], "captioning_fast")):
        if label is None:
            continue
        lines.append(f"{label:<28}" + "".join(f"{_num(result[key][k]):>8}" for k in CAPTION_KEYS))
    published = PUBLISHED if result.get("dataset") == "ucm-captions" else {}
    if published:
        lines.append("published (UCM test)         BLEU-4 METEOR ROUGE-L CIDEr")
    for name, (b4, me, rl, ci) in published.items():
        lines.append(f"  {name:<26} {b4:.3f}  {me:.3f}  {rl:.3f}  {ci:.3f}")
    if m.get("caption_tokenizer") != "ptb":
        lines.append("(Java not found: simple tokenizer used, METEOR not computed)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: `geosearch eval --dataset PATH [--split test] [--limit N] [--json]`."""
    parser = argparse.ArgumentParser(prog="geosearch eval", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", required=True, type=Path, help="Karpathy-format dataset folder (captions.json, images/)"
    )
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default=None, help="embedder spec (default: lite-clip)")
    parser.add_argument("--captioner", default=None, help="captioner spec (default: lite-capret)")
    parser.add_argument("--model-runtime", choices=("onnx", "torch", "auto"), default=None, help="embedder runtime")
    parser.add_argument("--fast-captioner", default="nearest-caption", help="second captioner scored ('' to skip)")
    args = parser.parse_args(argv)
    try:
        result = run_evaluation(
            args.dataset,
            args.split,
            limit=args.limit,
            embedder=args.model,
            captioner=args.captioner,
            fast_captioner=args.fast_captioner or None,
            model_runtime=args.model_runtime,
        )
    except GeoSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result))
    return 0
