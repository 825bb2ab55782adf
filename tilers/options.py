"""Tiling options and the two chip records (bounds-only `ChipSpec`, pixel-holding `Chip`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geosearch.errors import InvalidInput
from geosearch.schemas.chips import Window

TILER_VERSION = 1
"""Bumped whenever the pixels a given file + options produce change, so old ingests are redone."""

MAX_CHIP_SIZE = 4096


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class TileOptions:
    """How a scene is cut into chips; validated eagerly so a bad CLI flag fails before any I/O.

    `stride` is in output chip pixels (like `chip_size`), so overlap means the same thing at any
    target GSD. `bands` are 1-based source bands for R, G, B; a single band is replicated to grey.
    `scales` are factors over the base GSD (`gsd`, or the scene's own): each scene is chipped once
    per factor, so objects from a car park to a whole lake fit in some chip.
    """

    chip_size: int = 224
    stride: int | None = None
    bands: tuple[int, ...] | None = None
    gsd: float | None = None
    min_valid: float = 0.5
    scales: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if not _is_int(self.chip_size) or not 1 <= self.chip_size <= MAX_CHIP_SIZE:
            raise InvalidInput(f"chip_size must be an integer in 1..{MAX_CHIP_SIZE}, got {self.chip_size!r}")
        if self.stride is not None and (not _is_int(self.stride) or not 1 <= self.stride <= self.chip_size):
            raise InvalidInput(
                f"stride must be an integer in 1..chip_size ({self.chip_size}) so no ground is skipped, "
                f"got {self.stride!r}"
            )
        if self.bands is not None:
            if not isinstance(self.bands, tuple) or len(self.bands) not in (1, 3):
                raise InvalidInput(f"bands must be a tuple of 1 or 3 band numbers (R,G,B), got {self.bands!r}")
            if not all(_is_int(b) and b >= 1 for b in self.bands):
                raise InvalidInput(f"bands are 1-based positive integers, got {self.bands!r}")
        if self.gsd is not None and (
            isinstance(self.gsd, bool)
            or not isinstance(self.gsd, int | float)
            or not math.isfinite(self.gsd)
            or self.gsd <= 0
        ):
            raise InvalidInput(f"gsd must be a positive number of metres per pixel, got {self.gsd!r}")
        if (
            isinstance(self.min_valid, bool)
            or not isinstance(self.min_valid, int | float)
            or not 0.0 <= self.min_valid <= 1.0
        ):
            raise InvalidInput(f"min_valid must be a fraction in 0..1, got {self.min_valid!r}")
        if (
            not isinstance(self.scales, tuple)
            or not self.scales
            or not all(_is_int(s) and s >= 1 for s in self.scales)
            or len(set(self.scales)) != len(self.scales)
        ):
            raise InvalidInput(
                f"scales must be distinct integer factors >= 1 over the base GSD (e.g. 1,4), got {self.scales!r}"
            )
        # Canonical order, so (4, 1) and (1, 4) are the same options, chip parameters and chip order.
        object.__setattr__(self, "scales", tuple(sorted(int(s) for s in self.scales)))

    @property
    def effective_stride(self) -> int:
        return self.chip_size if self.stride is None else int(self.stride)

    def chip_params(self) -> dict[str, object]:
        """JSON-able fingerprint of the chips: a scene ingested with equal parameters (and file hash) need
        not be redone.

        `scales` is left out at its default (1,) so scenes recorded before multi-scale chips still match.
        """
        params: dict[str, object] = {
            "tiler_version": TILER_VERSION,
            "chip_size": int(self.chip_size),
            "stride": self.effective_stride,
            "bands": None if self.bands is None else [int(b) for b in self.bands],
            "gsd": None if self.gsd is None else float(self.gsd),
            "min_valid": float(self.min_valid),
        }
        if self.scales != (1,):
            params["scales"] = list(self.scales)
        return params


@dataclass(frozen=True)
class ChipSpec:
    """Where a chip is, in native full-resolution pixels; no pixels, so a whole scene's specs are cheap.

    `window` only extends past the scene edge when the scene is smaller than a window in that
    dimension; then `padded` is True and the pad is black and counted invalid.
    """

    window: Window
    padded: bool = False
    scale: int = 1
    """The factor over the base GSD this chip was cut at (one of `TileOptions.scales`)."""


@dataclass
class Chip:
    """A chip read from its scene: RGB uint8 pixels (invalid pixels black) and its valid fraction."""

    spec: ChipSpec
    pixels: NDArray[np.uint8]
    valid_fraction: float
