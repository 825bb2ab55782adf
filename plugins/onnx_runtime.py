"""ONNX Runtime towers for geosearch-lite-clip: the fast CPU path (issue 10).

Only the *frozen* towers go through ONNX Runtime: EfficientNet-Lite0 (normalised 224x224 pixels →
pooled 1280-d features) and MiniLM (input_ids + attention_mask → mean-pooled 384-d features). The
trained heads (`visual.head`, `text.proj`) and the caption memory run in torch/numpy after them, so
retraining the heads never invalidates an export or the int8 calibration.

- Exports are made once, at first use, under ``user_cache_dir("geosearch")/onnx``, keyed by a hash
  of the tower weights as loaded and the torch/onnx/onnxruntime versions.
- The int8 image tower is static QDQ quantization (per-channel int8 weights, uint8 activations)
  from tensor ranges computed at development time on 400 UCM + AID train images and shipped in
  ``weights/onnx/lite0-int8-ranges.json`` (``python -m geosearch.plugins.onnx_runtime --calibrate``
  rewrites it); users need no data. The stem and first depthwise convolution stay fp32: int8 there
  alone cost ~0.04 cosine (measured). Even so int8 misses the 0.99 per-image cosine gate to fp32
  (min ~0.98), so it is opt-in (``precision='int8'``) and has its own model id.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from geosearch.errors import ModelError
from geosearch.plugins.base import cache_root
from geosearch.plugins.open_clip import OpenClipEmbedder, resolve_device

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
"""Bump when the export recipe changes in a way the cache key does not capture."""
OPSET = 17
RANGES_FILE = Path(__file__).resolve().parent / "weights" / "onnx" / "lite0-int8-ranges.json"
FP32_CONVS = 2
"""Leading convolutions kept fp32 in the int8 tower (stem + first depthwise): the most sensitive ones."""
IMAGE_INPUT, TEXT_INPUTS, OUTPUT = "pixels", ("input_ids", "attention_mask"), "features"
QUANT_OPS = ["Conv", "Add", "Clip"]


def available() -> bool:
    """True when onnxruntime and onnx import (both are dependencies; a broken install falls back to torch)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "export": str(EXPORT_VERSION),
        "opset": str(OPSET),
    }


