"""``geosearch`` command line: ingest, search, serve, scenes, delete, export, eval.

Every error prints one line ``geosearch: error: ...`` and exits non-zero; tracebacks (and debug logs)
only with ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgspec

from geosearch.config import Config, parse_store_options
from geosearch.errors import GeoSearchError, InvalidInput

if TYPE_CHECKING:
    from geosearch.ingest import IngestReport

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
    ingest.add_argument(
        "paths",
        nargs="*",
        help="files, folders, glob patterns, raster URLs (read in place, no download) or STAC .json files/URLs",
    )
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
    ingest.add_argument(
        "--stac", metavar="URL_OR_FILE", help="a STAC Item/ItemCollection/Collection/Catalog, or a STAC API to search"
    )
    ingest.add_argument("--collection", metavar="ID", help="STAC: only Items of this collection")
    ingest.add_argument(
        "--asset", metavar="NAME", help="STAC: the asset to chip (default: the first RGB-ish COG, e.g. 'visual')"
    )
    ingest.add_argument(
        "--bbox", help="minx,miny,maxx,maxy (lon/lat): STAC Items meeting it, and only the chips inside it"
    )
    ingest.add_argument("--datetime", help="STAC: Items at this RFC 3339 time or in this interval (a/b, .. open)")

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
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1); any other than loopback needs GEOSEARCH_API_KEY or --insecure",
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback host without an API key: anyone who reaches it can delete scenes",
    )

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
    _debug_flag(parser, sub)
    return parser


_DEBUG_HELP = "print tracebacks with errors, and debug logs (e.g. ingest's runtime and every batch written) on stderr"


def _debug_flag(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`--debug` before the command or after it (`geosearch --debug ingest ...`, `geosearch ingest ... --debug`)."""
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    for name, command in sub.choices.items():
        if name != "eval":  # eval parses its own arguments
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)


def _configure_logging(debug: bool) -> None:
    """With --debug, geosearch's loggers write DEBUG records to stderr; without, logging is left as is."""
    if not debug:
        return
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("geosearch: debug: %(name)s: %(message)s"))
    logger = logging.getLogger("geosearch")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


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
    from geosearch.ingest.runtime import prepare_process

    prepare_process()  # before torch loads: see geosearch.ingest.runtime
    from geosearch.engine import Engine
    from geosearch.ingest import IngestOptions, expand_paths, ingest
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
    paths = expand_paths(args.paths, **_source_options(args))  # nothing to ingest fails here, before models load
    with Engine.open(_config(args)) as engine, _progress_bar(len(paths), quiet=args.quiet) as progress:
        report = ingest(engine, paths, options, progress)
    _print_ingest_summary(report, tile.min_valid)
    return 0 if report.ok else EXIT_FAILED


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    """`expand_paths`'s STAC and area options from `geosearch ingest`'s flags."""
    from geosearch.query import parse_bbox

    if not args.paths and not args.stac:
        raise InvalidInput("give files, folders, URLs or STAC documents to ingest, or --stac URL_OR_FILE")
    area = parse_bbox(args.bbox)
    if area is not None and area[0] > area[2]:
        raise InvalidInput("ingest --bbox cannot cross the antimeridian (minx > maxx): ingest each side apart")
    return {
        "stac": args.stac,
        "collection": args.collection,
        "asset": args.asset,
        "area": area,
        "datetime": args.datetime,
    }


@contextmanager
def _progress_bar(scene_count: int, *, quiet: bool) -> Iterator[Callable[[int, int, int], None]]:
    """A tqdm bar on stderr (chips/s, ETA) fed by ingest's progress callback; closed on the way out."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="chip", disable=quiet, dynamic_ncols=True, file=sys.stderr)

    def progress(chips: int, scenes_done: int, total: int) -> None:
        bar.total = total
        bar.update(chips - bar.n)
        bar.set_postfix_str(f"scenes {scenes_done}/{scene_count}", refresh=False)

    try:
        yield progress
    finally:
        bar.close()


def _print_ingest_summary(report: IngestReport, min_valid: float) -> None:
    """One line per scene (failures as "path: reason" on stderr), then the totals."""
    from geosearch.ingest import SceneStatus

    for scene in report.scenes:
        if scene.status == SceneStatus.FAILED:
            print(f"failed   {scene.path}: {scene.error}", file=sys.stderr)
        elif scene.status == SceneStatus.ALREADY:
            print(f"already  {scene.path} ({scene.chips} chips; --force to redo)")
        else:
            why = f" skipped (valid < {min_valid})" if scene.skipped else " skipped"
            print(f"ingested {scene.path}: {scene.chips} chips, {scene.skipped}{why}")
    rate = report.chips / report.seconds if report.seconds > 0 else 0.0
    print(
        f"{report.count(SceneStatus.INGESTED)} scenes ingested, {report.count(SceneStatus.ALREADY)} already in store, "
        f"{report.count(SceneStatus.FAILED)} failed; {report.chips} chips written, {report.skipped} skipped "
        f"(mostly nodata); {report.seconds:.1f} s ({rate:.1f} chips/s)"
    )


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
    from geosearch.api.security import serve_config

    # Host policy, API key, rate limit, CORS and timeout (env GEOSEARCH_*): refused before any model loads.
    config = serve_config(_config(args), args.host, insecure=args.insecure)

    import uvicorn

    from geosearch.api import create_app
    from geosearch.engine import Engine

    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        # The server only encodes short queries: a second intra-op thread gains little on idle cores
        # and stalls whenever the other core is busy; one thread degrades gently.
        torch.set_num_threads(1)
    engine = Engine.open(config)  # fail fast, before binding the port
    try:
        uvicorn.run(create_app(engine, config), host=args.host, port=args.port, log_level="info")
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
    """Run one command. Errors print one line ``geosearch: error: ...`` (exit 2 for bad input, else 1);
    with --debug, the traceback comes first."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["--debug", "eval"]:
        argv = argv[1:]
        _configure_logging(True)
    if argv[:1] == ["eval"]:
        from geosearch.evaluation import main as eval_main

        return eval_main(argv[1:])
    args = _parser().parse_args(_join_negative_values(argv))
    debug = bool(args.debug)
    _configure_logging(debug)
    try:
        return int(COMMANDS[args.command](args))
    except GeoSearchError as exc:
        _traceback(debug)
        print(f"geosearch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InvalidInput) else EXIT_FAILED
    except KeyboardInterrupt:
        _traceback(debug)
        print("geosearch: interrupted; finished scenes are kept, the rest resume on the next run", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment problem: still one line, the traceback with --debug
        _traceback(debug)
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"geosearch: error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return EXIT_FAILED


def _traceback(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
