"""Caption metrics: pycocoevalcap's BLEU-1..4, METEOR, ROUGE-L and CIDEr against each image's references.

The COCO-caption conventions the published UCM numbers use: PTB tokenisation (Java) when Java is
available, otherwise a lowercase/punctuation-stripping tokenizer and METEOR = null (it needs Java).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
from collections.abc import Sequence

from geosearch.errors import GeoSearchError

CAPTION_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_PUNCT = re.compile(r"[^a-z0-9 ]+")
EVAL_INSTALL_HINT = "pip install 'geosearch[eval]'"


def java_available() -> bool:
    """METEOR and the PTB tokenizer are Java programs shipped inside pycocoevalcap."""
    return shutil.which("java") is not None


def simple_tokenize(text: str) -> str:
    """Lowercase, drop punctuation, collapse spaces (what PTBTokenizer + its punctuation filter do)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _tokenize(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], java: bool
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """(references, hypotheses) keyed by image, tokenised; an empty hypothesis becomes the 1-token miss 'a'
    (the scorers crash on empty strings)."""
    gts: dict[int, list[str]]
    res: dict[int, list[str]]
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
        res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hypotheses)})
    else:
        gts = {i: [simple_tokenize(r) for r in refs] for i, refs in enumerate(references)}
        res = {i: [simple_tokenize(h)] for i, h in enumerate(hypotheses)}
    return gts, {i: [h[0] if h and h[0] else "a"] for i, h in res.items()}


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    finally:
        with contextlib.suppress(Exception):
            scorer.close()


def caption_metrics(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], *, use_java: bool | None = None
) -> dict[str, float | None]:
    """COCO caption metrics of one hypothesis per image against that image's references.

    ``use_java`` None uses Java when it is installed; False gives the same numbers on every machine
    (simple tokenizer, METEOR null). pycocoevalcap prints progress to stdout; it is redirected to
    stderr so `--json` stays clean.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as e:
        raise GeoSearchError(f"caption metrics need pycocoevalcap: {EVAL_INSTALL_HINT}") from e

    if len(references) != len(hypotheses):
        raise ValueError("one hypothesis per image is required")
    if not hypotheses:
        return dict.fromkeys(CAPTION_KEYS)
    java = java_available() if use_java is None else use_java
    with contextlib.redirect_stdout(sys.stderr):
        gts, res = _tokenize(references, hypotheses, java)
        bleu, _ = Bleu(4).compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        meteor = _meteor(gts, res) if java else None
    out: dict[str, float | None] = {f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)}
    out.update({"METEOR": meteor, "ROUGE-L": float(rouge), "CIDEr": float(cider)})
    return out
