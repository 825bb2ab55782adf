"""Imagery tile pixels -> RGBA PNG with the band selection and stretch of ingest. Pure numpy + Pillow.

The rules are `tilers.reader.read_window`'s, so a tile and a chip of the same ground look the same:
uint8 scenes without a stretch are shown as is; anything else is scale/offset-corrected to physical
values and mapped linearly from the scene's per-band [low, high] to 0..255. A pixel is valid when
any of the bands read is (GDAL dataset-mask semantics) and, for float data, all are finite; invalid
pixels are black and fully transparent, valid ones opaque.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from geosearch.errors import SceneError
from geosearch.tilers.stretch import apply_stretch, to_physical


def to_rgba(
    data: NDArray[np.generic],
    valid: NDArray[np.bool_],
    pick: Sequence[int],
    scales: Sequence[float],
    offsets: Sequence[float],
    stretch: Sequence[Sequence[float]] | None,
) -> NDArray[np.uint8]:
    """(H, W, 4) uint8 RGBA from raw band data.

    Args:
        data: (bands, H, W) raw values of the distinct bands read.
        valid: (H, W) the read's validity mask.
        pick: for R, G, B, the index into `data` (three entries).
        scales, offsets: per band of `data`, GDAL semantics (physical = raw * scale + offset).
        stretch: per R, G, B band [low, high] in physical units; None only for uint8 data.

    Raises:
        SceneError: non-uint8 data without a stretch, or `pick` not three bands of `data`.
    """
    if len(pick) != 3 or not all(0 <= i < data.shape[0] for i in pick):
        raise SceneError(f"band pick {list(pick)} does not select 3 of the {data.shape[0]} bands read")
    rgb_raw = data[list(pick)]
    ok = valid.astype(bool, copy=True)
    if data.dtype.kind == "f":
        ok &= np.all(np.isfinite(data), axis=0)
    if data.dtype == np.uint8 and stretch is None:
        rgb = rgb_raw.astype(np.uint8)
    elif stretch is None:
        raise SceneError(f"{data.dtype} pixels need a stretch to render, but the scene has none")
    else:
        picked_scales = [scales[i] or 1.0 for i in pick]
        picked_offsets = [offsets[i] or 0.0 for i in pick]
        rgb = apply_stretch(to_physical(rgb_raw, picked_scales, picked_offsets), stretch)
    out = np.zeros((*ok.shape, 4), dtype=np.uint8)
    out[..., :3] = np.where(ok[..., None], np.moveaxis(rgb, 0, -1), 0)
    out[..., 3] = np.where(ok, 255, 0)
    return out


def encode_png(rgba: NDArray[np.uint8]) -> bytes:
    """PNG bytes of an (H, W, 4) uint8 RGBA image."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buffer, format="PNG")
    return buffer.getvalue()
