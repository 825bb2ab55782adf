"""Hostile or careless HTTP clients: write auth, size/length/limit/bbox/time limits, path ids,
rate limit, CORS, and many concurrent clients against one embedded store.

Fast tests run the tiny random CLIP (conftest `tiny_clip_spec`) over two real sample scenes; the
concurrency test serves them with uvicorn on 127.0.0.1. No mocks: the slow model below is a real
`Embedder` plugin that sleeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from support import serving

from geosearch import load_embedder
from geosearch.api import create_app
from geosearch.api.errors import STATUS, PayloadTooLarge, RateLimited, RequestTimeout, Unauthorized
from geosearch.api.limits import MAX_BODY_BYTES, MAX_QUERY_CHARS
from geosearch.api.security import READ_ONLY, is_loopback, serve_config
from geosearch.config import DEFAULT_REQUEST_TIMEOUT, Config
from geosearch.engine import Engine
from geosearch.errors import InvalidInput
from geosearch.ingest import IngestOptions, ingest
from geosearch.plugins.base import Embedder
from geosearch.store import open_store

SCENE_FILES = ("rasterio/cogeo.tif", "rio-tiler/mosaic_cog3.tif")
KEY = "correct horse battery staple"


@pytest.fixture(scope="module")
def tiny_embedder(tiny_clip_spec: str) -> Embedder:
    return load_embedder(tiny_clip_spec, device="cpu")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Embedder, scenes_dir: Path) -> Path:
    """A store with the two sample scenes (no captions), written once and reopened by each engine."""
    path = tmp_path_factory.mktemp("security_store")
    with Engine(tiny_embedder, open_store(path, model_id=tiny_embedder.model_id, dim=tiny_embedder.dim)) as engine:
        report = ingest(engine, [scenes_dir / name for name in SCENE_FILES], IngestOptions(captions=False))
        assert report.ok, [s.error for s in report.scenes]
    return path


@pytest.fixture(scope="module")
def engine(store_dir: Path, tiny_embedder: Embedder) -> Iterator[Engine]:
    with Engine(tiny_embedder, open_store(store_dir, model_id=tiny_embedder.model_id, dim=tiny_embedder.dim)) as e:
        yield e


def client_for(engine: Engine, **config: Any) -> TestClient[Any]:
    return TestClient(create_app(engine, Config(**config)))


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient[Any]]:
    with client_for(engine) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keyed(engine: Engine) -> Iterator[TestClient[Any]]:
    with client_for(engine, api_key=KEY) as test_client:
        yield test_client


def reason(response: httpx.Response) -> str:
    body = response.json()
    assert body["status_code"] == response.status_code
    assert isinstance(body["detail"], str) and body["detail"]
    return str(body["detail"]) + str(body.get("extra", ""))


# -- 1. writes need the key; reads stay open --------------------------------------------------------------
def test_delete_needs_the_api_key_reads_stay_open(keyed: TestClient[Any], engine: Engine) -> None:
    unknown = uuid.uuid4().hex  # a well-formed scene id that names nothing: past the guard it is a 404
    response = keyed.delete(f"/scenes/{unknown}")
    assert response.status_code == 401
    assert "X-API-Key" in reason(response)
    assert response.headers["www-authenticate"].startswith("Bearer")
    for headers in ({"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
        response = keyed.delete(f"/scenes/{unknown}", headers=headers)
        assert response.status_code == 401 and "not valid" in reason(response)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert keyed.delete(f"/scenes/{unknown}", headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer  {KEY}"}):
        response = keyed.delete(f"/scenes/{unknown}", headers=headers)
        assert response.status_code == 404 and "no scene" in reason(response)
    # Reads, POST /search included, need nothing.
    assert keyed.get("/scenes").status_code == 200
    assert keyed.get("/search", params={"q": "roofs"}).status_code == 200
    assert keyed.post("/search", json={"q": "roofs"}).status_code == 200
    assert keyed.get("/ogc/collections/chips/items").status_code == 200
    assert len(engine.scenes()) == len(SCENE_FILES)


@pytest.mark.slow  # ingests a scene of its own (seconds)
def test_delete_with_the_key_deletes(tmp_path: Path, tiny_embedder: Embedder, scenes_dir: Path) -> None:
    store = open_store(tmp_path / "store", model_id=tiny_embedder.model_id, dim=tiny_embedder.dim)
    with Engine(tiny_embedder, store) as engine:
        report = ingest(engine, [scenes_dir / "rio-tiler/mosaic_cog3.tif"], IngestOptions(captions=False))
        scene_id = report.scenes[0].scene_id
        with client_for(engine, api_key=KEY) as keyed:
            assert keyed.delete(f"/scenes/{scene_id}").status_code == 401
            assert engine.scenes()  # still there
            response = keyed.delete(f"/scenes/{scene_id}", headers={"X-API-Key": KEY})
            assert response.status_code == 200 and response.json() == {"scene": scene_id, "deleted_chips": report.chips}
            assert engine.scenes() == []


def test_every_write_route_is_guarded(keyed: TestClient[Any]) -> None:
    """Any route whose method can change something, not only today's DELETE, answers 401 without the key."""
    writes = []
    for route in keyed.app.routes:
        for handler in getattr(route, "route_handlers", []):
            methods = set(getattr(handler, "http_methods", ())) - {"GET", "HEAD", "OPTIONS"}
            if methods and not handler.opt.get(READ_ONLY):
                writes += [(method, route.path) for method in methods]
    assert ("DELETE", "/scenes/{scene_id:str}") in writes
    for method, path in writes:
        url = path.replace("{scene_id:str}", uuid.uuid4().hex).replace(":str}", "}").replace("{", "x").replace("}", "")
        assert keyed.request(method, url).status_code == 401, (method, path)


