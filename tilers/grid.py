"""Pure window arithmetic: where chips go along each axis (no I/O, no georeferencing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from geosearch.schemas.chips import Window


def axis_offsets(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis of `size` pixels.

    Starts step by `stride`; when the last regular window stops short of the edge, one more
    window is added flush with the edge (shifted inside, overlapping its neighbour) so edge pixels
    are never dropped. An axis shorter than the window gets a single window at 0 that overhangs
    (the chip is padded).
    """
    if size <= 0 or window <= 0 or stride <= 0:
        raise ValueError(f"size, window and stride must be positive: {size}, {window}, {stride}")
    if size <= window:
        return [0]
    offsets = list(range(0, size - window + 1, stride))
    if offsets[-1] + window < size:
        offsets.append(size - window)
    return offsets


def iter_windows(
    width: int, height: int, win_w: int, win_h: int, stride_x: int, stride_y: int
) -> Iterator[tuple[Window, bool]]:
    """Row-major windows over a `width` x `height` grid, with a flag for windows that overhang."""
    cols = axis_offsets(width, win_w, stride_x)
    padded = win_w > width or win_h > height
    for row in axis_offsets(height, win_h, stride_y):
        for col in cols:
            yield Window(col=col, row=row, width=win_w, height=win_h), padded


def window_count(width: int, height: int, win_w: int, win_h: int, stride_x: int, stride_y: int) -> int:
    return len(axis_offsets(width, win_w, stride_x)) * len(axis_offsets(height, win_h, stride_y))


def scaled(length: float, factor: float) -> int:
    """Native pixels covered by `length` chip pixels at `factor` native px per chip px (at least 1)."""
    return max(1, round(length * factor))


class ChipGrid(NamedTuple):
    """One scale's chip grid: native pixels per chip and per step (x, y), and the chips' metres per pixel."""

    window: tuple[int, int]
    stride: tuple[int, int]
    gsd: float


def chip_grid(chip_size: int, stride: int, res: tuple[float, float], factor: tuple[float, float]) -> ChipGrid:
    """The grid of `chip_size` chips at `factor` native px per chip px, on native pixels of `res` metres.

    The gsd is what the rounded window really gives, not the requested factor times `res`.
    """
    window = (scaled(chip_size, factor[0]), scaled(chip_size, factor[1]))
    step = (scaled(stride, factor[0]), scaled(stride, factor[1]))
    gsd = (res[0] * window[0] + res[1] * window[1]) / (2.0 * chip_size)
    return ChipGrid(window, step, gsd)
