"""The HTTP API: `create_app()` for a standalone server; `GeoSearchPlugin` to mount it elsewhere."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from geosearch import __version__
from geosearch.config import Settings
from geosearch.engine import Engine
from geosearch.plugins.litestar import GeoSearchPlugin


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> Litestar:
    return Litestar(
        plugins=[GeoSearchPlugin(engine, settings=settings)],
        openapi_config=OpenAPIConfig(title="geosearch", version=__version__, path="/schema"),
    )


__all__ = ["create_app"]
