"""Model registry: resolve a spec string to an embedder or captioner plugin.

Specs:
- ``None``                      the offline default (geosearch-lite-clip / geosearch-lite-capret)
- ``NAME:ARG``                  the plugin registered under entry point NAME gets ARG
- ``hf-hub:ORG/REPO``, ``local-dir:PATH``, a checkpoint file path, or an open_clip model name
  (``ViT-B-32`` or ``ViT-B-32/laion2b_s34b_b79k``) go to the open_clip plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from geosearch.errors import ModelError
from geosearch.plugins.base import Captioner, Embedder

EMBEDDER_GROUP = "geosearch.embedders"
CAPTIONER_GROUP = "geosearch.captioners"
DEFAULT_EMBEDDER = "lite-clip"
DEFAULT_CAPTIONER = "lite-capret"
OPEN_CLIP = "open_clip"


def _factories(group: str) -> dict[str, Callable[..., Any]]:
    return {ep.name: ep for ep in entry_points(group=group)}  # type: ignore[misc]


def _split(spec: str, names: set[str]) -> tuple[str, str]:
    """Return (plugin name, argument) for a spec."""
    head, sep, tail = spec.partition(":")
    if sep and head in names:
        return head, tail
    if spec.startswith(("hf-hub:", "local-dir:")) or Path(spec).expanduser().exists():
        return OPEN_CLIP, spec
    if not sep or "/" in head or head not in names:
        # A bare open_clip architecture name, optionally with /pretrained tag.
        return OPEN_CLIP, spec
    return head, tail


def _load(group: str, spec: str, default: str, kind: str, **options: Any) -> Any:
    eps = _factories(group)
    name, arg = (default, "") if spec in ("", None) else _split(spec, set(eps))
    if name not in eps:
        available = ", ".join(sorted(eps)) or "none"
        hint = (
            " The offline default model is not installed in this environment."
            if name == default
            else ""
        )
        raise ModelError(f"no {kind} plugin named {name!r} (installed: {available}).{hint}")
    factory = eps[name].load()  # type: ignore[attr-defined]
    return factory(arg, **options)


def load_embedder(spec: str | None = None, **options: Any) -> Embedder:
    """Load an embedder; ``spec=None`` gives the offline default. Options: device, batch_size, precision."""
    model = _load(EMBEDDER_GROUP, spec or "", DEFAULT_EMBEDDER, "embedder", **options)
    if not isinstance(model, Embedder):
        raise ModelError(f"plugin for {spec!r} did not return an Embedder")
    return model


def load_captioner(spec: str | None = None, **options: Any) -> Captioner:
    """Load a captioner; ``spec=None`` gives the offline default. Options: device, batch_size, mode."""
    model = _load(CAPTIONER_GROUP, spec or "", DEFAULT_CAPTIONER, "captioner", **options)
    if not isinstance(model, Captioner):
        raise ModelError(f"plugin for {spec!r} did not return a Captioner")
    return model
