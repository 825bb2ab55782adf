"""Model registry: resolve a spec string to an embedder or captioner plugin.

Specs:
- ``None``                      the offline default (geosearch-lite-clip / nearest-caption; lite-capret on request)
- ``NAME:ARG``                  the plugin registered under entry point NAME gets ARG
- ``hf-hub:ORG/REPO``, ``local-dir:PATH``, a checkpoint file path, or an open_clip model name
  (``ViT-B-32`` or ``ViT-B-32/laion2b_s34b_b79k``) go to the open_clip plugin.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from geosearch.errors import ModelError
from geosearch.plugins.base import Captioner, Embedder

EMBEDDER_GROUP = "geosearch.embedders"
CAPTIONER_GROUP = "geosearch.captioners"
DEFAULT_EMBEDDER = "lite-clip"
DEFAULT_CAPTIONER = "nearest-caption"
"""Ingest default: it reuses the chip embeddings (near-zero extra cost on CPU); see benchmarks/models.py."""
OPEN_CLIP = "open_clip"


def _factories(group: str) -> dict[str, Callable[..., Any]]:
    return {ep.name: ep for ep in entry_points(group=group)}  # type: ignore[misc]


def _split(spec: str, names: set[str], fallback: str | None) -> tuple[str, str]:
    """Return (plugin name, argument) for a spec; unknown specs go to `fallback` when there is one."""
    if spec in names:
        return spec, ""
    head, sep, tail = spec.partition(":")
    if sep and head in names:
        return head, tail
    if fallback is not None:
        # hf-hub:/local-dir: ids, checkpoint paths and open_clip names (``ViT-B-32/laion2b_s34b_b79k``).
        return fallback, spec
    return spec, ""


def _load(group: str, spec: str, default: str, kind: str, fallback: str | None, **options: Any) -> Any:
    eps = _factories(group)
    name, arg = (default, "") if spec in ("", None) else _split(spec, set(eps), fallback)
    if name not in eps:
        available = ", ".join(sorted(eps)) or "none"
        hint = (
            " The offline default model is not installed in this environment."
            if name == default
            else ""
        )
        raise ModelError(f"no {kind} plugin named {name!r} (installed: {available}).{hint}")
    factory = eps[name].load()  # type: ignore[attr-defined]
    try:
        inspect.signature(factory).bind(arg, **options)
    except TypeError as e:  # an unknown or misspelt option: name it before any weights load
        raise ModelError(f"{kind} plugin {name!r} does not take these options ({e}); got {sorted(options)}") from e
    return factory(arg, **options)


def load_embedder(spec: str | None = None, **options: Any) -> Embedder:
    """Load an embedder; ``spec=None`` gives the offline default. Options: device, batch_size, precision,
    runtime ('onnx', 'torch' or 'auto'; ONNX Runtime exists for the default only), and for the default
    ``memory=False`` (without its caption memory)."""
    model = _load(EMBEDDER_GROUP, spec or "", DEFAULT_EMBEDDER, "embedder", OPEN_CLIP, **options)
    if not isinstance(model, Embedder):
        raise ModelError(f"plugin for {spec!r} did not return an Embedder")
    return model


def load_captioner(spec: str | None = None, **options: Any) -> Captioner:
    """Load a captioner; ``spec=None`` gives the offline default. Options: ``embedder`` (reuse a loaded
    one), each captioner's own (see its factory) and the embedder loader's (device, batch_size, ...)."""
    model = _load(CAPTIONER_GROUP, spec or "", DEFAULT_CAPTIONER, "captioner", None, **options)
    if not isinstance(model, Captioner):
        raise ModelError(f"plugin for {spec!r} did not return a Captioner")
    return model
