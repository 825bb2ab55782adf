"""How a search runs: exact scan or HNSW walk, with which filter, fetching how deep.

Pure functions of counts and sizes: the store passes its engine's counting primitives in, so every
routing rule is testable with plain numbers and no store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from geosearch.store.geo import box_cells
from geosearch.store.records import Where

Count = Callable[[Where], int]
"""Number of points matching a filter."""

CELL_EXACT_SLACK = 2.5
"""A filter whose cell cover holds at most this x `exact_threshold` chips is searched exactly, uncounted.

The cover's posting lists bound the box's matches from above, and an exact search walks about the cover
only: over a cover that size it is still no slower than filtered HNSW on the same box (which visits many
rejected neighbours), so it gives recall 1.0 without the cost of an exact count."""

FETCH_GROWTH = 4
"""Factor by which a boxed search fetches deeper when the footprint test left too few hits."""


def use_exact(
    where: Where,
    *,
    total: int,
    estimate: Count,
    count: Count,
    threshold: int,
    count_limit: int,
) -> bool:
    """Whether to search `where` exactly: filtered HNSW silently loses recall on small candidate sets.

    The engine's estimate is cheap but loose for geo boxes, so a filter estimated above the threshold is
    counted exactly (cost proportional to its matches) unless the estimate is so large (`count_limit`)
    that the set cannot plausibly be small: counting a large box can cost more than the search.

    Args:
        where: the filter; `where.cells`, when set, is the cell cover of `where.boxes`.
        total: the store's cheap point count (may include deletions not yet vacuumed).
        estimate: the engine's cheap cardinality estimate (for a geo box, an upper bound).
        count: the exact cardinality; called last, and only when nothing cheaper decides.
        threshold: `StoreOptions.exact_threshold`.
        count_limit: `StoreOptions.effective_exact_count_limit`.

    Returns:
        True for an exact search, False for HNSW.
    """
    if total <= threshold:
        return True
    if where.empty:
        return False
    bound = estimate(replace(where, cells=()))
    if bound <= threshold:
        return True
    if where.cells:
        # The cover's posting lists bound the box's matches from above (tightly while the fine cells
        # fit), and those of cells wholly inside the box from below.
        bound = min(bound, estimate(Where(cells=where.cells)))
        if bound <= CELL_EXACT_SLACK * threshold:
            return True
        if surely_large(where, estimate, threshold):
            return False
    if bound > count_limit:
        return False
    return count(where) <= threshold


def surely_large(where: Where, estimate: Count, threshold: int) -> bool:
    """Whether a filter of boxes alone has more than `threshold` matches in the cells wholly inside them.

    Only a filter with no other condition qualifies: a scene or date filter can exclude those matches.
    """
    inner = box_cells(where.boxes)[1]
    only_boxes = where == Where(boxes=where.boxes, cells=where.cells)
    return bool(inner) and only_boxes and estimate(Where(cells=inner)) > threshold


def query_filter(where: Where, exact: bool) -> Where:
    """The filter a search runs with.

    The cells speed up walking a filter's matches (exact search); HNSW + ACORN instead tests each
    visited point against every condition, where the cells only add work, so HNSW drops them.
    """
    return where if exact else replace(where, cells=())


def first_fetch(limit: int, boxed: bool) -> int:
    """Candidates a search asks for first: with a box, the footprint test drops margin candidates."""
    return max(2 * limit, limit + 16) if boxed else limit


def browse_page(want: int, boxed: bool) -> int:
    """Candidates one browse step scrolls for `want` more hits (more with a box, as in `first_fetch`)."""
    return max(2 * want, 16) if boxed else want
