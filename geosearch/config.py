"""Runtime configuration, resolved once from CLI options and environment variables."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from geosearch.errors import InvalidInput


@dataclass(frozen=True)
class Config:
    """Where the store is and which models to use.

    Precedence: explicit values (command-line flags) > environment > defaults. Environment:
    ``GEOSEARCH_STORE`` (embedded store dir), ``QDRANT_URL`` / ``QDRANT_API_KEY`` (server or cluster;
    wins over ``GEOSEARCH_STORE``, loses to an explicit ``store``), ``GEOSEARCH_MODEL``, ``GEOSEARCH_CAPTIONER``,
    ``GEOSEARCH_DEVICE``, ``GEOSEARCH_MODEL_RUNTIME`` (onnx, torch or auto), ``GEOSEARCH_STORE_OPTIONS``
    (a JSON object of `open_store` options, e.g. ``{"vector_datatype": "float16"}``; those that shape a
    collection apply when it is created).
    """

    store: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    model: str | None = None
    captioner: str | None = None
    device: str | None = None
    model_runtime: str | None = None
    """Embedder runtime: 'onnx', 'torch' or 'auto' (None: the plugin's default, auto for the default model)."""
    batch_size: int = 32
    store_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        env = os.environ
        values: dict[str, object] = {
            "store": env.get("GEOSEARCH_STORE") or None,
            "qdrant_url": env.get("QDRANT_URL") or None,
            "qdrant_api_key": env.get("QDRANT_API_KEY") or None,
            "model": env.get("GEOSEARCH_MODEL") or None,
            "captioner": env.get("GEOSEARCH_CAPTIONER") or None,
            "device": env.get("GEOSEARCH_DEVICE") or None,
            "model_runtime": env.get("GEOSEARCH_MODEL_RUNTIME") or None,
            "store_options": _json_object(env.get("GEOSEARCH_STORE_OPTIONS") or "{}", "GEOSEARCH_STORE_OPTIONS"),
        }
        given = {k: v for k, v in overrides.items() if v is not None}
        if "store" in given and "qdrant_url" not in given:
            # One precedence, flag > environment > default: a store named on the command line beats
            # the server that QDRANT_URL selects from the environment.
            values["qdrant_url"] = None
        values.update(given)
        return cls(**values)  # type: ignore[arg-type]


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"{what} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object of store options, got {text!r}")
    return value


def parse_store_options(pairs: Sequence[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """KEY=VALUE pairs (VALUE as JSON, else as a string: hnsw_ef=256, vector_datatype=float16) over `base`."""
    out = dict(base or {})
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"store option {pair!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out
