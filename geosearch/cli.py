"""``geosearch`` command line: ingest, search, serve, scenes, delete, export, eval.

Errors a user can cause print one line ``geosearch: error: ...`` and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import msgspec

from geosearch.config import Config, parse_store_options
from geosearch.errors import GeoSearchError, InvalidInput

EXIT_FAILED = 1
EXIT_USAGE = 2


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="embedded store directory or server url (env GEOSEARCH_STORE, or QDRANT_URL for a server; the flag wins)",
    )
    parser.add_argument("--model", help="embedder spec (default: the offline geosearch-lite-clip)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument(
        "--model-runtime",
        choices=("onnx", "torch", "auto"),
        help="embedder runtime (env GEOSEARCH_MODEL_RUNTIME; default auto: ONNX Runtime on CPU for the default model)",
    )
    parser.add_argument(
        "--store-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="open_store option, repeatable (over env GEOSEARCH_STORE_OPTIONS), e.g. vector_datatype=float16 "
        "when creating a store of millions of chips",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geosearch", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="chip, embed, caption and store GeoTIFF scenes")
    ingest.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    _store_options(ingest)
    ingest.add_argument("--captioner", help="captioner spec (default: the offline default captioner)")
    ingest.add_argument("--chip-size", type=int, default=224)
    ingest.add_argument("--stride", type=int, help="pixels between chips (default: chip size, no overlap)")
    ingest.add_argument("--bands", help="1-based source bands for R,G,B, e.g. 4,3,2")
    ingest.add_argument("--gsd", type=float, help="target ground resolution in metres per pixel")
    ingest.add_argument(
        "--scales",
        default="1",
        help="chip each scene at these factors of its ground resolution (or --gsd) in one pass, e.g. 1,4 "
        "(default 1; each coarser scale adds 1/factor² of the chips)",
    )
    ingest.add_argument("--min-valid", type=float, default=0.5, help="skip chips with less valid data")
    ingest.add_argument("--batch-size", type=int, default=32)
    ingest.add_argument("--no-captions", action="store_true", help="embed only")
    ingest.add_argument("--force", action="store_true", help="re-ingest scenes already in the store")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")

    search = sub.add_parser("search", help="natural-language search")
    search.add_argument("text")
    _store_options(search)
    search.add_argument("--bbox", help="minx,miny,maxx,maxy (lon/lat)")
    search.add_argument("--limit", type=int, default=10)
    search.add_argument("--scene")
    search.add_argument("--datetime")
    search.add_argument("--gsd", help="chip ground resolution range in metres per pixel, e.g. 0.5/2 or ../2")
    search.add_argument("--geojson", action="store_true", help="print a GeoJSON FeatureCollection")

    serve = sub.add_parser("serve", help="run the HTTP API")
    _store_options(serve)
    serve.add_argument("--captioner")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    scenes = sub.add_parser("scenes", help="list ingested scenes")
    _store_options(scenes)
    scenes.add_argument("--json", action="store_true")

    remove = sub.add_parser("delete", help="delete a scene and all its chips")
    remove.add_argument("scene_id")
    _store_options(remove)

    export = sub.add_parser("export", help="write the caption layer or a search result to .gpkg, .fgb or .parquet")
    export.add_argument("out", help="output file: .gpkg (GeoPackage), .fgb (FlatGeobuf) or .parquet (GeoParquet)")
    _store_options(export)
    export.add_argument("--bbox", help="minx,miny,maxx,maxy (lon/lat): only chips whose footprint touches it")
    export.add_argument("--q", help="export the chips most similar to this text (with score and relevance)")
    export.add_argument("--limit", type=int, help="chips to write (with --q: default 100, at most 10000; else all)")

    sub.add_parser("eval", help="score the models on a Karpathy-format dataset (geosearch eval --help)", add_help=False)
    return parser


def _config(args: argparse.Namespace) -> Config:
    config = Config.from_env(
        store=args.store,
        model=args.model,
        device=args.device,
        model_runtime=args.model_runtime,
        captioner=getattr(args, "captioner", None),
        batch_size=getattr(args, "batch_size", None),
    )
    return replace(config, store_options=parse_store_options(args.store_option, config.store_options))


def _ints(text: str | None, flag: str, what: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise InvalidInput(f"{flag} takes comma-separated {what}, got {text!r}") from None


def cmd_ingest(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see geosearch.ingest.runtime
    from tqdm import tqdm

    from geosearch.engine import Engine
    from geosearch.ingest import IngestOptions, Ingestor, SceneStatus, expand_paths
    from geosearch.tilers import TileOptions

    if args.batch_size < 1:
        raise InvalidInput("--batch-size must be at least 1")
    tile = TileOptions(
        chip_size=args.chip_size,
        stride=args.stride,
        bands=_ints(args.bands, "--bands", "1-based band numbers"),
        gsd=args.gsd,
        min_valid=args.min_valid,
        scales=_ints(args.scales, "--scales", "integer factors, e.g. 1,4") or (),
    )
    options = IngestOptions(tile=tile, batch_size=args.batch_size, captions=not args.no_captions, force=args.force)
    paths = expand_paths(args.paths)
    with Engine.open(_config(args)) as engine:
        bar = tqdm(total=0, unit="chip", disable=args.quiet, dynamic_ncols=True, file=sys.stderr)
        scene_count = len(paths)

        def progress(chips: int, scenes_done: int, total: int) -> None:
            bar.total = total
            bar.update(chips - bar.n)
            bar.set_postfix_str(f"scenes {scenes_done}/{scene_count}", refresh=False)

        ingestor = Ingestor(engine, options, progress)
        jobs = ingestor.plan(paths)
        bar.total = ingestor.total_chips
        try:
            report = ingestor.run(jobs)
        finally:
            bar.close()
    for scene in report.scenes:
        if scene.status == SceneStatus.FAILED:
            print(f"failed   {scene.path}: {scene.error}", file=sys.stderr)
        elif scene.status == SceneStatus.ALREADY:
            print(f"already  {scene.path} ({scene.chips} chips; --force to redo)")
        else:
            why = f" skipped (valid < {tile.min_valid})" if scene.skipped else " skipped"
            print(f"ingested {scene.path}: {scene.chips} chips, {scene.skipped}{why}")
    rate = report.chips / report.seconds if report.seconds > 0 else 0.0
    print(
        f"{report.count(SceneStatus.INGESTED)} scenes ingested, {report.count(SceneStatus.ALREADY)} already in store, "
        f"{report.count(SceneStatus.FAILED)} failed; {report.chips} chips written, {report.skipped} skipped "
        f"(mostly nodata); {report.seconds:.1f} s ({rate:.1f} chips/s)"
    )
    return 0 if report.ok else EXIT_FAILED


def cmd_search(args: argparse.Namespace) -> int:
    from geosearch.engine import Engine
    from geosearch.geojson import feature_collection
    from geosearch.query import parse_bbox, parse_datetime, parse_gsd, parse_limit, parse_text
    from geosearch.schemas import SearchQuery

    query = SearchQuery(
        q=parse_text(args.text),
        bbox=parse_bbox(args.bbox),
        limit=parse_limit(args.limit),
        scene=args.scene,
        datetime=parse_datetime(args.datetime),
        gsd=parse_gsd(args.gsd),
    )
    with Engine.open(_config(args), create=False) as engine:
        hits = engine.search(query)
    if args.geojson:
        print(msgspec.json.encode(feature_collection(hits)).decode())
        return 0
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, 1):
        p = hit.payload
        w = p.window
        print(
            f"{rank:>3}. {hit.score:.3f}{'' if hit.relevance is None else f' rel {hit.relevance:.3f}'}  {hit.id}  "
            f"({p.centre.lon:.5f}, {p.centre.lat:.5f})  "
            f"{p.scene_path} [{w.col},{w.row} {w.width}x{w.height}] {p.gsd:.3g} m/px  {p.caption or ''}"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from geosearch.api import create_app
    from geosearch.engine import Engine

    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        # The server only encodes short queries: a second intra-op thread gains little on idle cores
        # and stalls whenever the other core is busy; one thread degrades gently.
        torch.set_num_threads(1)
    engine = Engine.open(_config(args))  # fail fast, before binding the port
    try:
        uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level="info")
    finally:
        engine.close()
    return 0


def cmd_scenes(args: argparse.Namespace) -> int:
    from geosearch.engine import Engine

    with Engine.open(_config(args), create=False) as engine:
        scenes = engine.scenes()
    if args.json:
        print(msgspec.json.encode(scenes).decode())
        return 0
    for s in scenes:
        print(f"{s.id}  {s.chips:>6} chips  {s.crs:<12} {s.width}x{s.height}  {s.path}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from geosearch.engine import Engine

    with Engine.open(_config(args), create=False) as engine:
        removed = engine.delete_scene(args.scene_id)
    print(f"deleted scene {args.scene_id} ({removed} chips)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from geosearch.engine import Engine
    from geosearch.export import ExportQuery, export, export_format
    from geosearch.query import parse_bbox

    export_format(args.out)  # a bad extension fails before any model loads
    query = ExportQuery(bbox=parse_bbox(args.bbox), q=args.q, limit=args.limit)
    with Engine.open(_config(args), create=False) as engine:
        report = export(engine, args.out, query)
    print(f"wrote {report.count} chips to {report.path} ({report.format})")
    return 0


COMMANDS: dict[str, Any] = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "serve": cmd_serve,
    "scenes": cmd_scenes,
    "delete": cmd_delete,
    "export": cmd_export,
}


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--bbox -180,-90,180,90`` is a value, not an option: argparse only knows plain negative numbers."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--bbox", "--gsd") and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        from geosearch.evaluation import main as eval_main

        return eval_main(argv[1:])
    args = _parser().parse_args(_join_negative_values(argv))
    try:
        return int(COMMANDS[args.command](args))
    except GeoSearchError as exc:
        print(f"geosearch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InvalidInput) else EXIT_FAILED
    except KeyboardInterrupt:
        print("geosearch: interrupted; finished scenes are kept, the rest resume on the next run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
