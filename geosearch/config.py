"""Runtime configuration, resolved once from CLI options and environment variables."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from geosearch.errors import InvalidInput

DEFAULT_REQUEST_TIMEOUT = 30.0
RATE_UNITS = ("second", "minute", "hour", "day")


@dataclass(frozen=True)
class Config:
    """Where the store is and which models to use.

    Precedence: explicit values (command-line flags) > environment > defaults. Environment:
    ``GEOSEARCH_STORE`` (embedded store dir), ``QDRANT_URL`` / ``QDRANT_API_KEY`` (server or cluster;
    wins over ``GEOSEARCH_STORE``, loses to an explicit ``store``), ``GEOSEARCH_MODEL``, ``GEOSEARCH_CAPTIONER``,
    ``GEOSEARCH_DEVICE``, ``GEOSEARCH_MODEL_RUNTIME`` (onnx, torch or auto), ``GEOSEARCH_STORE_OPTIONS``
    (a JSON object of `open_store` options, e.g. ``{"vector_datatype": "float16"}``; those that shape a
    collection apply when it is created).

    The HTTP API also reads (see `geosearch.api.security`): ``GEOSEARCH_API_KEY`` (the key every write
    request must carry; unset: writes are open, and ``geosearch serve`` refuses a non-loopback host),
    ``GEOSEARCH_RATE_LIMIT`` (``N/second|minute|hour|day`` per client address; unset: no limit),
    ``GEOSEARCH_CORS_ORIGINS`` (comma list of allowed browser origins, ``*`` for any, ``none`` for none;
    unset: any origin on a loopback host, none otherwise) and ``GEOSEARCH_REQUEST_TIMEOUT`` (seconds a
    search, tile or chip rendering may take before the API answers 503; default 30).
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
    api_key: str | None = None
    """Key that write requests (DELETE) must carry in ``X-API-Key`` or ``Authorization: Bearer``."""
    rate_limit: tuple[str, int] | None = None
    """(unit, requests) per client address, e.g. ("minute", 600); None: no rate limit."""
    cors_origins: tuple[str, ...] | None = None
    """Allowed browser origins; () for none; None: decided by the host served on (open on loopback)."""
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    """Seconds a search, tile or chip rendering may take before the API gives up with a 503."""

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
            "api_key": env.get("GEOSEARCH_API_KEY") or None,
            "rate_limit": parse_rate_limit(env.get("GEOSEARCH_RATE_LIMIT"), "GEOSEARCH_RATE_LIMIT"),
            "cors_origins": parse_origins(env.get("GEOSEARCH_CORS_ORIGINS")),
            "request_timeout": parse_timeout(env.get("GEOSEARCH_REQUEST_TIMEOUT"), "GEOSEARCH_REQUEST_TIMEOUT"),
        }
        given = {k: v for k, v in overrides.items() if v is not None}
        if "store" in given and "qdrant_url" not in given:
            # One precedence, flag > environment > default: a store named on the command line beats
            # the server that QDRANT_URL selects from the environment.
            values["qdrant_url"] = None
        values.update(given)
        return cls(**values)  # type: ignore[arg-type]


def parse_rate_limit(text: str | None, what: str = "rate limit") -> tuple[str, int] | None:
    """``600/minute`` -> ("minute", 600); empty or None -> None (no limit)."""
    if text is None or not text.strip():
        return None
    count, sep, unit = text.strip().partition("/")
    unit = unit.strip().lower().removesuffix("s")
    try:
        n = int(count)
    except ValueError:
        n = 0
    if not sep or unit not in RATE_UNITS or n < 1:
        raise InvalidInput(f"{what} must be N/{'|'.join(RATE_UNITS)} with N >= 1 (e.g. 600/minute), got {text!r}")
    return unit, n


def parse_origins(text: str | None) -> tuple[str, ...] | None:
    """A comma list of origins; ``none`` -> () (no cross-origin access); empty or None -> None (default)."""
    if text is None or not text.strip():
        return None
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    return () if origins == ("none",) else origins


def parse_timeout(text: str | None, what: str = "request timeout") -> float:
    """Seconds, > 0 and finite; empty or None -> the default."""
    if text is None or not text.strip():
        return DEFAULT_REQUEST_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInput(f"{what} must be a positive number of seconds, got {text!r}")
    return seconds


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
