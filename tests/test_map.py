"""The web map at /map.

Fast tests (no browser, no models): the page and its assets through Litestar's test client, mounted at
the root and under a prefix. Browser tests (slow): a real server on 127.0.0.1 over a store ingested here
with `geosearch ingest`, the API mounted at /geo, driven by headless Chromium (the system's, Debian
package `chromium`) through Playwright. They save screenshots under the pytest tmp dir and, when
docs/map.png is missing or GEOSEARCH_UPDATE_DOCS=1, refresh docs/map.png for the README.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from support import free_port

from geosearch.api import GeoSearchMount
from geosearch.api.routes import make_router
from geosearch.api.web import WEB_DIR, endpoint_flags, make_map_router

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "scenes"
MAP_SCENES = ("rasterio/cogeo.tif", "rasterio/RGB.byte.tif")
"""An aerial scene (0.6 m, EPSG:3857) the browser tests zoom into, and a Landsat scene far away."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1000, "height": 640}
DOCS_SCREENSHOT = ROOT / "docs" / "map.png"
DOCS_SCREENSHOT_MAX_BYTES = 300_000
LOCAL_REF = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
ABSOLUTE_URL = re.compile(r"""\b(?:https?:)?//[a-z0-9.-]+""", re.IGNORECASE)


# -- fast: the page and its assets ------------------------------------------------------------------------------
def fake_engine() -> Any:
    """Just enough of an Engine for the mount's startup; the page itself never touches the engine."""
    return SimpleNamespace(store=SimpleNamespace(warm=lambda: None), embedder=None, close=lambda: None)


@pytest.mark.parametrize("mount", ["/", "/geo"])
def test_page_references_only_its_own_assets(mount: str) -> None:
    app = Litestar(plugins=[GeoSearchMount(fake_engine(), path=mount)])
    prefix = mount.rstrip("/")
    with TestClient(app) as client:
        response = client.get(f"{prefix}/map")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        refs = [ref for ref in LOCAL_REF.findall(html) if not ref.startswith("data:")]
        assert refs, "the page loads its scripts and styles"
        for ref in refs:
            assert not ABSOLUTE_URL.match(ref) and not ref.startswith("/"), f"{ref}: not relative to the page"
            asset = client.get(f"{prefix}/{ref}")  # relative to {mount}/map: a sibling path
            assert asset.status_code == 200, ref
        config = json.loads(re.search(r'id="geosearch-config">([^<]*)<', html).group(1))  # type: ignore[union-attr]
        assert config == {"captionTiles": True, "sceneTiles": True}
        redirect = client.get(f"{prefix}/map/?q=road", follow_redirects=False)
        assert redirect.status_code == 308 and redirect.headers["location"] == "../map?q=road"
        assert client.get(f"{prefix}/map/static/%2E%2E/%2E%2E/api/web.py").status_code == 404


def test_page_code_loads_nothing_from_other_hosts() -> None:
    """Our own page code has no absolute URLs at all; the imports between modules are relative."""
    for path in WEB_DIR.iterdir():
        if path.suffix in {".html", ".js", ".css"} and not path.name.startswith("maplibre-gl"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"https?://", text), path.name
            for module in re.findall(r"""from\s+['"]([^'"]+)['"]""", text):
                assert module.startswith("./") and (WEB_DIR / module).is_file(), (path.name, module)
    vendored = (WEB_DIR / "maplibre-gl.js").read_text(encoding="utf-8")[:300]
    assert "MapLibre GL JS" in vendored and "3-Clause BSD" in vendored


def test_page_without_tile_routes_falls_back() -> None:
    """An app without the tile routes: the page is told so and never requests them."""
    app = Litestar(route_handlers=[make_router("/geo"), make_map_router("/geo")])
    assert endpoint_flags(app.routes, "/geo") == {"captionTiles": False, "sceneTiles": False}
    with TestClient(app) as client:
        assert '{"captionTiles": false, "sceneTiles": false}' in client.get("/geo/map").text


