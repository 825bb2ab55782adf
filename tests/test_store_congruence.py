"""The embedded engine and qdrant-client must agree with each other, and the cluster options and the
server write path must do what they say.

`test_store.py` checks each engine against an independent numpy reference (result *sets* for browse);
here the two engines are compared with each other directly: the same ids in the same order (browse
pages included), the same scores within float tolerance, the same counts and scene states. No Qdrant
server can run here, so the cluster options and upsert retries are checked on the wire against a small
HTTP server that answers as Qdrant's REST API does (qdrant-client's own request models, not a mock of
the client), and the retry policy as a plain object.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from test_store import DIM, MODEL, Chip, make_chip, scene_info, synthetic, unit

from geosearch.errors import InvalidInput, StoreError
from geosearch.store import ChipStore, StoreOptions, open_store
from geosearch.store.collection import INDEXED_FIELDS
from geosearch.store.ids import scene_point_id
from geosearch.store.qdrant import UPSERT_BATCH, QdrantStore, Retry, batches, transient
from geosearch.store.states import DELETING, INGESTING, STATE_KEY

ENGINES = ("edge", "qdrant-local")


# ---- cluster options ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shard_number": 0}, "shard_number must be a positive integer"),
        ({"replication_factor": -1}, "replication_factor must be a positive integer"),
        ({"write_consistency_factor": True}, "write_consistency_factor must be a positive integer"),
        ({"shard_number": 2.0}, "shard_number must be a positive integer"),
        ({"timeout": 0}, "timeout must be a positive integer"),
        ({"write_consistency_factor": 3, "replication_factor": 2}, r"cannot exceed replication_factor \(2\)"),
        ({"write_consistency_factor": 2}, r"cannot exceed replication_factor \(unset: 1\)"),
        ({"on_disk_payload": "yes"}, "on_disk_payload must be true or false"),
    ],
)
def test_cluster_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        StoreOptions.from_kwargs(options)


def test_cluster_options_in_range_are_accepted() -> None:
    opts = StoreOptions.from_kwargs(
        {"shard_number": 6, "replication_factor": 3, "write_consistency_factor": 2, "on_disk_payload": False}
    )
    assert (opts.shard_number, opts.replication_factor, opts.write_consistency_factor) == (6, 3, 2)
    opts.check_engine("qdrant")
    with pytest.raises(InvalidInput, match="shard_number=6 needs a Qdrant server"):
        opts.check_engine("edge")


@pytest.mark.parametrize("name", ["shard_number", "replication_factor", "write_consistency_factor"])
def test_edge_refuses_more_than_one_shard_or_replica(tmp_path: Path, name: str) -> None:
    extra = {"replication_factor": 2} if name == "write_consistency_factor" else {}
    with pytest.raises(
        InvalidInput, match=f"(?:{name}|replication_factor)=2 needs a Qdrant server.*one shard on one node"
    ):
        open_store(tmp_path, model_id=MODEL, dim=DIM, **{name: 2, **extra})
    assert not any(tmp_path.iterdir())  # refused before anything was created
    with open_store(tmp_path, model_id=MODEL, dim=DIM, **{name: 1}) as s:  # 1 is what edge is
        assert s.backend == "edge"


@pytest.mark.parametrize(("on_disk", "memory"), [(False, "cached"), (True, "cold"), (None, None)])
def test_edge_on_disk_payload(tmp_path: Path, on_disk: bool | None, memory: str | None) -> None:
    with open_store(tmp_path, model_id=MODEL, dim=DIM, on_disk_payload=on_disk) as s:
        config = json.loads((Path(s.location) / "chips" / "edge_config.json").read_text())
    assert config.get("payload_memory") == memory  # None: edge's own default (on disk)


# ---- batches and the retry policy -----------------------------------------------------------------
def test_batches_split_in_order() -> None:
    rows = list(range(UPSERT_BATCH * 2 + 3))
    parts = batches(rows, UPSERT_BATCH)
    assert [len(p) for p in parts] == [UPSERT_BATCH, UPSERT_BATCH, 3]
    assert [x for p in parts for x in p] == rows
    assert (
        batches([], 4) == [] and batches([1, 2], 4) == [[1, 2]] and [list(p) for p in batches([1, 2], 1)] == [[1], [2]]
    )
    with pytest.raises(ValueError):
        batches(rows, 0)


def _status(code: int) -> UnexpectedResponse:
    return UnexpectedResponse(code, "status", b'{"status":{"error":"x"}}', httpx.Headers())


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_status(503), True),
        (_status(500), True),
        (_status(429), True),
        (_status(400), False),
        (_status(404), False),
        (_status(403), False),
        (ResponseHandlingException(httpx.ConnectError("refused")), True),
        (httpx.ReadTimeout("slow"), True),
        (ConnectionResetError("reset"), True),
        (TimeoutError(), True),
        (ValueError("bad"), False),
    ],
)
def test_transient_errors(exc: BaseException, expected: bool) -> None:
    assert transient(exc) is expected


class Flaky:
    """A request that raises the given errors, one per call, then returns 'ok'."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retry_backs_off_then_succeeds() -> None:
    slept: list[float] = []
    policy = Retry(attempts=5, base=0.5, cap=3.0, sleep=slept.append)
    assert policy.delays() == [0.5, 1.0, 2.0, 3.0]
    request = Flaky(_status(503), ResponseHandlingException(httpx.ConnectError("down")), _status(429))
    assert policy.run(request, "upsert") == "ok"
    assert request.calls == 4 and slept == [0.5, 1.0, 2.0]


