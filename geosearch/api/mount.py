"""Mount the whole geosearch API into any Litestar app (an init plugin, in Litestar's terms).

    app = Litestar(plugins=[GeoSearchMount(config=Config(store="/data/store"), path="/geo")])

The mount adds the routes, the error table and CORS (unless the app configures CORS itself),
and opens the engine at startup / closes it at shutdown unless you pass an open `Engine`. Its routes
apply the API key, rate limit, CORS origins and request timeout of `config` (else of the environment,
`Config.from_env`); see `geosearch.api.security` and `geosearch.api.limits`. Unset, CORS is open to
any origin here: `geosearch serve` closes it on non-loopback hosts (`security.serve_config`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.plugins import InitPluginProtocol

from geosearch.config import Config
from geosearch.errors import GeoSearchError

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.config.app import AppConfig

    from geosearch.engine import Engine


class GeoSearchMount(InitPluginProtocol):
    def __init__(self, engine: Engine | None = None, *, config: Config | None = None, path: str = "/") -> None:
        self.engine = engine
        self.config = config
        self.path = path
        self._owns_engine = engine is None

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        from geosearch.api.errors import handle_geosearch_error
        from geosearch.api.limits import Worker
        from geosearch.api.ogc import make_ogc_router
        from geosearch.api.routes import make_router
        from geosearch.api.security import ApiPolicy
        from geosearch.api.tiles import make_tiles_router
        from geosearch.api.web import make_map_router

        policy = ApiPolicy.from_config(self.config or Config.from_env())
        worker = Worker(policy.request_timeout)  # one pool of bounded threads for all the routers
        app_config.route_handlers.append(make_router(self.path, policy, worker))
        app_config.route_handlers.append(make_tiles_router(self.path, policy, worker))  # web map tiles
        app_config.route_handlers.append(make_map_router(self.path, policy))  # the web map at /map
        ogc_path = self.path.rstrip("/") + "/ogc"
        app_config.route_handlers.append(make_ogc_router(ogc_path, policy, worker))  # OGC API Features
        app_config.exception_handlers.setdefault(GeoSearchError, handle_geosearch_error)
        if app_config.cors_config is None:
            app_config.cors_config = policy.cors_config()
        app_config.on_startup.append(self._startup)
        app_config.on_shutdown.append(self._shutdown)
        return app_config

    def _startup(self, app: Litestar) -> None:
        from geosearch.api.routes import ENGINE_STATE_KEY
        from geosearch.engine import Engine

        if self.engine is None:
            self.engine = Engine.open(self.config or Config.from_env())
        self.engine.store.warm()  # a server's first searches as fast as its later ones
        getattr(self.engine.embedder, "relevance", None)  # builds the relevance reference set now
        app.state[ENGINE_STATE_KEY] = self.engine

    def _shutdown(self, app: Litestar) -> None:
        if self._owns_engine and self.engine is not None:
            self.engine.close()
            self.engine = None