# -- slow: a real server and headless Chromium -----------------------------------------------------------------
SERVER = """
import sys
import uvicorn
from litestar import Litestar
from geosearch.api import GeoSearchMount
from geosearch.config import Config

store, port = sys.argv[1], int(sys.argv[2])
app = Litestar(plugins=[GeoSearchMount(config=Config.from_env(store=store, captioner="nearest-caption"), path="/geo")])
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def chromium_path() -> str:
    found = os.environ.get("GEOSEARCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium: install it with `apt-get install -y chromium` (or set GEOSEARCH_CHROMIUM)")
    return found


def wait_for_health(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"the server exited with {server.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the server did not answer {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server over two ingested scenes, the API mounted at /geo; yields its base URL."""
    work = tmp_path_factory.mktemp("map_server")
    store = work / "store"
    # cwd outside the checkout, so `geosearch` imports the installed package.
    geosearch = [sys.executable, "-m", "geosearch"]
    ingest = [*geosearch, "ingest", "--store", str(store), "--captioner", "nearest-caption", "--quiet"]
    subprocess.run([*ingest, *(str(SCENES / name) for name in MAP_SCENES)], cwd=work, check=True, timeout=900)
    port = free_port()
    log_path = work / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(store), str(port)], cwd=work, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}/geo"
        wait_for_health(f"{base}/health", process, log_path)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


