"""Engine search parameters for the planner's route, built once for both engines.

qdrant-edge and qdrant-client's `models` name these types and their fields alike, so one function
builds them from whichever module it is given.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from geosearch.store.options import StoreOptions


def search_params(models: ModuleType, options: StoreOptions, *, exact: bool, filtered: bool) -> Any:
    """`models.SearchParams` for an exact scan or an HNSW walk.

    Args:
        models: `qdrant_edge` or `qdrant_client.models`.
        options: the store's options (`hnsw_ef`, `acorn`, `oversampling`).
        exact: brute force over the filter's matches instead of walking HNSW.
        filtered: whether the search has a filter (ACORN applies only then).
    """
    if exact:
        # Full-precision vectors only: scoring int8 copies as well made exact scans much slower, and
        # quantized scores could reorder near-ties.
        return models.SearchParams(exact=True, quantization=models.QuantizationSearchParams(ignore=True))
    # max_selectivity=1: ACORN whenever filtered. The default (0.4) is judged on the engine's cardinality
    # estimate, which for a geo box can be many times the true count: ACORN then stays off and filtered
    # HNSW loses most of the recall, whatever hnsw_ef.
    acorn = models.AcornSearchParams(enable=True, max_selectivity=1.0) if filtered and options.acorn else None
    # Rescoring with the stored float32 vectors is what keeps quantized HNSW's recall; the setting only
    # applies to segments that have quantized vectors (indexed ones).
    rescore = models.QuantizationSearchParams(rescore=True, oversampling=options.oversampling)
    return models.SearchParams(hnsw_ef=options.hnsw_ef, acorn=acorn, quantization=rescore)
