"""geosearch: natural-language search over GeoTIFF scenes."""

from geosearch.errors import GeoSearchError
from geosearch.models import load_captioner, load_embedder

__version__ = "0.1.0"

__all__ = ["GeoSearchError", "__version__", "load_captioner", "load_embedder"]
