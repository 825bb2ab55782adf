"""Helpers shared by the test modules (importable as `support`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

GEOSEARCH = str(Path(sys.executable).with_name("geosearch"))
"""The installed console script, as a user runs it (`python -m geosearch` in the checkout root would
import the bare ./geosearch folder, without the mapped tilers/plugins/schemas)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a thread; yields its base url."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def write_tif(path: Path, data: np.ndarray[Any, Any], **profile: Any) -> Path:
    """A GeoTIFF of `data` (bands, rows, cols): UTM 33N, 10 m pixels, unless `profile` says otherwise."""
    count, height, width = data.shape
    base: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 5000000, 10, 10),
    }
    base.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **base) as dst:
            dst.write(data)
    return path