def test_retry_gives_up_after_its_attempts() -> None:
    slept: list[float] = []
    request = Flaky(*[_status(502)] * 10)
    with pytest.raises(StoreError, match=r"upsert of batch 1 failed after 3 attempts.*502") as info:
        Retry(attempts=3, base=0.1, sleep=slept.append).run(request, "upsert of batch 1")
    assert request.calls == 3 and slept == [0.1, 0.2]
    assert isinstance(info.value.__cause__, UnexpectedResponse)


def test_retry_does_not_repeat_a_permanent_error() -> None:
    slept: list[float] = []
    request = Flaky(_status(400))
    with pytest.raises(StoreError, match=r"upsert failed: UnexpectedResponse.*400"):
        Retry(sleep=slept.append).run(request, "upsert")
    assert request.calls == 1 and slept == []


# ---- the server write path, on the wire -----------------------------------------------------------
class FakeQdrant(BaseHTTPRequestHandler):
    """Answers the REST calls a store makes while creating collections and upserting, as Qdrant does;
    records each request, and fails the first `fail_upserts` point upserts with 503."""

    requests: list[tuple[str, str, Any]]
    fail_upserts: int

    def _answer(self, code: int, result: Any) -> None:
        body = json.dumps(
            {"result": result, "status": "ok", "time": 0.0} if code == 200 else {"status": {"error": "busy"}}
        )
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = self.path.split("?")[0]
        server: Any = self.server
        server.requests.append((method, path, body))
        if path == "/":
            self._root()
        elif path.endswith("/exists"):
            self._answer(200, {"exists": False})
        elif path.endswith("/points") and method == "PUT":
            if server.fail_upserts > 0:
                server.fail_upserts -= 1
                self._answer(503, None)
            else:
                self._answer(200, {"operation_id": len(server.requests), "status": "completed"})
        elif path.endswith("/index"):
            self._answer(200, {"operation_id": 1, "status": "completed"})
        elif method == "PUT":  # create collection
            self._answer(200, True)
        else:
            self._answer(404, None)

    def _root(self) -> None:
        body = json.dumps({"title": "qdrant", "version": "1.20.0"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), FakeQdrant)
    server.requests, server.fail_upserts = [], 0
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_cluster_options_reach_the_server(fake_server: Any) -> None:
    url = f"http://127.0.0.1:{fake_server.server_address[1]}"
    options = {"shard_number": 4, "replication_factor": 2, "write_consistency_factor": 2, "on_disk_payload": True}
    store = open_store(url=url, model_id=MODEL, dim=DIM, **options)
    try:
        assert isinstance(store, QdrantStore)
        created = {p.rsplit("/", 1)[1]: b for m, p, b in fake_server.requests if m == "PUT" and p.count("/") == 2}
        assert set(created) == {store.collection, store.scenes_collection}
        for body in created.values():  # both collections are spread and replicated alike
            assert {k: body.get(k) for k in options} == options
        assert created[store.collection]["vectors"]["size"] == DIM
        indexes = {
            (p.split("/")[2], b["field_name"], json.dumps(b["field_schema"], sort_keys=True))
            for m, p, b in fake_server.requests
            if p.endswith("/index")
        }
        assert {(c, f) for c, f, _ in indexes} == {
            *((store.collection, f) for f in INDEXED_FIELDS),
            (store.scenes_collection, STATE_KEY),
        }
        kinds = {f: json.loads(s) for c, f, s in indexes if c == store.collection}
        assert {f: k for f, k in kinds.items() if f != "cell"} == {
            f: k for f, k in INDEXED_FIELDS.items() if f != "cell"
        }
        assert kinds["cell"]["type"] == "integer" and kinds["cell"]["range"] is False
    finally:
        store.close()