class PageProblems:
    """Console errors, uncaught exceptions, failed requests and HTTP errors seen by a page."""

    def __init__(self, page: Any) -> None:
        self.items: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.items.append(f"exception: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.items.append(f"console: {message.text}")

    def _failed(self, request: Any) -> None:
        # Cancelled requests (tiles the map no longer needs, or a navigation) are not failures.
        if request.failure != "net::ERR_ABORTED":
            self.items.append(f"failed: {request.url} {request.failure}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.items.append(f"HTTP {response.status}: {response.url}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless system Chromium through Playwright (never `playwright install`); skips when there is none.
    Tests list it before `server`, so a missing browser skips before the costly ingest."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as error:  # a broken or foreign browser: say why, do not fail the suite
            pytest.skip(f"cannot start Chromium at {executable}: {error}")
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def map_call(page: Any, expression: str, arg: Any = None) -> Any:
    """Evaluate `expression` with `map` (the MapLibre map) and `arg` in scope."""
    return page.evaluate(f"(arg) => {{ const map = window.geosearch.map; return {expression}; }}", arg)


def wait_state(page: Any, *states: str) -> None:
    page.wait_for_function("(states) => states.includes(document.body.dataset.state)", arg=list(states))


def wait_idle(page: Any) -> None:
    """Until the map has stopped moving and has drawn every loaded source."""
    page.wait_for_function("() => { const m = window.geosearch.map; return !m.isMoving() && m.loaded(); }")


def bounds(page: Any) -> list[float]:
    return map_call(page, "map.getBounds().toArray().flat()")  # type: ignore[no-any-return]


def footprint_bbox(feature: dict[str, Any]) -> list[float]:
    xs = [x for x, _ in feature["geometry"]["coordinates"][0]]
    ys = [y for _, y in feature["geometry"]["coordinates"][0]]
    return [min(xs), min(ys), max(xs), max(ys)]


def contains(outer: list[float], inner: list[float]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def intersects(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def list_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#hits li", "items => items.map(i => i.dataset.id)")  # type: ignore[no-any-return]


def query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def aerial_view(server: str) -> str:
    """`view=` param centred on the aerial scene at a zoom where its imagery shows."""
    with urllib.request.urlopen(f"{server}/scenes") as response:
        scenes = json.load(response)["scenes"]
    w, s, e, n = next(sc["bbox"] for sc in scenes if sc["path"].endswith("cogeo.tif"))
    return f"{(w + e) / 2:.6f},{(s + n) / 2:.6f},16.3"


def save_screenshot(page: Any, path: Path) -> None:
    """A screenshot at `path`; also docs/map.png (palette PNG, at most 300 KB) when missing or asked for."""
    page.screenshot(path=str(path))
    if DOCS_SCREENSHOT.exists() and os.environ.get("GEOSEARCH_UPDATE_DOCS") != "1":
        return
    from PIL import Image

    image = Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    assert buffer.tell() <= DOCS_SCREENSHOT_MAX_BYTES, f"screenshot is {buffer.tell()} bytes"
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    DOCS_SCREENSHOT.write_bytes(buffer.getvalue())


@pytest.mark.slow
def test_search_zoom_more_like_this_and_share(browser: Any, server: str, page: Any, tmp_path: Path) -> None:
    """Search in view, hits in the list and on the map, zoom to a hit, more like this, share and restore."""
    problems = PageProblems(page)
    page.goto(f"{server}/map")
    wait_state(page, "ready")
    assert "view" in query(page), "the initial view (fitted to the scenes) is in the URL"
    assert map_call(page, "map.getStyle().sources['captions'].type") == "vector"
    assert sum(1 for s in map_call(page, "Object.keys(map.getStyle().sources)") if s.startswith("scene-")) == 2

    # Pan to the aerial scene as a user would, then search inside the view.
    page.goto(f"{server}/map?view={aerial_view(server)}")
    wait_state(page, "ready")
    wait_idle(page)
    view = [float(v) for v in re.split(r"[,\s]", map_call(page, "map.getBounds().toArray().flat().join(',')"))]
    page.fill("#q", "a bridge over a river")
    page.press("#q", "Enter")
    wait_state(page, "results")
    hits = page.evaluate("window.geosearch.hits")
    ids = list_ids(page)
    assert 0 < len(ids) <= 20 and ids == [h["id"] for h in hits]
    scores = [h["properties"]["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(intersects(view, footprint_bbox(h)) for h in hits), "the search is inside the view"
    assert query(page)["q"] == ["a bridge over a river"]
    page.wait_for_function("() => window.geosearch.map.queryRenderedFeatures({layers: ['hits-fill']}).length > 0")
    rendered = set(map_call(page, "map.queryRenderedFeatures({layers: ['hits-fill']}).map(f => f.properties.id)"))
    assert rendered and rendered <= set(ids)
    assert page.locator("#hits li img.thumb").first.evaluate("img => img.complete && img.naturalWidth > 0")
    assert len(page.locator(".hit-marker").all()) == len(ids)
    search_url = page.url
    wait_idle(page)
    save_screenshot(page, tmp_path / "map-search.png")

    # Click a hit: the map zooms to it.
    before = bounds(page)
    target = hits[2] if len(hits) > 2 else hits[0]
    page.locator(f'#hits li[data-id="{target["id"]}"] .hit-main').click()
    page.wait_for_function("(b) => window.geosearch.map.getBounds().toArray().flat().join() !== b.join()", arg=before)
    wait_idle(page)
    after = bounds(page)
    assert after != before
    assert contains(after, footprint_bbox(target)), (after, footprint_bbox(target))
    assert page.evaluate("window.geosearch.selected") == target["id"]
    assert "selected" in (page.locator(f'#hits li[data-id="{target["id"]}"]').get_attribute("class") or "")
    page.screenshot(path=str(tmp_path / "map-zoomed.png"))

    # "More like this" on the first hit: a new list, the liked chip itself left out; the URL says so.
    liked = ids[0]
    page.locator(f'#hits li[data-id="{liked}"] .like').click()
    page.wait_for_function("(liked) => new URLSearchParams(location.search).get('like') === liked", arg=liked)
    wait_state(page, "results")
    like_ids = list_ids(page)
    assert like_ids and like_ids != ids and liked not in like_ids
    assert "q" not in query(page)
    wait_idle(page)
    view_before_reload = query(page)["view"][0]

    # Reload: the view and the "more like this" list come back.
    page.reload()
    wait_state(page, "results")
    assert query(page)["view"][0] == view_before_reload
    assert list_ids(page) == like_ids

    # A shared search URL restores the view and the same hits.
    page.goto(search_url)
    wait_state(page, "results")
    assert page.input_value("#q") == "a bridge over a river"
    assert list_ids(page) == ids
    assert problems.items == []


@pytest.mark.slow
def test_caption_overlay_toggle_and_popup(browser: Any, server: str, page: Any, tmp_path: Path) -> None:
    """The caption overlay's vector tiles draw, a click shows a caption, and hiding it is kept in the URL."""
    problems = PageProblems(page)
    page.goto(f"{server}/map?view={aerial_view(server)}")
    wait_state(page, "ready")
    page.wait_for_function("() => window.geosearch.map.queryRenderedFeatures({layers: ['captions-fill']}).length > 0")
    # Clicking a chip of the overlay shows its caption and thumbnail.
    canvas = page.locator("#map canvas").bounding_box()
    page.mouse.click(canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2)
    popup = page.locator(".maplibregl-popup .popup-caption")
    popup.wait_for()
    assert popup.inner_text().strip()
    page.screenshot(path=str(tmp_path / "map-popup.png"))
    # Hide the overlay: it is hidden on the map and in the URL, and stays hidden on reload.
    page.uncheck("#captions-toggle")
    assert map_call(page, "map.getLayoutProperty('captions-fill', 'visibility')") == "none"
    assert query(page)["captions"] == ["off"]
    page.reload()
    wait_state(page, "ready")
    assert not page.is_checked("#captions-toggle")
    assert map_call(page, "map.getLayoutProperty('captions-fill', 'visibility')") == "none"
    assert problems.items == []
