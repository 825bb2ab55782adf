"""Point ids: deterministic UUIDs, so re-ingesting overwrites instead of duplicating."""

from __future__ import annotations

import uuid

from geosearch.schemas.chips import Window

_CHIP_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/geosearch/geosearch/chip")
_SCENE_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/geosearch/geosearch/scene")


def chip_id(scene_id: str, window: Window, chip_size: int, model_id: str, scale: int = 1) -> str:
    """Deterministic id, so re-ingesting a scene overwrites its chips instead of duplicating them.

    A coarser scale's chip gets an id of its own even where its window rounds to a finer one's;
    scale 1 adds nothing to the key, so ids from before multi-scale chips stay valid.
    """
    key = f"{model_id}\n{scene_id}\n{window.col},{window.row},{window.width},{window.height}\n{chip_size}"
    if scale != 1:
        key += f"\nscale={scale}"
    return str(uuid.uuid5(_CHIP_NS, key))


def scene_point_id(scene_id: str) -> str:
    """Id of a scene's record in the scenes collection."""
    return str(uuid.uuid5(_SCENE_NS, scene_id))


def is_uuid(value: str) -> bool:
    """Whether `value` can be a point id (engines accept UUID strings only)."""
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
