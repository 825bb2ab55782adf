"""UCM-Captions loading shared by the embedder and captioner training/evaluation code.

Kept small and stable on purpose: other modules import `load_ucm` and `UcmRecord`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class UcmRecord:
    """One UCM-Captions image with its captions (Karpathy record order is preserved)."""

    index: int
    """Position in captions.json `images[]`."""
    image_path: Path
    split: str
    class_name: str
    captions: tuple[str, ...]


def load_ucm(root: str | Path, split: str | None = None) -> list[UcmRecord]:
    """Read captions.json (+ the class map); `split=None` returns all records in file order."""
    root = Path(root)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    meta = json.loads((root / "captions.json").read_text())
    classes: dict[str, str] = {}
    class_csv = root / "ucm_captions_to_ucmerced_map.csv"
    if class_csv.is_file():
        with class_csv.open(newline="") as fh:
            for row in csv.DictReader(fh):
                classes[row["caption_filename"]] = row["class"]
    records: list[UcmRecord] = []
    for i, img in enumerate(meta["images"]):
        if split is not None and img["split"] != split:
            continue
        name = str(img["filename"])
        records.append(
            UcmRecord(
                index=i,
                image_path=root / "images" / (Path(name).stem + ".jpg"),
                split=str(img["split"]),
                class_name=classes.get(name, ""),
                captions=tuple(str(s["raw"]).strip() for s in img["sentences"]),
            )
        )
    return records


def flatten_captions(records: list[UcmRecord]) -> tuple[list[str], NDArray[np.int64]]:
    """All captions of `records` in order, plus each caption's image row (`txt_to_img`)."""
    texts: list[str] = []
    owner: list[int] = []
    for row, rec in enumerate(records):
        texts.extend(rec.captions)
        owner.extend([row] * len(rec.captions))
    return texts, np.asarray(owner, dtype=np.int64)


def load_images(records: list[UcmRecord], size: int = 224) -> NDArray[np.uint8]:
    """Decode images as uint8 (N, size, size, 3) RGB; a few originals are < 256 px, so resize all."""
    from PIL import Image

    out = np.empty((len(records), size, size, 3), dtype=np.uint8)
    for i, rec in enumerate(records):
        with Image.open(rec.image_path) as im:
            rgb = im.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
            out[i] = np.asarray(rgb)
    return out
