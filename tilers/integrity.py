"""File-level checks before GDAL reads a scene: what its bytes really are, and whether a TIFF is complete.

`file_kind` names a file's format from its first bytes (magic numbers), so a PNG renamed `.tif`
is reported as PNG data rather than as an image "without a geotransform". `tiff_problem` walks a
TIFF's (or BigTIFF's) chain of image directories (IFDs, overviews and masks included) and checks
that every directory and every strip or tile of pixels lies inside the file: a download or copy
cut short is refused when the scene is opened, before a single chip is read, instead of failing
halfway through with half of its chips written. Only the directories and the strip/tile offset
tables are read (a few bytes per block), never pixels.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

import numpy as np

TIFF_KINDS = ("TIFF", "BigTIFF")

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"CDF\x01", "netCDF"),
    (b"CDF\x02", "netCDF"),
    (b"RIFF", "RIFF/WebP"),
)

_TYPE_SIZES = {3: 2, 4: 4, 13: 4, 16: 8, 18: 8}
"""TIFF field types an offset or byte-count table may use: SHORT, LONG, IFD, LONG8, IFD8."""

_TYPE_CODES = {3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}

_STRIP_OFFSETS, _STRIP_BYTE_COUNTS, _TILE_OFFSETS, _TILE_BYTE_COUNTS = 273, 279, 324, 325

MAX_DIRECTORIES = 10_000
"""More image directories than this in one file is treated as corrupt (a loop or garbage)."""


def file_kind(path: str) -> str | None:
    """The format the file's first bytes announce ("TIFF", "PNG", "JPEG", ...), None when unknown or empty."""
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
        if head and len(head) < len(magic) and kind in TIFF_KINDS and magic.startswith(head):
            return kind  # a TIFF cut inside its magic number
    text = head.lstrip()
    if text.startswith(b"<"):
        return "XML/HTML text"
    if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "plain text"
    return None


def tiff_problem(path: str) -> str | None:
    """Why a (Big)TIFF is incomplete or corrupt, in words a user understands; None when it is whole.

    Checks the header, that every image directory lies inside the file, and that every strip or
    tile (offset + byte count) ends inside it. Sparse blocks (offset and count 0) are fine.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            return _walk(f, size)
        except _Corrupt as exc:
            return str(exc)


class _Corrupt(Exception):
    pass


def _read(f: BinaryIO, offset: int, length: int, size: int, what: str) -> bytes:
    if offset < 0 or length < 0 or offset + length > size:
        raise _Corrupt(
            f"its {what} (byte {offset:,}, {length:,} bytes long) runs past the end of the file ({size:,} bytes)"
        )
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise _Corrupt(f"its {what} at byte {offset:,} could not be read in full")
    return data


def _walk(f: BinaryIO, size: int) -> str | None:
    if size < 8:
        return f"the file has only {size} bytes, fewer than a TIFF header"
    head = _read(f, 0, 16 if size >= 16 else 8, size, "header")
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        return "it does not start with a TIFF byte-order mark"
    version = struct.unpack(order + "H", head[2:4])[0]
    if version == 42:
        big = False
        (offset,) = struct.unpack(order + "I", head[4:8])
    elif version == 43:
        if size < 16:
            return f"the file has only {size} bytes, fewer than a BigTIFF header"
        big = True
        (offset,) = struct.unpack(order + "Q", head[8:16])
    else:
        return f"its header has an unknown TIFF version {version}"
    if offset == 0:
        return "it has no image directory"
    seen: set[int] = set()
    while offset:
        if offset in seen or len(seen) >= MAX_DIRECTORIES:
            return "its image directories loop or never end"
        seen.add(offset)
        offset = _directory(f, offset, size, order, big)
    return None


def _directory(f: BinaryIO, offset: int, size: int, order: str, big: bool) -> int:
    """Check one image directory and its blocks; return the offset of the next one (0 at the end)."""
    count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size = struct.calcsize(count_fmt)
    (count,) = struct.unpack(order + count_fmt, _read(f, offset, count_size, size, "image directory"))
    next_size = struct.calcsize(next_fmt)
    body = _read(f, offset + count_size, count * entry_size + next_size, size, "image directory")
    tables: dict[int, np.ndarray] = {}
    for i in range(count):
        entry = body[i * entry_size : (i + 1) * entry_size]
        if big:
            tag, typ, n = struct.unpack(order + "HHQ", entry[:12])
            value = entry[12:20]
        else:
            tag, typ, n = struct.unpack(order + "HHI", entry[:8])
            value = entry[8:12]
        if tag not in (_STRIP_OFFSETS, _STRIP_BYTE_COUNTS, _TILE_OFFSETS, _TILE_BYTE_COUNTS):
            continue
        if typ not in _TYPE_SIZES:
            raise _Corrupt(f"its strip/tile table (tag {tag}) has an invalid field type {typ}")
        length = n * _TYPE_SIZES[typ]
        if length <= len(value):
            raw = value[:length]
        else:
            (where,) = struct.unpack(order + ("Q" if big else "I"), value)
            raw = _read(f, where, length, size, "strip/tile offset table")
        tables[tag] = np.frombuffer(raw, dtype=np.dtype(order + _TYPE_CODES[typ])).astype(np.uint64)
    for offsets_tag, counts_tag in ((_STRIP_OFFSETS, _STRIP_BYTE_COUNTS), (_TILE_OFFSETS, _TILE_BYTE_COUNTS)):
        offsets, counts = tables.get(offsets_tag), tables.get(counts_tag)
        if offsets is None or counts is None:
            continue
        if offsets.size != counts.size:
            raise _Corrupt("its strip/tile offset and byte-count tables differ in length")
        if offsets.size:
            limit = np.uint64(size)
            # Compared piecewise first, so a garbage offset cannot wrap the uint64 sum around.
            cut = (
                (offsets > limit) | (counts > limit) | (np.minimum(offsets, limit) + np.minimum(counts, limit) > limit)
            )
            if cut.any():
                last = max(o + c for o, c in zip(offsets[cut].tolist(), counts[cut].tolist(), strict=True))
                missing = int(np.count_nonzero(cut))
                raise _Corrupt(
                    f"its pixel data should run to byte {last:,} but the file has only {size:,} bytes "
                    f"(blocks missing or cut: {missing:,} of {offsets.size:,})"
                )
    (next_offset,) = struct.unpack(order + next_fmt, body[count * entry_size :])
    return int(next_offset)
