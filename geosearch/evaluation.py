"""`geosearch eval`: retrieval, zero-shot and captioning metrics on any Karpathy-format dataset.

UCM-Captions and AID + RSICD (../shared/data) are the two the project reports, comparable to the
literature. Zero-shot scene classification runs where the images carry a class.

Retrieval is scored by `geosearch.training.retrieval.retrieval_metrics` (recall in percent), captions
by pycocoevalcap (BLEU-1..4, METEOR, ROUGE-L, CIDEr) against each image's 5 reference captions, in
the COCO-caption conventions the published UCM numbers use: PTB tokenisation (Java) when Java is
available, otherwise a lowercase/punctuation-stripping tokenizer and METEOR = null (it needs Java).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geosearch.errors import GeoSearchError, InvalidInput

CAPTION_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
PUBLISHED = {
    # UCM-Captions test: BLEU-4, METEOR, ROUGE-L, CIDEr as reported by the papers.
    "MLCA-Net": (0.668, 0.435, 0.772, 3.240),
    "RSGPT": (0.657, 0.422, 0.783, 3.332),
    "SkyEyeGPT": (0.784, 0.462, 0.795, 2.368),
}
FULL_CAPTIONER = "lite-capret"
_PUNCT = re.compile(r"[^a-z0-9 ]+")


def java_available() -> bool:
    """METEOR and the PTB tokenizer are Java programs shipped inside pycocoevalcap."""
    return shutil.which("java") is not None


def simple_tokenize(text: str) -> str:
    """Lowercase, drop punctuation, collapse spaces (what PTBTokenizer + its punctuation filter do)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def caption_metrics(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], *, use_java: bool | None = None
) -> dict[str, float | None]:
    """COCO caption metrics of one hypothesis per image against that image's references.

    pycocoevalcap prints progress to stdout; it is redirected to stderr so `--json` stays clean.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(references) != len(hypotheses):
        raise ValueError("one hypothesis per image is required")
    if not hypotheses:
        return dict.fromkeys(CAPTION_KEYS)
    java = java_available() if use_java is None else use_java
    gts: dict[int, list[str]]
    res: dict[int, list[str]]
    with contextlib.redirect_stdout(sys.stderr):
        if java:
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

            tok = PTBTokenizer()
            gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
            res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hypotheses)})
        else:
            gts = {i: [simple_tokenize(r) for r in refs] for i, refs in enumerate(references)}
            res = {i: [simple_tokenize(h)] for i, h in enumerate(hypotheses)}
        # An empty hypothesis would crash the scorers; score it as a 1-token miss instead.
        res = {i: [h[0] if h and h[0] else "a"] for i, h in res.items()}
        bleu, _ = Bleu(4).compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        meteor: float | None = None
        if java:
            from pycocoevalcap.meteor.meteor import Meteor

            scorer = Meteor()
            try:
                meteor = float(scorer.compute_score(gts, res)[0])
            finally:
                with contextlib.suppress(Exception):
                    scorer.close()
    out: dict[str, float | None] = {f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)}
    out.update({"METEOR": meteor, "ROUGE-L": float(rouge), "CIDEr": float(cider)})
    return out


def _caption_all(captioner: Any, images: np.ndarray[Any, Any], batch: int = 32) -> list[str]:
    out: list[str] = []
    for i in range(0, len(images), batch):
        out.extend(captioner.caption(images[i : i + batch]))
    return out


def run_evaluation(
    dataset: Path,
    split: str = "test",
    *,
    limit: int | None = None,
    embedder: str | None = None,
    captioner: str | None = None,
    fast_captioner: str | None = "nearest-caption",
    model_runtime: str | None = None,
) -> dict[str, Any]:
    """Retrieval (t2i/i2t R@1/5/10, mR) and captioning metrics for both captioner modes.

    ``captioner`` None means the full captioner (lite-capret) whatever the ingest default is, so both
    modes are always reported; ``fast_captioner`` None skips the fast mode (its metrics are then
    null). Both captioners reuse the one loaded embedder.
    """
    from geosearch.models import load_captioner, load_embedder
    from geosearch.plugins.cpu import runtime_info
    from geosearch.training.data import SPLITS, flatten_captions, load_images, load_records
    from geosearch.training.retrieval import retrieval_metrics, zero_shot_accuracy

    dataset = Path(dataset).expanduser()
    if not (dataset / "captions.json").is_file():
        raise InvalidInput(f"{dataset} is not a Karpathy-format caption dataset (no captions.json)")
    if split not in SPLITS:
        raise InvalidInput(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise InvalidInput("limit must be a positive number of images")
    records = load_records(dataset, split)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise InvalidInput(f"no {split} images in {dataset}")
    try:
        images = load_images(records)
    except OSError as exc:
        raise InvalidInput(f"cannot read the images in {dataset}: {exc}") from exc
    texts, owner = flatten_captions(records)

    emb = load_embedder(embedder, **({"runtime": model_runtime} if model_runtime else {}))
    img_vec = np.asarray(emb.encode_images(images), dtype=np.float32)
    txt_vec = np.asarray(emb.encode_texts(texts), dtype=np.float32)
    ret = retrieval_metrics(img_vec, txt_vec, owner)
    labels = [r.class_name for r in records]
    zero_shot = (
        zero_shot_accuracy(img_vec, labels, emb.encode_texts) if all(labels) else None
    )
    references = [list(r.captions) for r in records]

    cap = load_captioner(captioner or FULL_CAPTIONER, embedder=emb)
    scores = caption_metrics(references, _caption_all(cap, images))
    fast_scores: dict[str, float | None] = dict.fromkeys(CAPTION_KEYS)
    fast_id: str | None = None
    if fast_captioner:
        fast = load_captioner(fast_captioner, embedder=emb)
        fast_id = fast.model_id
        fast_scores = caption_metrics(references, _caption_all(fast, images))
    return {
        "retrieval": {"t2i": ret["t2i"], "i2t": ret["i2t"], "mR": ret["mR"], "mR6": ret["mR6"]},
        "zero_shot": zero_shot,
        "captioning": scores,
        "captioning_fast": fast_scores,
        "model": {
            "embedder": emb.model_id,
            "captioner": cap.model_id,
            "fast_captioner": fast_id,
            "caption_tokenizer": "ptb" if java_available() else "simple",
        },
        "dataset": dataset.name,
        "split": split,
        "n_images": len(records),
        "runtime": runtime_info(emb),  # CPU capability, threads, runtime and precision behind these numbers
    }


def format_report(result: dict[str, Any]) -> str:
    """A readable table of one `run_evaluation` result (next to the published numbers on UCM)."""

    def num(v: float | None, pct: bool = False) -> str:
        return "-" if v is None else (f"{v:6.2f}" if pct else f"{v:6.3f}")

    r = result["retrieval"]
    m = result["model"]
    lines = [
        f"{result.get('dataset', 'dataset')} {result.get('split', '')}, {result['n_images']} images; "
        f"embedder {m['embedder']}",
        "retrieval (%)  R@1    R@5    R@10",
        "  text->image " + " ".join(num(r["t2i"][k], True) for k in ("R@1", "R@5", "R@10")),
        "  image->text " + " ".join(num(r["i2t"][k], True) for k in ("R@1", "R@5", "R@10")),
        f"  mR (t2i) {num(r['mR'], True)}   mR (both ways) {num(r.get('mR6'), True)}",
        *(
            [f"zero-shot scene classification {result['zero_shot']['accuracy']:.2f} % "
             f"({result['zero_shot']['n_classes']} classes)"]
            if result.get("zero_shot")
            else []
        ),
        "",
        f"{'captioning':<28}" + "".join(f"{k:>8}" for k in CAPTION_KEYS),
    ]
    for label, key in ((m["captioner"], "captioning"), (m["fast_captioner"], "captioning_fast")):
        if label is None:
            continue
        lines.append(f"{label:<28}" + "".join(f"{num(result[key][k]):>8}" for k in CAPTION_KEYS))
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
