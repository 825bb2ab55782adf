"""geosearch: natural-language search over GeoTIFF scenes.

The package root stays import-light: `geosearch.tilers` and `geosearch.errors` must import
without the store, the models or torch, so the model loaders resolve on first use (PEP 562).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if not (Path(__file__).parent / "tilers").is_dir():
    # The bare ./geosearch folder of a checkout (e.g. `python -m ...` run in the repo root) lacks the
    # tilers/plugins/schemas folders that an install maps into the package: say so instead of
    # failing later with "No module named geosearch.plugins".
    raise ImportError(
        f"geosearch was imported from the source folder {Path(__file__).parent} instead of an install: "
        "run `pip install -e .` and run commands outside the checkout root (or use the `geosearch` command)"
    )

from geosearch.errors import GeoSearchError

if TYPE_CHECKING:
    from geosearch.models import load_captioner, load_embedder

__version__ = "0.1.0"

__all__ = ["GeoSearchError", "__version__", "load_captioner", "load_embedder"]


def __getattr__(name: str) -> Any:
    if name in ("load_captioner", "load_embedder"):
        from geosearch import models

        return getattr(models, name)
    raise AttributeError(f"module 'geosearch' has no attribute {name!r}")
