"""Which source bands become R, G, B (pure: works on band counts and colour interpretations)."""

from __future__ import annotations

from collections.abc import Sequence

from geosearch.errors import InvalidInput


def auto_bands(colorinterp: Sequence[str], count: int) -> tuple[int, int, int]:
    """RGB from colour interpretation, else the first three bands, else the first band as grey.

    A 2-band scene (grey + alpha, or two physical variables such as rio-tiler's int16
    `cog_scale`) has no sensible colour mapping, so its FIRST band is replicated to grey; the
    second band still masks pixels when it is an alpha band. RGBA and RGB+NIR take the RGB bands.
    """
    names = [c.lower() for c in colorinterp]
    if all(c in names for c in ("red", "green", "blue")):
        return names.index("red") + 1, names.index("green") + 1, names.index("blue") + 1
    data = [i + 1 for i, c in enumerate(names) if c != "alpha"] or list(range(1, count + 1))
    if len(data) >= 3:
        return data[0], data[1], data[2]
    return data[0], data[0], data[0]


def resolve_bands(
    requested: tuple[int, ...] | None, colorinterp: Sequence[str], count: int, path: str
) -> tuple[int, int, int]:
    """Explicit bands (validated against the scene) or the automatic choice; one band means grey."""
    if requested is None:
        return auto_bands(colorinterp, count)
    bad = [b for b in requested if not 1 <= b <= count]
    if bad:
        raise InvalidInput(
            f"bands={tuple(requested)} asks for band {bad[0]} but {path} has only {count} band"
            f"{'s' if count != 1 else ''} (bands are 1-based)"
        )
    if len(requested) == 1:
        return requested[0], requested[0], requested[0]
    return requested[0], requested[1], requested[2]
