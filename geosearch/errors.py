"""One error hierarchy for the whole engine.

Every failure a user can cause or meet is a `GeoSearchError`; the CLI prints its message and
exits non-zero, and the API maps each class to one HTTP status (see `geosearch.api.errors`).
"""

from __future__ import annotations


class GeoSearchError(Exception):
    """Base class: a problem we can explain to the user in one sentence."""


class InvalidInput(GeoSearchError):
    """A request parameter or CLI option is malformed (bbox arity, empty query, bad band list)."""


class NotFound(GeoSearchError):
    """A scene, chip or model that was named does not exist."""


class SceneError(GeoSearchError):
    """A raster cannot be chipped: unreadable, no CRS/geotransform, unsupported layout."""


class ModelError(GeoSearchError):
    """A model spec cannot be resolved or loaded (unknown name, missing weights, bad checkpoint)."""


class StoreError(GeoSearchError):
    """The vector store is unavailable or refused an operation."""


class StoreLocked(StoreError):
    """Another process owns the embedded store directory."""


class ModelMismatch(StoreError):
    """A collection holds vectors of another model (or dimension) than the one in use."""