def state_digest(module: nn.Module, *extra: str) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes, bytes): the export cache key's weights part."""
    h = hashlib.sha256("|".join(extra).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


def export_root() -> Path:
    return cache_root() / "onnx"


def _cache_dir(kind: str, digest: str) -> Path:
    blob = json.dumps({"kind": kind, "towers": digest, **versions()}, sort_keys=True)
    path = export_root() / f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write `path` via a temporary file in the same folder, so concurrent first uses never see half a file."""
    if path.is_file():
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is as readable as any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---- export -------------------------------------------------------------------------------------
class _StaticPadConv(nn.Module):
    """timm's TF-'same' convolution with its padding fixed for one input size.

    Conv2dSame computes the padding from the input shape at run time; exported, that is ~150 shape
    ops around five Pad nodes. The tower input is always image_size x image_size, so fixed pads are exact.
    """

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = conv
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(F.pad(x, self.pads), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def static_padding(trunk: nn.Module, size: int) -> nn.Module:
    """A copy of `trunk` whose dynamic-'same' convolutions use the fixed pads of a size x size input."""
    from timm.layers.padding import get_same_padding

    trunk = copy.deepcopy(trunk).eval()
    seen: dict[str, tuple[int, int]] = {}
    hooks = []

    def record(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = (int(args[0].shape[-2]), int(args[0].shape[-1]))

        return hook

    for name, mod in trunk.named_modules():
        if type(mod).__name__ == "Conv2dSame":
            hooks.append(mod.register_forward_pre_hook(record(name)))
    with torch.inference_mode():
        trunk(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for name, (ih, iw) in seen.items():
        conv: Any = trunk.get_submodule(name)
        ph = get_same_padding(int(ih), conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pw = get_same_padding(int(iw), conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        parent, _, child = name.rpartition(".")
        setattr(
            trunk.get_submodule(parent) if parent else trunk,
            child,
            _StaticPadConv(conv, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)),
        )
    return trunk


class _TextTower(nn.Module):
    """MiniLM + its pooler: (input_ids, attention_mask) → pooled features, before the trained projection."""

    def __init__(self, text: Any) -> None:
        super().__init__()
        self.transformer = text.transformer
        self.pooler = text.pooler

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask)
        pooled: torch.Tensor = self.pooler(out, attention_mask)
        return pooled


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    names: Sequence[str],
    dynamic: dict[str, dict[int, str]],
) -> None:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python values
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, deterministic names
            input_names=list(names),
            output_names=[OUTPUT],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
        )


def image_tower(model: Any, size: int) -> Path:
    """fp32 ONNX of the image trunk (normalised (N,3,size,size) → pooled features), exported once."""
    trunk = model.visual.trunk
    folder = _cache_dir("lite0", state_digest(trunk, str(size)))
    batch = {IMAGE_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}

    def write(tmp: Path) -> None:
        _export(static_padding(trunk, size), (torch.zeros(2, 3, size, size),), tmp, [IMAGE_INPUT], batch)

    return _atomic(folder / "image-fp32.onnx", write)


def text_tower(model: Any) -> Path:
    """fp32 ONNX of MiniLM + mean pooling (dynamic batch and sequence length), exported once."""
    text = model.text
    folder = _cache_dir("minilm", state_digest(text.transformer, type(text.pooler).__name__))
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, OUTPUT: {0: "batch"}}
    ids = torch.ones(2, 7, dtype=torch.long)

    def write(tmp: Path) -> None:
        _export(_TextTower(text).eval(), (ids, torch.ones_like(ids)), tmp, TEXT_INPUTS, axes)

    return _atomic(folder / "text-fp32.onnx", write)


# ---- int8 -----------------------------------------------------------------------------------------
def canonicalize(model: Any) -> None:
    """Rename nodes and intermediate tensors by graph position, so shipped ranges name the same tensors
    on every machine that exports the same graph."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    renames: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        node.name = f"node{i}_{node.op_type}"
        for j, out in enumerate(node.output):
            if out and out not in keep:
                renames[out] = f"t{i}_{j}"
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for info in graph.value_info:
        info.name = renames.get(info.name, info.name)


def fingerprint(model: Any) -> str:
    """Graph structure (op types and wiring, not weights): shipped ranges apply only to this graph."""
    h = hashlib.sha256()
    for node in model.graph.node:
        h.update(f"{node.op_type}({','.join(node.input)})->{','.join(node.output)};".encode())
    return h.hexdigest()[:16]


def prepared_image_tower(fp32: Path) -> Path:
    """The fp32 tower after ORT's quantization pre-processing (shape inference, folding), canonically named."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    def write(tmp: Path) -> None:
        quant_pre_process(str(fp32), str(tmp))
        model = onnx.load(str(tmp))
        canonicalize(model)
        onnx.save(model, str(tmp))

    return _atomic(fp32.parent / "image-prep.onnx", write)


def read_ranges(path: Path = RANGES_FILE) -> dict[str, Any]:
    if not path.is_file():
        raise ModelError(f"int8 calibration ranges missing: {path}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def int8_image_tower(model: Any, size: int, ranges_file: Path = RANGES_FILE) -> Path:
    """Static QDQ int8 image tower built from the fp32 export and the shipped ranges (cached).

    Raises ModelError when the ranges were computed for other tower weights or another graph (a
    different torch/onnxruntime export): stale ranges would silently quantize the wrong tensors.
    """
    import onnx

    meta = read_ranges(ranges_file)
    prep = prepared_image_tower(image_tower(model, size))
    graph = onnx.load(str(prep))
    weights = state_digest(model.visual.trunk, str(size))
    if meta.get("towers") != weights:
        raise ModelError(f"int8 ranges in {ranges_file.name} are for other image tower weights; rerun --calibrate")
    if meta.get("graph") != fingerprint(graph):
        raise ModelError(
            f"int8 ranges in {ranges_file.name} were made for another ONNX graph (torch/onnxruntime versions "
            f"{meta.get('versions')}); rerun --calibrate"
        )
    tag = hashlib.sha256(ranges_file.read_bytes()).hexdigest()[:12]

    def write(tmp: Path) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantType
        from onnxruntime.quantization.calibrate import TensorsData
        from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
        from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

        qmodel = load_model_with_shape_infer(prep)
        nodes = list(qmodel.graph.node)
        convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
        fp32_nodes = [n.name for n in nodes[: convs[FP32_CONVS]]] if len(convs) > FP32_CONVS else []
        ranges = TensorsData(
            CalibrationMethod.MinMax, {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in meta["ranges"].items()}
        )
        quantizer = QDQQuantizer(
            qmodel,
            True,  # per-channel weights
            False,  # reduce_range: 7-bit weights cost another ~0.03 cosine (measured)
            QuantType.QInt8,
            QuantType.QUInt8,
            ranges,
            [],
            fp32_nodes,
            QUANT_OPS,
            {"QDQKeepRemovableActivations": True},  # an fp32 conv keeps its ReLU6
        )
        quantizer.quantize_model()
        quantizer.model.save_model_to_file(str(tmp))

    return _atomic(prep.parent / f"image-int8-{tag}.onnx", write)


def session(path: Path, threads: int) -> Any:
    """A CPU inference session with `threads` intra-op threads (spinning off when OMP_WAIT_POLICY=PASSIVE,
    as ingest sets it, so idle ORT threads do not steal the tiler's core)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = False  # the arena keeps a whole batch's activations alive; no speed gain from it
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc


# ---- embedder ---------------------------------------------------------------------------------------
class OrtLiteClipEmbedder(OpenClipEmbedder):
    """geosearch-lite-clip with both frozen towers in ONNX Runtime and the trained heads in torch.

    ``image_int8``: the static-int8 image tower (its own model id: it misses the 0.99 cosine gate).
    Text always runs fp32, single-threaded, with the same exact padding trimming as the torch path.
    """

    runtime = "onnx"

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, image_int8: bool = False, threads: int | None = None, **kwargs: Any
    ) -> None:
        import onnxruntime

        m: Any = model
        if resolve_device(kwargs.pop("device", None) or "cpu").type != "cpu":
            raise ModelError("the ONNX runtime runs on CPU only; use runtime='torch' for CUDA")
        size = kwargs["image_size"]
        size = int(size if isinstance(size, int) else size[0])
        self.threads = int(threads or torch.get_num_threads())
        image_path = int8_image_tower(m, size) if image_int8 else image_tower(m, size)
        self._image_session = session(image_path, self.threads)
        # One thread for text: a query is a few tokens, and waiting for a second (busy) core costs
        # more than it computes.
        self._text_session = session(text_tower(m), 1)
        self.ort_version = str(onnxruntime.__version__)
        requested = kwargs.pop("precision", "auto")
        super().__init__(model, tokenizer, device="cpu", precision="fp32", **kwargs)
        self.precision = requested
        self.image_precision = "int8" if image_int8 else "fp32"
        self.text_precision = "fp32"
        self.channels_last = False  # ONNX Runtime takes plain NCHW

    def runtime_info(self) -> dict[str, object]:
        info = super().runtime_info()
        info.update(threads=self.threads, text_threads=1, onnxruntime=self.ort_version)
        return info

    def _image_forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.float().contiguous().numpy()
        (feats,) = self._image_session.run([OUTPUT], {IMAGE_INPUT: pixels})
        head: Any = self.model.visual.head  # type: ignore[union-attr]
        out: torch.Tensor = head(torch.from_numpy(feats))
        return out

    def _text_forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = 0 if self._text_pad_id is None else self._text_pad_id
        ids64 = ids.to(torch.int64).numpy()
        mask = (ids64 != pad).astype(np.int64)
        (pooled,) = self._text_session.run([OUTPUT], {TEXT_INPUTS[0]: ids64, TEXT_INPUTS[1]: mask})
        proj: Any = self.model.text.proj  # type: ignore[union-attr]
        out: torch.Tensor = proj(torch.from_numpy(pooled))
        return out


# ---- development: calibration ranges ---------------------------------------------------------------
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def train_images(root: Path, count: int) -> list[Path]:
    """`count` train images spread evenly over a Karpathy-format captions.json (so every class appears)."""
    meta = json.loads((root / "captions.json").read_text())
    names = [str(img["filename"]) for img in meta["images"] if img.get("split") == "train"]
    step = max(1, len(names) // count)
    return [root / "images" / (Path(n).stem + ".jpg") for n in names[::step][:count]]


def _calibration_batches(
    embedder: OpenClipEmbedder, files: Sequence[Path], batch: int
) -> Iterator[NDArray[np.float32]]:
    from PIL import Image

    for start in range(0, len(files), batch):
        xs = []
        for f in files[start : start + batch]:
            with Image.open(f) as im:
                xs.append(embedder.preprocess(np.asarray(im.convert("RGB"))[None]).contiguous())
        yield torch.cat(xs).numpy()


def calibrate(
    out: Path = RANGES_FILE, *, data: Path = SHARED_DATA, per_dataset: int = 200, batch: int = 20
) -> dict[str, Any]:
    """Compute the int8 activation ranges on real train chips (development only) and write `out`.

    MinMax over 200 UCM + 200 AID train images through the embedder's own preprocessing. Percentile
    (99.99 / 99.999) and entropy calibration gave the same cosine to fp32 (within 0.003), so the
    simplest, exactly reproducible method is kept.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

    from geosearch.plugins.lite_clip import load_lite_clip

    t0 = time.time()
    emb: Any = load_lite_clip(runtime="torch", precision="fp32", memory=False)
    size = emb.image_size[0]
    prep = prepared_image_tower(image_tower(emb.model, size))
    files = train_images(data / "ucm-captions", per_dataset) + train_images(data / "aid-rsicd", per_dataset)
    batches = _calibration_batches(emb, files, batch)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            x = next(batches, None)
            return None if x is None else {IMAGE_INPUT: x}

    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(
            prep,
            QUANT_OPS,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax,
        )
        calibrator.collect_data(Reader())
        tensors = calibrator.compute_data()
    ranges = {
        name: [float(np.float32(np.ravel(td.range_value[0])[0])), float(np.float32(np.ravel(td.range_value[1])[0]))]
        for name, td in sorted(tensors.data.items())
    }
    result = {
        "format": 1,
        "what": "MinMax activation ranges of the geosearch-lite-clip image tower (EfficientNet-Lite0) for static int8",
        "method": "MinMax",
        "images": {"ucm-captions/train": per_dataset, "aid-rsicd/train": per_dataset},
        "towers": state_digest(emb.model.visual.trunk, str(size)),
        "graph": fingerprint(onnx.load(str(prep))),
        "versions": versions(),
        "ranges": ranges,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("wrote %d ranges to %s in %.0f s", len(ranges), out, time.time() - t0)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m geosearch.plugins.onnx_runtime", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--calibrate", action="store_true", help="recompute the shipped int8 ranges (needs ../shared/data)"
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--per-dataset", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RANGES_FILE)
    args = parser.parse_args(argv)
    if not args.calibrate:
        parser.print_help()
        return 0
    torch.set_num_threads(os.cpu_count() or 1)
    result = calibrate(args.out, data=args.data, per_dataset=args.per_dataset)
    print(f"wrote {len(result['ranges'])} ranges to {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
