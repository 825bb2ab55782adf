"""The `geosearch` command as a user runs it, and a real `geosearch serve` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support import GEOSEARCH, free_port

pytestmark = pytest.mark.slow  # every test runs the installed command on the real default models




def run(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GEOSEARCH_STORE": str(store)}
    env.pop("QDRANT_URL", None)
    return subprocess.run(
        [GEOSEARCH, *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory, scenes_dir) -> Path:  # type: ignore[no-untyped-def]
    store = tmp_path_factory.mktemp("cli") / "store"
    scenes = [str(scenes_dir / "rasterio" / "cogeo.tif"), str(scenes_dir / "rio-tiler" / "cog_rgb.tif")]
    result = run("ingest", *scenes, "--quiet", store=store)
    assert result.returncode == 0, result.stderr
    assert "2 scenes ingested" in result.stdout
    again = run("ingest", *scenes, "--quiet", store=store)
    assert again.returncode == 0 and "2 already in store" in again.stdout
    return store


def test_cli_search_prints_hits_and_geojson(cli_store: Path) -> None:
    result = run("search", "a mountain road", "--limit", "3", store=cli_store)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 3 and lines[0].lstrip().startswith("1.")
    geojson = run("search", "a mountain road", "--limit", "2", "--geojson", store=cli_store)
    body = json.loads(geojson.stdout)
    assert body["type"] == "FeatureCollection" and len(body["features"]) == 2


def test_cli_scenes_and_delete(cli_store: Path, tmp_path: Path, scenes_dir: Path) -> None:
    store = tmp_path / "store"
    scene = str(scenes_dir / "rio-tiler" / "cog_rgb.tif")
    assert run("ingest", scene, "--quiet", "--no-captions", store=store).returncode == 0
    scenes = json.loads(run("scenes", "--json", store=store).stdout)
    assert len(scenes) == 1
    deleted = run("delete", scenes[0]["id"], store=store)
    assert deleted.returncode == 0 and "deleted scene" in deleted.stdout
    assert json.loads(run("scenes", "--json", store=store).stdout) == []


def test_store_flag_beats_qdrant_url_from_the_environment(cli_store: Path) -> None:
    """One precedence: flag > environment > default. QDRANT_URL points at a dead port here, so only
    the store named by --store can answer."""
    env = {**os.environ, "QDRANT_URL": "http://127.0.0.1:9"}
    env.pop("GEOSEARCH_STORE", None)
    flag = subprocess.run(
        [GEOSEARCH, "scenes", "--json", "--store", str(cli_store)], capture_output=True, text=True, env=env, timeout=600
    )
    assert flag.returncode == 0, flag.stderr
    assert len(json.loads(flag.stdout)) == 2
    # Without the flag the environment's server is used (and refused here): GEOSEARCH_STORE loses to it.
    env_only = subprocess.run(
        [GEOSEARCH, "scenes", "--json"],
        capture_output=True,
        text=True,
        env={**env, "GEOSEARCH_STORE": str(cli_store)},
        timeout=600,
    )
    assert env_only.returncode != 0 and "Traceback" not in env_only.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("search", "road", "--bbox", "1,2,3"), 2, "4 numbers"),
        (("search", "road", "--bbox", "0,100,1,101"), 2, "latitude"),
        (("search", "   "), 2, "empty"),
        (("ingest", "/nonexistent/scene.tif", "--quiet"), 1, "scene.tif"),
        (("ingest", "x.tif", "--bands", "4,x"), 2, "--bands"),
        (("ingest", "x.tif", "--scales", "1,x"), 2, "--scales takes comma-separated integer factors"),
        (("ingest", "x.tif", "--scales", "0,4"), 2, "scales must be distinct integer factors >= 1"),
        (("search", "road", "--gsd", "2/1"), 2, "gsd range starts above its end"),
        (("search", "road", "--gsd", "-1/2"), 2, "not negative"),
        (("delete", "no-such-scene"), 1, "no scene"),
        (("search", "road", "--store-option", "no_such_option=1"), 2, "unknown store option(s): no_such_option"),
        (("search", "road", "--store-option", "hnsw_ef"), 2, "KEY=VALUE"),
        (("ingest", "x.tif", "--store-option", "vector_datatype=float8"), 2, "vector_datatype must be one of"),
    ],
)
def test_cli_errors_are_one_clear_line(cli_store: Path, args: tuple[str, ...], code: int, message: str) -> None:
    result = run(*args, store=cli_store)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_multiscale_ingest_and_gsd_search(tmp_path: Path, scenes_dir: Path) -> None:
    store = tmp_path / "store"
    scene = str(scenes_dir / "rasterio" / "cogeo.tif")
    result = run("ingest", scene, "--scales", "4,1", "--no-captions", "--quiet", store=store)
    assert result.returncode == 0, result.stderr
    assert "29 chips" in result.stdout  # 25 at 0.6 m + 4 at 2.4 m
    found = run("search", "a lake", "--gsd", "1/..", "--limit", "100", "--geojson", store=store)
    assert found.returncode == 0, found.stderr
    properties = [f["properties"] for f in json.loads(found.stdout)["features"]]
    assert len(properties) == 4 and all(p["scale"] == 4 and p["gsd"] > 2 for p in properties)


def test_store_options_shape_a_new_store(tmp_path: Path, scenes_dir: Path) -> None:
    """--store-option reaches open_store: a float16 store is created, later runs need no option."""
    store = tmp_path / "store"
    scene = str(scenes_dir / "rio-tiler" / "cog_rgb.tif")
    result = run("ingest", scene, "--quiet", "--no-captions", "--store-option", "vector_datatype=float16", store=store)
    assert result.returncode == 0, result.stderr
    (meta,) = store.glob("*/meta.json")
    assert json.loads(meta.read_text())["vector_datatype"] == "float16"
    hits = run("search", "a road", "--limit", "2", store=store)
    assert hits.returncode == 0 and len(hits.stdout.strip().splitlines()) == 2, hits.stderr
    env_bad = {**os.environ, "GEOSEARCH_STORE": str(store), "GEOSEARCH_STORE_OPTIONS": "[1]"}
    bad = subprocess.run(
        [GEOSEARCH, "search", "road"], capture_output=True, text=True, env=env_bad, timeout=600
    )
    assert bad.returncode == 2 and "GEOSEARCH_STORE_OPTIONS must be a JSON object" in bad.stderr


def test_search_on_an_empty_store_says_so(tmp_path: Path) -> None:
    result = run("search", "road", store=tmp_path / "empty")
    assert result.returncode == 1
    assert "ingest" in result.stderr and "Traceback" not in result.stderr


def test_real_server_on_loopback(cli_store: Path) -> None:
    port = free_port()
    env = {**os.environ, "GEOSEARCH_STORE": str(cli_store)}
    server = subprocess.Popen(
        [GEOSEARCH, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)
        body = httpx.get(f"{base}/search", params={"q": "road", "limit": 3}, timeout=30).json()
        assert len(body["features"]) == 3
        chip = httpx.get(body["features"][0]["properties"]["chip_url"], timeout=30)
        assert chip.status_code == 200 and chip.content[:8] == b"\x89PNG\r\n\x1a\n"
        bad = httpx.get(f"{base}/search", params={"q": "road", "bbox": "1,2,3"}, timeout=30)
        assert bad.status_code == 400 and "4 numbers" in bad.json()["detail"]
        captions = httpx.get(f"{base}/captions", params={"limit": 2}, timeout=30).json()
        assert captions["links"] and captions["links"][0]["rel"] == "next"
    finally:
        server.terminate()
        server.wait(timeout=30)