def test_upserts_are_batched_and_retried(fake_server: Any) -> None:
    url = f"http://127.0.0.1:{fake_server.server_address[1]}"
    store = open_store(url=url, model_id=MODEL, dim=DIM)
    try:
        assert isinstance(store, QdrantStore)
        slept: list[float] = []
        store.retry = Retry(attempts=4, base=0.01, sleep=slept.append)
        vectors = unit(np.random.default_rng(0), UPSERT_BATCH + 44)
        rows = [(f"00000000-0000-0000-0000-{i:012d}", v.tolist(), {"i": i}) for i, v in enumerate(vectors)]
        fake_server.fail_upserts = 2  # the first batch fails twice, then lands
        fake_server.requests.clear()
        store._upsert_rows(rows)
        sent = [b["points"] for m, p, b in fake_server.requests if p.endswith("/points")]
        assert [len(b) for b in sent] == [UPSERT_BATCH] * 3 + [44]
        assert [pt["id"] for b in sent[2:] for pt in b] == [r[0] for r in rows]
        assert slept == [0.01, 0.02]
        fake_server.fail_upserts = 10  # a server that stays unavailable: a StoreError naming the batch
        with pytest.raises(StoreError, match=rf"points 0\.\.{UPSERT_BATCH - 1} of 300 .* after 4 attempts.*503"):
            store._upsert_rows(rows)
    finally:
        store.close()


# ---- edge vs qdrant-client local mode -------------------------------------------------------------
def _open(engine: str, tmp: Path) -> ChipStore:
    return open_store(str(tmp) if engine == "edge" else ":memory:", model_id=MODEL, dim=DIM)


@pytest.fixture(scope="module")
def chips() -> list[Chip]:
    return synthetic(seed=11)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, chips: list[Chip]) -> Iterator[dict[str, ChipStore]]:
    """Both engines holding the same chips, s0..s3 complete, s4 left unfinished (ingesting)."""
    stores = {e: _open(e, tmp_path_factory.mktemp(e)) for e in ENGINES}
    try:
        for s in stores.values():
            for i in range(0, len(chips), 70):  # several calls, as an ingest run makes them
                s.upsert([c.point for c in chips[i : i + 70]])
            for sid in ("s0", "s1", "s2", "s3"):
                s.put_scene(scene_info(sid))
            s.begin_scene("s4")  # hides s4 (and deletes its chips: an interrupted re-ingest)
        yield stores
    finally:
        for s in stores.values():
            s.close()


SEARCHES: list[dict[str, Any]] = [
    {},
    {"bbox": (-12.0, -8.0, 12.0, 8.0)},
    {"bbox": (178.0, -20.0, -178.0, 20.0)},
    {"datetime": ("2021-01-01", "2023-12-31")},
    {"datetime": (None, None)},
    {"gsd": (1.0, 3.0)},
    {"gsd": (None, 0.6), "bbox": (-30.0, -20.0, 30.0, 20.0)},
    {"scene": "s2"},
    {"scene": "s4"},  # unfinished: nothing, on both
    {"scene": "s3", "datetime": ("2023-01-01", None), "bbox": (-30.0, -20.0, 0.0, 20.0)},
]


def _same_hits(a: list[Any], b: list[Any]) -> None:
    """Same ids, order and payloads; scores within float tolerance, and centres within 1e-12 degrees:
    edge (0.9) parses a geo payload's floats to within one ulp (1.21951953806861 comes back as
    1.2195195380686101), qdrant-client keeps them exactly."""
    assert [h.id for h in a] == [h.id for h in b]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    pa, pb = [msgspec.to_builtins(h.payload) for h in a], [msgspec.to_builtins(h.payload) for h in b]
    ca, cb = ([(c["lon"], c["lat"]) for c in (p.pop("centre") for p in ps)] for ps in (pa, pb))
    assert pa == pb
    assert np.allclose(np.array(ca).reshape(-1, 2), np.array(cb).reshape(-1, 2), rtol=0.0, atol=1e-12)


@pytest.mark.parametrize("kw", SEARCHES, ids=lambda kw: ",".join(kw) or "nofilter")
def test_search_is_congruent(pair: dict[str, ChipStore], chips: list[Chip], kw: dict[str, Any]) -> None:
    edge, local = pair["edge"], pair["qdrant-local"]
    queries = [*unit(np.random.default_rng(2), 3), chips[5].point.vector]
    for q in queries:
        hits = edge.search(q, limit=15, **kw)
        _same_hits(hits, local.search(q, limit=15, **kw))
        assert all(h.payload.scene_id != "s4" for h in hits)
    if kw.get("scene") != "s4":
        assert hits, "the search should match something, or it compares nothing"


