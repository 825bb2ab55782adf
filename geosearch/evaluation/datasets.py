"""Karpathy-format caption datasets (UCM-Captions, AID + RSICD, ...): read by `geosearch eval` and by training.

A dataset folder holds ``captions.json`` (``images[].filename``, ``.split``, ``.sentences[].raw``,
optionally ``.class``) and ``images/``. UCM-Captions keeps its class names in a side CSV
(``ucm_captions_to_ucmerced_map.csv``), which is read when present.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

SPLITS = ("train", "val", "test")

CLASS_NAMES: dict[str, str] = {
    # Spoken names of the dataset class ids, used for class-name captions and zero-shot prompts.
    "agricultural": "farmland",
    "airplane": "airplanes",
    "bareland": "bare land",
    "baseballdiamond": "baseball diamond",
    "baseballfield": "baseball field",
    "center": "city center",
    "chaparral": "chaparral",
    "commercial": "commercial area",
    "denseresidential": "dense residential area",
    "golfcourse": "golf course",
    "industrial": "industrial area",
    "mediumresidential": "medium residential area",
    "mobilehomepark": "mobile home park",
    "parking": "parking lot",
    "parkinglot": "parking lot",
    "railwaystation": "railway station",
    "sparseresidential": "sparse residential area",
    "square": "public square",
    "storagetanks": "storage tanks",
    "tenniscourt": "tennis court",
}


def class_phrase(class_id: str) -> str:
    """Readable name of a class id: the table above, else the id with '_'/'-' as spaces."""
    return CLASS_NAMES.get(class_id, re.sub(r"[_\-]+", " ", class_id).strip())


@dataclass(frozen=True)
class CaptionRecord:
    """One image with its reference captions (record order of captions.json is preserved)."""

    index: int
    """Position in captions.json `images[]`."""
    image_path: Path
    split: str
    class_name: str
    """Dataset class id ('' when the dataset has none)."""
    captions: tuple[str, ...]


def load_records(root: str | Path, split: str | None = None) -> list[CaptionRecord]:
    """Read captions.json (+ UCM's class map); `split=None` returns all records in file order.

    Empty reference sentences (RSICD has a few) are dropped; an image keeps at least one.
    """
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
    records: list[CaptionRecord] = []
    for i, img in enumerate(meta["images"]):
        if split is not None and img["split"] != split:
            continue
        name = str(img["filename"])
        jpg = root / "images" / name
        if not jpg.is_file():
            jpg = root / "images" / (Path(name).stem + ".jpg")
        captions = tuple(c for c in (str(s["raw"]).strip() for s in img["sentences"]) if c)
        records.append(
            CaptionRecord(
                index=i,
                image_path=jpg,
                split=str(img["split"]),
                class_name=str(img.get("class") or classes.get(name, "")),
                captions=captions or (class_phrase(str(img.get("class") or "")),),
            )
        )
    return records


def flatten_captions(records: list[CaptionRecord]) -> tuple[list[str], NDArray[np.int64]]:
    """All captions of `records` in order, plus each caption's image row (`txt_to_img`)."""
    texts: list[str] = []
    owner: list[int] = []
    for row, rec in enumerate(records):
        texts.extend(rec.captions)
        owner.extend([row] * len(rec.captions))
    return texts, np.asarray(owner, dtype=np.int64)


def load_image(path: Path, size: int | None = None) -> NDArray[np.uint8]:
    """One RGB image as uint8 (H, W, 3), resized to size x size when given: PIL's bilinear filter scales
    its support with the factor (antialiased), like the torch resize training features are made with."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb)


def load_images(records: list[CaptionRecord], size: int = 224) -> NDArray[np.uint8]:
    """Decode images as uint8 (N, size, size, 3) RGB (datasets mix sizes: 150, 256, a few smaller)."""
    out = np.empty((len(records), size, size, 3), dtype=np.uint8)
    for i, rec in enumerate(records):
        out[i] = load_image(rec.image_path, size)
    return out
