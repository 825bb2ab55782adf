"""Chips as RFC 7946 GeoJSON features: the one place that decides what a Feature carries."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from geosearch.schemas import Feature, FeatureCollection, Link
from geosearch.store import Hit


def chip_feature(hit: Hit, chip_url: Callable[[str], str] | None = None) -> Feature:
    p = hit.payload
    properties: dict[str, object] = {
        "id": hit.id,
        "score": hit.score,
        "relevance": hit.relevance,
        "caption": p.caption,
        "scene": p.scene_id,
        "window": msgspec.to_builtins(p.window),
        "gsd": p.gsd,
        "scale": p.scale,
        "datetime": p.datetime,
        "valid_fraction": p.valid_fraction,
    }
    if chip_url is not None:
        properties["chip_url"] = chip_url(hit.id)
    return Feature(id=hit.id, geometry=dict(p.footprint), properties=properties)


def feature_collection(
    hits: Sequence[Hit],
    chip_url: Callable[[str], str] | None = None,
    links: Sequence[Link] = (),
) -> FeatureCollection:
    features = [chip_feature(hit, chip_url) for hit in hits]
    return FeatureCollection(features=features, links=list(links), numberReturned=len(features))
