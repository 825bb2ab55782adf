"""Runtime settings, resolved once from CLI options and environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Where the store is and which models to use.

    Environment: ``GEOSEARCH_STORE`` (embedded store dir), ``QDRANT_URL`` / ``QDRANT_API_KEY``
    (server or cluster; wins over the embedded store), ``GEOSEARCH_MODEL``, ``GEOSEARCH_CAPTIONER``,
    ``GEOSEARCH_DEVICE``.
    """

    store: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    model: str | None = None
    captioner: str | None = None
    device: str | None = None
    batch_size: int = 32

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "store": env.get("GEOSEARCH_STORE") or None,
            "qdrant_url": env.get("QDRANT_URL") or None,
            "qdrant_api_key": env.get("QDRANT_API_KEY") or None,
            "model": env.get("GEOSEARCH_MODEL") or None,
            "captioner": env.get("GEOSEARCH_CAPTIONER") or None,
            "device": env.get("GEOSEARCH_DEVICE") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
