"""Remote rasters, read in place by GDAL: which hrefs are remote, their GDAL path, and their scene id.

A local scene's id is the hash of its bytes (`tilers.ids.scene_id`). A remote scene would have to be
downloaded whole for that, so its id hashes what the server says identifies the object instead:

    blake2b-128("remote\\n" + url + "\\n" + size + "\\n" + ETag + "\\n" + Last-Modified)

read from the headers of a one-byte range request (``Range: bytes=0-0``, which presigned URLs allow where
HEAD is refused). The same URL serving the same object gives the same id, so ingesting it again is a
no-op; a new ETag, size or modification time gives a new id. A local copy of the same file has a
different id (its content hash): the two are different sources, and their chips are stored apart, with
equal vectors. Servers that send neither ETag nor Last-Modified are identified by URL and size alone.

Other GDAL virtual paths (/vsis3/, /vsigs/, /vsiaz/ ...: credentials are GDAL's own, from the
environment) cannot be probed without GDAL's credentials, so they are identified by path and by the
raster's structure (size, bands, type, grid): rewriting one in place with the same structure keeps its id.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

from geosearch.errors import SceneError

REMOTE_GDAL_CONFIG: dict[str, str] = {
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.vrt,.jp2,.img,.ovr,.msk",
    "VSI_CACHE": "TRUE",
}
"""GDAL's config options for scenes read in place over HTTP (/vsicurl/, /vsis3/ ...): retry transient failures
(429, 5xx) 3 times 1 s apart, merge adjacent tile reads into one range request, never list the remote
"folder" for sidecar files (one request per open instead of many), try only raster-looking URLs, and cache
the bytes read per file. Credentials are GDAL's own (AWS_*, GS_*, AZURE_*, GDAL_HTTP_HEADERS ...)."""


def remote_gdal_env() -> AbstractContextManager[object]:
    """A rasterio.Env with `REMOTE_GDAL_CONFIG`, less the options the environment sets (those win)."""
    import rasterio

    config = {k: v for k, v in REMOTE_GDAL_CONFIG.items() if k not in os.environ}
    env: AbstractContextManager[object] = rasterio.Env(**config) if config else nullcontext()
    return env


HTTP_SCHEMES = ("http://", "https://")
DEFAULT_TIMEOUT_S = 30.0
"""Seconds the id probe waits for the server when GDAL_HTTP_TIMEOUT is not set (GDAL's own default)."""


def is_url(href: str) -> bool:
    return href.lower().startswith(HTTP_SCHEMES)


def is_remote(href: str) -> bool:
    """An http(s) URL or a GDAL virtual file system path (/vsicurl/, /vsis3/ ...)."""
    return is_url(href) or href.startswith("/vsi")


def gdal_path(href: str) -> str:
    """The path GDAL opens: http(s) URLs through /vsicurl/ (range reads, no download), others as is."""
    return f"/vsicurl/{href}" if is_url(href) else href


def _timeout() -> float:
    import rasterio.env

    value = rasterio.env.get_gdal_config("GDAL_HTTP_TIMEOUT")
    try:
        return float(value) if value not in (None, "") else DEFAULT_TIMEOUT_S  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT_S


def probe(url: str) -> dict[str, str]:
    """The identifying headers of a URL (size, ETag, Last-Modified) from a one-byte range request.

    Raises:
        SceneError: the object is not there (404/410), or the server cannot be reached or does not answer
            within GDAL_HTTP_TIMEOUT. Refusals (401/403/405) are not errors: GDAL may hold the credentials,
            so the caller falls back to identifying the URL alone.
    """
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0", "User-Agent": "geosearch"})
    timeout = _timeout()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers = response.headers
            size = headers.get("Content-Length", "")
            if response.status == 206 and "/" in headers.get("Content-Range", ""):
                size = headers["Content-Range"].rsplit("/", 1)[1]
            return {"size": size, "etag": headers.get("ETag", ""), "modified": headers.get("Last-Modified", "")}
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 405):
            return {}
        raise SceneError(f"cannot read {url}: HTTP {exc.code} {exc.reason}") from None
    except TimeoutError:
        raise SceneError(f"cannot read {url}: the server did not answer within {timeout:g} s") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SceneError(f"cannot read {url}: {' '.join(str(reason).split())}") from None


def remote_scene_id(href: str, stamp: dict[str, str] | None = None, structure: Iterable[object] = ()) -> str:
    """The scene id of a remote href (see the module docstring). `stamp` is `probe(href)`'s answer
    (probed here when None, for a URL); `structure` identifies /vsi paths and URLs that refuse probing."""
    digest = hashlib.blake2b(digest_size=16)
    if is_url(href):
        stamp = probe(href) if stamp is None else stamp
        parts: list[object] = ["remote", href, stamp.get("size", ""), stamp.get("etag", ""), stamp.get("modified", "")]
        if not stamp:
            parts += ["structure", *structure]
    else:
        parts = ["vsi", href, *structure]
    digest.update("\n".join(str(p) for p in parts).encode())
    return digest.hexdigest()
