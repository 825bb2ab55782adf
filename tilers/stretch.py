"""Per-scene contrast stretch to uint8 (pure numpy).

The stretch is computed once per scene from a decimated sample, so neighbouring chips share it
and seams between them vanish; it is stored in physical units (after scale/offset) so a stored
payload re-renders identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

LOW_PCT = 2.0
HIGH_PCT = 98.0


def to_physical(
    raw: NDArray[np.generic], scales: Sequence[float], offsets: Sequence[float]
) -> NDArray[np.float64]:
    """Apply per-band scale/offset (GDAL semantics: physical = raw * scale + offset), band axis first."""
    out = raw.astype(np.float64)
    s = np.asarray(scales, dtype=np.float64).reshape(-1, 1, 1)
    o = np.asarray(offsets, dtype=np.float64).reshape(-1, 1, 1)
    return out * s + o


def percentile_stretch(
    raw: NDArray[np.generic],
    valid: NDArray[np.bool_],
    scales: Sequence[float],
    offsets: Sequence[float],
    fallback: tuple[float, float],
) -> list[list[float]]:
    """Per-band [low, high] at the 2nd/98th percentile of valid pixels, in physical units.

    Works band by band on the valid pixels only, so the sample costs a few float64 copies of
    one band; `fallback` is used for a band without a single valid finite pixel.
    """
    result: list[list[float]] = []
    for band, scale, offset in zip(raw, scales, offsets, strict=True):
        values = band[valid].astype(np.float64) * scale + offset
        values = values[np.isfinite(values)]
        if values.size == 0:
            low, high = fallback
        else:
            low, high = (float(v) for v in np.percentile(values, [LOW_PCT, HIGH_PCT]))
        if not high > low:
            high = low + 1.0
        result.append([low, high])
    return result


def apply_stretch(physical: NDArray[np.float64], stretch: Sequence[Sequence[float]]) -> NDArray[np.uint8]:
    """Linear map of [low, high] -> [0, 255] per band, clipped and rounded (NaN -> 0)."""
    lows = np.array([s[0] for s in stretch], dtype=np.float64).reshape(-1, 1, 1)
    highs = np.array([s[1] for s in stretch], dtype=np.float64).reshape(-1, 1, 1)
    scaled = (physical - lows) * (255.0 / (highs - lows))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