def test_no_key_configured_leaves_writes_open(client: TestClient[Any]) -> None:
    response = client.delete(f"/scenes/{uuid.uuid4().hex}")
    assert response.status_code == 404  # not 401: a loopback server without a key trusts its host


@pytest.mark.slow  # a `geosearch` process (about a second)
def test_serve_refuses_a_public_host_without_a_key(tmp_path: Path) -> None:
    geosearch = Path(sys.executable).with_name("geosearch")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOSEARCH_", "QDRANT_"))}
    run = subprocess.run(
        [str(geosearch), "serve", "--host", "0.0.0.0", "--store", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "GEOSEARCH_API_KEY" in lines[0] and "--insecure" in lines[0], run.stderr
    assert not (tmp_path / "store").exists()  # refused before opening anything


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_host_policy(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        assert serve_config(Config(), host).cors_origins == ("*",)
    else:
        with pytest.raises(InvalidInput, match="GEOSEARCH_API_KEY"):
            serve_config(Config(), host)
        assert serve_config(Config(api_key=KEY), host).cors_origins == ()  # no cross-origin access by default
        assert serve_config(Config(), host, insecure=True).cors_origins == ()
    configured = serve_config(Config(api_key=KEY, cors_origins=("https://maps.example",)), host)
    assert configured.cors_origins == ("https://maps.example",)


def test_api_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GEOSEARCH_API_KEY", "GEOSEARCH_RATE_LIMIT", "GEOSEARCH_CORS_ORIGINS", "GEOSEARCH_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    default = Config.from_env()
    assert (default.api_key, default.rate_limit, default.cors_origins) == (None, None, None)
    assert default.request_timeout == DEFAULT_REQUEST_TIMEOUT
    monkeypatch.setenv("GEOSEARCH_API_KEY", KEY)
    monkeypatch.setenv("GEOSEARCH_RATE_LIMIT", "600/minute")
    monkeypatch.setenv("GEOSEARCH_CORS_ORIGINS", "https://a.example, https://b.example/")
    monkeypatch.setenv("GEOSEARCH_REQUEST_TIMEOUT", "2.5")
    config = Config.from_env()
    assert config.api_key == KEY and config.rate_limit == ("minute", 600) and config.request_timeout == 2.5
    assert config.cors_origins == ("https://a.example", "https://b.example")
    monkeypatch.setenv("GEOSEARCH_CORS_ORIGINS", "none")
    assert Config.from_env().cors_origins == ()
    for name, bad in [
        ("GEOSEARCH_RATE_LIMIT", "600"),
        ("GEOSEARCH_RATE_LIMIT", "0/minute"),
        ("GEOSEARCH_RATE_LIMIT", "ten/minute"),
        ("GEOSEARCH_RATE_LIMIT", "5/fortnight"),
        ("GEOSEARCH_REQUEST_TIMEOUT", "0"),
        ("GEOSEARCH_REQUEST_TIMEOUT", "nan"),
        ("GEOSEARCH_REQUEST_TIMEOUT", "soon"),
    ]:
        monkeypatch.setenv(name, bad)
        with pytest.raises(InvalidInput, match=name):
            Config.from_env()
        monkeypatch.delenv(name)


# -- 2. limits --------------------------------------------------------------------------------------------
def test_body_over_the_limit_is_413(client: TestClient[Any]) -> None:
    padding = "x" * MAX_BODY_BYTES
    response = client.post("/search", json={"q": "roofs", "scene": padding})
    assert response.status_code == 413
    assert f"{MAX_BODY_BYTES} bytes" in reason(response)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"q": "roofs", "scene": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    response = client.post("/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "larger than" in reason(response)
    assert client.post("/search", json={"q": "roofs", "scene": "x" * 1000}).status_code == 200


@pytest.mark.parametrize(
    "url",
    ["/search?q={q}", "/ogc/collections/chips/items?q={q}", "/tiles/0/0/0.mvt?q={q}", "/tiles/tilejson.json?q={q}"],
)
def test_query_text_length_is_capped(client: TestClient[Any], url: str) -> None:
    assert client.get(url.format(q="a" * MAX_QUERY_CHARS)).status_code == 200
    response = client.get(url.format(q="a" * (MAX_QUERY_CHARS + 1)))
    assert response.status_code == 400 and f"longer than {MAX_QUERY_CHARS}" in reason(response)


def test_query_text_length_is_capped_in_post(client: TestClient[Any]) -> None:
    response = client.post("/search", json={"q": "a" * (MAX_QUERY_CHARS + 1)})
    assert response.status_code == 400 and f"longer than {MAX_QUERY_CHARS}" in reason(response)


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/search?q=roofs&limit=0", 400, "at least 1"),
        ("/search?q=roofs&limit=-5", 400, "at least 1"),
        ("/captions?limit=0", 400, "at least 1"),
        ("/ogc/collections/chips/items?limit=0", 400, "limit"),
        ("/ogc/collections/chips/items?limit=10001", 400, "limit"),
        ("/ogc/collections/chips/items?q=roofs&limit=10001", 400, "limit"),
        ("/tiles/0/0/0.mvt?limit=0", 400, "between 1 and 10000"),
        ("/tiles/0/0/0.mvt?q=roofs&limit=10001", 400, "between 1 and 10000"),
        ("/tiles/tilejson.json?limit=10001", 400, "between 1 and 10000"),
    ],
)
def test_limit_is_bounded_on_every_route(client: TestClient[Any], url: str, status: int, words: str) -> None:
    response = client.get(url)
    assert response.status_code == status, response.text[:300]
    assert words in reason(response)


def test_search_and_captions_clamp_limit_to_1000(client: TestClient[Any], engine: Engine) -> None:
    chips = engine.store.count()
    assert len(client.get("/search", params={"q": "roofs", "limit": 10**6}).json()["features"]) == min(chips, 1000)
    assert len(client.post("/search", json={"q": "roofs", "limit": 10**6}).json()["features"]) == min(chips, 1000)
    assert len(client.get("/captions", params={"limit": 10**6}).json()["features"]) == min(chips, 1000)
    assert len(client.get("/search", params={"q": "roofs", "limit": 10**30}).json()["features"]) == min(chips, 1000)


BAD_BOXES = [
    "0,0,nan,1,1,1",
    "nan,0,1,1",
    "0,0,1,inf",
    "-inf,0,1,1",
    "0,-91,1,1",
    "181,0,182,1",
    "0,10,1,5",
    "1,2,3",
    "a,b,c,d",
]
ITEMS = "/ogc/collections/chips/items"
BBOX_ROUTES = ["/search?q=roofs&", "/captions?", f"{ITEMS}?", f"{ITEMS}?q=roofs&"]


@pytest.mark.parametrize("bbox", BAD_BOXES)
@pytest.mark.parametrize("route", BBOX_ROUTES)
def test_bbox_is_sane_on_every_route(client: TestClient[Any], route: str, bbox: str) -> None:
    response = client.get(f"{route}bbox={bbox}")
    assert response.status_code == 400, response.text[:300]
    assert "bbox" in reason(response)


@pytest.mark.parametrize("bbox", [[float("nan"), 0, 1, 1], [0, -91, 1, 1], [1e999, 0, 1, 1], [0, 0, 1], ["a", 0, 1, 1]])
def test_bbox_is_sane_in_post(client: TestClient[Any], bbox: list[Any]) -> None:
    import json

    body = json.dumps({"q": "roofs", "bbox": bbox})  # NaN and Infinity as Python writes them: not JSON
    response = client.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text[:300]
    reason(response)


@pytest.mark.parametrize(
    "url",
    ["/tiles/25/0/0.mvt", "/tiles/1/2/0.mvt", "/tiles/-1/0/0.mvt", "/tiles/0/0/0x.mvt", "/tiles/1e9/0/0.mvt"],
)
def test_tiles_outside_the_grid_are_400(client: TestClient[Any], url: str) -> None:
    response = client.get(url)
    assert response.status_code == 400, response.text[:300]
    reason(response)


class SlowEmbedder:
    """A real `Embedder` plugin around another one whose text encoder takes `delay` seconds: a model on
    an overloaded machine, or a hung one. `busy` counts the encodings still running."""

    def __init__(self, inner: Embedder, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.busy = 0
        self._lock = threading.Lock()

    def encode_images(self, images: Any) -> Any:
        return self.inner.encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> Any:
        with self._lock:
            self.busy += 1
        try:
            time.sleep(self.delay)
            return self.inner.encode_texts(texts)
        finally:
            with self._lock:
                self.busy -= 1


@pytest.mark.parametrize(
    "url",
    [
        "/search?q={}",
        pytest.param("/ogc/collections/chips/items?q={}", marks=pytest.mark.slow),
        pytest.param("/tiles/1/1/0.mvt?q={}", marks=pytest.mark.slow),
    ],
)
def test_slow_model_inference_is_503_at_the_deadline(engine: Engine, tiny_embedder: Embedder, url: str) -> None:
    slow = SlowEmbedder(tiny_embedder, delay=0.8)
    assert isinstance(slow, Embedder)
    slow_engine = Engine(slow, engine.store)  # the module's store (not closed here: it is the module's)
    with client_for(slow_engine, request_timeout=0.2) as c:
        start = time.monotonic()
        response = c.get(url.format("a slow query"))
        took = time.monotonic() - start
        assert response.status_code == 503, response.text[:300]
        assert "longer than 0.2 s" in reason(response) and response.headers["retry-after"] == "1"
        assert took < 0.7, took  # at the deadline, not when the model is done
        # Routes that run no model still answer at once, and so do searches without text.
        like = engine.store.browse(limit=1)[0][0].id
        assert c.post("/search", json={"like": like, "limit": 3}).status_code == 200
        assert c.get("/scenes").status_code == 200
    deadline = time.monotonic() + 10
    while slow.busy:  # the abandoned encoding finishes on its own
        assert time.monotonic() < deadline
        time.sleep(0.02)


# -- 4. ids in paths never name files -------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "/scenes/..",
        "/scenes/%2e%2e",
        "/scenes/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/scenes/..%2F..%2Fetc%2Fpasswd/tilejson.json",
        "/scenes/%2e%2e/tiles/0/0/0.png",
        "/scenes/%2Fetc%2Fpasswd/tiles/0/0/0.png",
        "/chips/..%2F..%2Fetc%2Fpasswd.png",
        "/chips/%2e%2e.png",
        "/chips/%2Fetc%2Fhosts.png",
        "/ogc/collections/chips/items/%2e%2e%2fetc%2fpasswd",
        "/map/static/..%2F..%2Fapi%2Fsecurity.py",  # the one route that serves files: the map's own, only
        "/map/static/%2e%2e/%2e%2e/cli.py",
        "/map/static/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    ],
)
def test_ids_in_paths_cannot_name_files(client: TestClient[Any], url: str) -> None:
    response = client.get(url)
    assert 400 <= response.status_code < 500, (url, response.status_code)
    assert response.headers["content-type"].startswith("application/json")
    assert "root:" not in response.text


def test_no_route_takes_a_file_path(client: TestClient[Any]) -> None:
    schema = client.get("/schema/openapi.json").json()
    names = {
        parameter["name"]
        for operations in schema["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
    }
    assert not {n for n in names if "path" in n.lower() or "file" in n.lower()} - {"chip_file", "y_file"}
    assert schema["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]


# -- 5. rate limit, CORS -------------------------------------------------------------------------------
def test_rate_limit_is_429_with_retry_after(engine: Engine) -> None:
    with client_for(engine, rate_limit=("minute", 3)) as c:
        first = c.get("/health")
        assert first.status_code == 200 and first.headers["ratelimit-limit"] == "3"
        assert [c.get("/scenes").status_code for _ in range(2)] == [200, 200]
        response = c.get("/search", params={"q": "roofs"})
        assert response.status_code == 429
        assert "too many requests" in reason(response)
        assert 1 <= int(response.headers["retry-after"]) <= 60
    with client_for(engine) as unlimited:  # off unless configured
        assert all(unlimited.get("/health").status_code == 200 for _ in range(10))
        assert "ratelimit-limit" not in unlimited.get("/health").headers


def preflight(c: TestClient[Any], origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "DELETE",
        "Access-Control-Request-Headers": "x-api-key",
    }
    return c.options(f"/scenes/{uuid.uuid4().hex}", headers=headers)


def test_cors_origins_are_configurable(engine: Engine) -> None:
    with client_for(engine, cors_origins=("https://maps.example",)) as c:
        allowed = preflight(c, "https://maps.example")
        assert allowed.status_code in (200, 204)
        assert allowed.headers["access-control-allow-origin"] == "https://maps.example"
        assert "DELETE" in allowed.headers["access-control-allow-methods"]
        assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
        refused = preflight(c, "https://evil.example")
        assert "access-control-allow-origin" not in refused.headers
        simple = c.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
    with client_for(engine, cors_origins=()) as closed:  # what serve_config picks on a public host
        assert "access-control-allow-origin" not in preflight(closed, "https://maps.example").headers
        assert "access-control-allow-origin" not in closed.get("/health", headers={"Origin": "https://a.b"}).headers
    with client_for(engine, cors_origins=None) as default:  # the mount's default, and a loopback server's
        response = preflight(default, "http://localhost:5173")
        assert response.headers["access-control-allow-origin"] in ("*", "http://localhost:5173")


def test_refusals_are_one_table() -> None:
    assert [STATUS[c] for c in (Unauthorized, PayloadTooLarge, RateLimited, RequestTimeout)] == [401, 413, 429, 503]


# -- 3. concurrent clients ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[str]:
    """The app served by uvicorn on 127.0.0.1 in a thread."""
    with serving(create_app(engine, Config())) as url:
        yield url


QUERIES = [
    "roofs",
    "a road",
    "trees and fields",
    "water",
    "buildings in a town",
    "a parking lot",
    "bare soil",
    "a river bend",
]


def _answer(http: httpx.Client, i: int) -> tuple[int, list[tuple[str, float]]]:
    q = QUERIES[i % len(QUERIES)]
    if i % 3 == 2:
        response = http.post("/search", json={"q": f"{q} {i // len(QUERIES)}", "limit": 20})
    else:
        response = http.get("/search", params={"q": f"{q} {i // len(QUERIES)}", "limit": 20})
    response.raise_for_status()
    return i, [(f["id"], round(f["properties"]["score"], 5)) for f in response.json()["features"]]


@pytest.mark.parametrize("clients", [8, pytest.param(32, marks=pytest.mark.slow)])
def test_concurrent_clients_get_the_sequential_results(engine: Engine, server: str, clients: int) -> None:
    """`clients` threads, each with its own connection, send 3 searches each (texts the server has not
    seen, so the model and the store's lock both run concurrently); every answer equals the one the
    engine gives sequentially, in process."""
    from geosearch.schemas import SearchQuery

    requests = range(1000 * clients, 1000 * clients + 3 * clients)  # texts new to this server
    reference = Engine(engine.embedder, engine.store)  # its own query cache; the store stays open
    expected = {
        i: [
            (h.id, round(h.score or 0.0, 5))
            for h in reference.search(SearchQuery(q=f"{QUERIES[i % len(QUERIES)]} {i // len(QUERIES)}", limit=20))
        ]
        for i in requests
    }
    assert all(len(hits) == 20 for hits in expected.values())
    local = threading.local()
    clients_made: list[httpx.Client] = []

    def one(i: int) -> tuple[int, list[tuple[str, float]]]:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=server, timeout=60)
            clients_made.append(local.http)
        return _answer(local.http, i)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        answers = dict(pool.map(one, requests))
    for http in clients_made:
        http.close()
    assert len(clients_made) > 1
    assert answers == expected
