"""Content-hash scene ids, so re-ingesting the same bytes (under any path) is idempotent."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

BLOCK = 1 << 20


def scene_id(path: str | Path) -> str:
    """blake2b-128 hex (32 chars) of the file's bytes, cached by (path, size, mtime, ctime, inode).

    The cache makes `render_chip`'s "has the file changed?" check cheap on repeated requests;
    a rewrite changes mtime/size and so is re-hashed, and so does one that keeps both (a same-size
    copy with its modification time preserved, as `rsync -t` or `cp -p` do: ctime still moves),
    or a file replaced by another (a new inode). A .vrt is hashed by its XML text only:
    editing the VRT changes the id, silently replacing one of its sources does not.
    """
    p = os.path.abspath(os.fspath(path))
    st = os.stat(p)
    return _hash(p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@lru_cache(maxsize=1024)
def _hash(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
