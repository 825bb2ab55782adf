"""The search planner's routing rules and the engine search parameters, with plain numbers: no store."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import pytest
import qdrant_edge as qe
from qdrant_client import models as qm

from geosearch.store.geo import box_cells
from geosearch.store.options import StoreOptions
from geosearch.store.params import search_params
from geosearch.store.planner import (
    CELL_EXACT_SLACK,
    browse_page,
    first_fetch,
    query_filter,
    surely_large,
    use_exact,
)
from geosearch.store.records import Where

BOX = (0.0, 0.0, 3.0, 3.0)  # three whole 1° cells wide: its inner cells are not empty
COVER, INNER = box_cells([BOX])
BOXED = Where(boxes=(BOX,), cells=COVER)
THRESHOLD = 100


@dataclass
class Counts:
    """Cardinalities by kind of filter, and a log of which were asked for."""

    filter: int = 0
    """The engine's estimate of the filter without its cells."""
    cover: int = 0
    inner: int = 0
    exact: int = 0
    asked: list[str] = field(default_factory=list)

    def estimate(self, where: Where) -> int:
        kind = "cover" if where.cells == COVER else "inner" if where.cells == INNER else "filter"
        assert kind != "filter" or not where.cells, "the filter is estimated without its cells"
        self.asked.append(kind)
        return int(getattr(self, kind))

    def count(self, where: Where) -> int:
        self.asked.append("exact")
        return self.exact

    def route(self, where: Where, total: int = 10_000, count_limit: int = 8 * THRESHOLD) -> bool:
        return use_exact(
            where,
            total=total,
            estimate=self.estimate,
            count=self.count,
            threshold=THRESHOLD,
            count_limit=count_limit,
        )


def test_a_small_store_is_searched_exactly_uncounted() -> None:
    counts = Counts()
    assert counts.route(BOXED, total=THRESHOLD) is True
    assert counts.route(Where(), total=THRESHOLD) is True
    assert counts.asked == []


def test_no_filter_on_a_large_store_walks_hnsw() -> None:
    counts = Counts()
    assert counts.route(Where()) is False
    assert counts.asked == []


def test_a_small_estimate_decides_exact() -> None:
    counts = Counts(filter=THRESHOLD)
    assert counts.route(Where(scene="s1")) is True
    assert counts.route(BOXED) is True
    assert counts.asked == ["filter", "filter"]


def test_a_cover_within_the_slack_is_exact_uncounted() -> None:
    counts = Counts(filter=10 * THRESHOLD, cover=int(CELL_EXACT_SLACK * THRESHOLD))
    assert counts.route(BOXED) is True
    assert counts.asked == ["filter", "cover"]


def test_a_cover_bound_below_the_estimate_is_what_gets_compared() -> None:
    """The smaller of the two upper bounds decides against `count_limit`."""
    counts = Counts(filter=100 * THRESHOLD, cover=5 * THRESHOLD, inner=THRESHOLD, exact=THRESHOLD + 1)
    assert counts.route(BOXED, count_limit=4 * THRESHOLD) is False
    assert counts.asked == ["filter", "cover", "inner"]
    counts.asked.clear()
    assert counts.route(BOXED, count_limit=5 * THRESHOLD) is False
    assert counts.asked == ["filter", "cover", "inner", "exact"]


def test_full_inner_cells_mean_hnsw_uncounted() -> None:
    counts = Counts(filter=10 * THRESHOLD, cover=5 * THRESHOLD, inner=THRESHOLD + 1)
    assert counts.route(BOXED) is False
    assert counts.asked == ["filter", "cover", "inner"]


def test_inner_cells_do_not_bound_a_filter_with_other_conditions() -> None:
    """A scene filter can exclude every match of the inner cells: the exact count decides."""
    counts = Counts(filter=10 * THRESHOLD, cover=5 * THRESHOLD, inner=50 * THRESHOLD, exact=THRESHOLD)
    where = Where(boxes=(BOX,), cells=COVER, scene="s1")
    assert counts.route(where) is True
    assert counts.asked == ["filter", "cover", "exact"]


@pytest.mark.parametrize(("exact", "expected"), [(THRESHOLD, True), (THRESHOLD + 1, False)])
def test_the_exact_count_decides_near_the_threshold(exact: int, expected: bool) -> None:
    counts = Counts(filter=2 * THRESHOLD, exact=exact)
    assert counts.route(Where(scene="s1")) is expected
    assert counts.asked == ["filter", "exact"]


def test_an_estimate_beyond_the_count_limit_walks_hnsw_uncounted() -> None:
    counts = Counts(filter=8 * THRESHOLD + 1)
    assert counts.route(Where(scene="s1")) is False
    assert counts.asked == ["filter"]


def test_surely_large() -> None:
    counts = Counts(inner=THRESHOLD + 1)
    assert surely_large(BOXED, counts.estimate, THRESHOLD)
    assert not surely_large(BOXED, counts.estimate, THRESHOLD + 1)
    assert not surely_large(Where(boxes=(BOX,), cells=COVER, gsd=(1.0, None)), counts.estimate, 0)
    tiny = (0.11, 0.11, 0.19, 0.19)  # inside one fine cell: no inner cells to count
    assert not surely_large(Where(boxes=(tiny,), cells=box_cells([tiny])[0]), counts.estimate, 0)
    assert counts.asked == ["inner", "inner"]


def test_hnsw_searches_drop_the_cells() -> None:
    assert query_filter(BOXED, exact=True) == BOXED
    assert query_filter(BOXED, exact=False) == Where(boxes=(BOX,))


def test_fetch_depths() -> None:
    assert first_fetch(10, boxed=False) == 10
    assert first_fetch(10, boxed=True) == 26  # limit + 16 while that is more than twice the limit
    assert first_fetch(100, boxed=True) == 200
    assert browse_page(7, boxed=False) == 7
    assert browse_page(7, boxed=True) == 16
    assert browse_page(100, boxed=True) == 200


@pytest.mark.parametrize("models", [qe, qm], ids=["edge", "qdrant-client"])
def test_search_params(models: ModuleType) -> None:
    opts = StoreOptions(hnsw_ef=64, oversampling=3.0)
    exact = search_params(models, opts, exact=True, filtered=True)
    assert exact.exact is True and exact.quantization.ignore is True
    hnsw = search_params(models, opts, exact=False, filtered=True)
    assert hnsw.hnsw_ef == 64 and not hnsw.exact
    assert hnsw.acorn.enable is True and hnsw.acorn.max_selectivity == 1.0
    assert hnsw.quantization.rescore is True and hnsw.quantization.oversampling == 3.0
    assert search_params(models, opts, exact=False, filtered=False).acorn is None
    no_acorn = StoreOptions(acorn=False)
    assert search_params(models, no_acorn, exact=False, filtered=True).acorn is None
