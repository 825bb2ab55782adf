"""The HTTP API: `create_app()` for a standalone server; `GeoSearchMount` to mount it in another Litestar app."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from geosearch import __version__
from geosearch.api.mount import GeoSearchMount
from geosearch.config import Config
from geosearch.engine import Engine


def create_app(engine: Engine | None = None, config: Config | None = None) -> Litestar:
    return Litestar(
        plugins=[GeoSearchMount(engine, config=config)],
        openapi_config=OpenAPIConfig(title="geosearch", version=__version__, path="/schema"),
    )


__all__ = ["GeoSearchMount", "create_app"]
