"""geosearch: natural-language search over GeoTIFF scenes."""

from pathlib import Path

# `tilers/`, `plugins/` and `schemas/` install as geosearch.tilers/.plugins/.schemas. Run from a
# source checkout (`python -m geosearch` in the repo root puts ./geosearch first on sys.path,
# shadowing the installed package), they sit beside this folder: let submodule lookup find them.
_checkout = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "plugins").is_dir() and (_checkout / "plugins" / "base.py").is_file():
    __path__.append(str(_checkout))

from geosearch.errors import GeoSearchError  # noqa: E402
from geosearch.models import load_captioner, load_embedder  # noqa: E402

__version__ = "0.1.0"

__all__ = ["GeoSearchError", "__version__", "load_captioner", "load_embedder"]