@pytest.mark.parametrize("kw", [{}, {"bbox": (-12.0, -8.0, 12.0, 8.0)}, {"scene": "s1"}])
def test_browse_pages_are_congruent(pair: dict[str, ChipStore], kw: dict[str, Any]) -> None:
    """Page by page, the same ids in the same order and the same next-page tokens."""
    tokens: dict[str, str | None] = dict.fromkeys(ENGINES)
    pages = 0
    while True:
        got = {e: pair[e].browse(limit=9, offset=tokens[e], **kw) for e in ENGINES}
        (edge_hits, edge_next), (local_hits, local_next) = got["edge"], got["qdrant-local"]
        assert [h.id for h in edge_hits] == [h.id for h in local_hits] and edge_next == local_next
        _same_hits(edge_hits, local_hits)
        assert edge_hits == sorted(edge_hits, key=lambda h: h.id)  # id order
        pages += 1
        if edge_next is None:
            break
        tokens = dict.fromkeys(ENGINES, edge_next)
        assert pages < 100
    assert pages > 1


def test_counts_and_scene_states_are_congruent(pair: dict[str, ChipStore]) -> None:
    views: dict[str, Any] = {}
    for e, s in pair.items():
        views[e] = (
            s.count(),
            [s.count(f"s{i}") for i in range(5)],
            [x.id for x in s.list_scenes()],
            s.unfinished_scenes(),
            s.get_scene("s2"),
            s.get_scene("s4"),
        )
    assert views["edge"] == views["qdrant-local"]
    total, per_scene, listed, unfinished, s2, s4 = views["edge"]
    assert per_scene[4] == 0 and total == sum(per_scene)
    assert listed == ["s0", "s1", "s2", "s3"] and unfinished == {"s4": INGESTING}
    assert s2 == scene_info("s2") and s4 is None


def _both(tmp_path: Path, chips: list[Chip]) -> dict[str, ChipStore]:
    stores = {e: _open(e, tmp_path / e) for e in ENGINES}
    for s in stores.values():
        s.upsert([c.point for c in chips])
    return stores


def test_delete_and_reingest_are_congruent(tmp_path: Path, chips: list[Chip]) -> None:
    """The same sequence of scene operations leaves both engines in the same state at every step."""
    stores = _both(tmp_path, chips)
    q = chips[0].point.vector

    def state(s: ChipStore) -> Any:
        hits = s.search(q, limit=20)
        return (
            s.count(),
            [s.count(f"s{i}") for i in range(5)],
            [x.id for x in s.list_scenes()],
            s.unfinished_scenes(),
            [h.id for h in hits],
            [h.id for h in s.browse(limit=500)[0]],
        )

    steps: list[Callable[[ChipStore], Any]] = [
        lambda s: [s.put_scene(scene_info(f"s{i}")) for i in range(5)],
        lambda s: s.delete_scene("s1"),
        lambda s: s.delete_scene("s1"),  # idempotent
        lambda s: s.begin_scene("s2"),  # re-ingest: hidden, old chips gone
        lambda s: s.upsert([c.point for c in chips if c.point.payload.scene_id == "s2"][:7]),
        lambda s: s.put_scene(scene_info("s2")),
        # A deletion that stopped half way: the record says deleting, the chips are still there.
        lambda s: s._scene_put(scene_point_id("s3"), {"id": "s3", STATE_KEY: DELETING}),
    ]
    try:
        for i, step in enumerate(steps):
            results = {e: step(s) for e, s in stores.items()}
            assert results["edge"] == results["qdrant-local"], i
            assert state(stores["edge"]) == state(stores["qdrant-local"]), i
        final = state(stores["edge"])
        assert final[3] == {"s3": DELETING} and final[1][1] == 0 and final[1][2] == 7 and final[1][3] == 0
        assert final[2] == ["s0", "s2", "s4"]
    finally:
        for s in stores.values():
            s.close()


def test_bbox_exactness_with_a_grown_margin_is_congruent(tmp_path: Path) -> None:
    """A large footprint added later grows the margin; both engines then return the same exact hits."""
    rng = np.random.default_rng(7)
    v = unit(rng, 40)
    small = [make_chip(i, "m", float(rng.uniform(-5, 5)), float(rng.uniform(-5, 5)), 0.05, v[i]) for i in range(38)]
    stores = _both(tmp_path, small)
    try:
        big = [make_chip(100, "m", 20.0, 0.0, 2.0, v[38]), make_chip(101, "m", -179.5, 0.0, 1.0, v[39])]
        for s in stores.values():
            s.upsert([c.point for c in big])
        for bbox in [(17.5, -1.0, 18.5, 1.0), (179.0, -1.0, 180.0, 1.0), (-2.0, -2.0, 2.0, 2.0)]:
            for q in v[[0, 38, 39]]:
                _same_hits(stores["edge"].search(q, bbox=bbox), stores["qdrant-local"].search(q, bbox=bbox))
        assert [h.id for h in stores["edge"].search(v[38], bbox=(17.5, -1.0, 18.5, 1.0))] == [big[0].point.id]
    finally:
        for s in stores.values():
            s.close()
