"""Generic open_clip embedder: any open_clip architecture + weights, including RS-CLIP checkpoints.

Spec syntax (the part after ``open_clip:`` or a bare spec routed here by the registry):

- ``ViT-B-32/laion2b_s34b_b79k``  built-in architecture + pretrained tag (downloads; cached)
- ``ViT-B-32``                    built-in architecture with random weights (tests, smoke runs),
                                  initialised from a fixed seed: the same architecture gives the same
                                  weights on every load
- ``hf-hub:org/repo``             config + weights from the Hugging Face Hub
- ``local-dir:/path``             folder with ``open_clip_config.json`` + a weights file
- ``/path/ckpt.pt``               checkpoint file; the architecture is read from an
                                  ``open_clip_config.json`` beside it, or guessed from the file name
                                  (RemoteCLIP-ViT-B-32.pt, RS5M_ViT-B-32.pt, SkyCLIP ...)
- ``ARCH=/path/ckpt.pt`` or ``ARCH:/path/ckpt.pt``   checkpoint file for a named architecture
                                  (RemoteCLIP, GeoRSCLIP and SkyCLIP ship plain open_clip state dicts)

Model ids (the store keeps one collection per id) name the spec and the weights' content, so a store
never mixes the vectors of two models: ``open_clip:ARCH/TAG@D``, ``open_clip:hf-hub:ORG/REPO@D``,
``open_clip:ARCH@D`` (checkpoint file) and ``open_clip:FOLDER@D`` (local-dir), where D is the start of
the sha256 of the weights file's bytes (`file_digest`: hashed once per file version, then cached), and
``open_clip:ARCH@random-D`` for random weights, where D hashes the initialised state dict (`state_digest`).
The same weights file reached as ``local-dir:/dir`` or as ``/dir/<weights file>`` (a config beside it)
is one spec and gets one id; under another architecture name (``ARCH=/dir/<weights file>``), or saved
in another format, it gets another id: ids hash files, not tensors, and do not assume two names denote
one architecture.

Preprocessing is done on tensors for the whole batch (resize to the model's image size,
the model's own mean/std), not per image with PIL: chips are already square uint8 RGB.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.hf_model import HFTextEncoder
from torch import nn

from geosearch.errors import ModelError
from geosearch.plugins.base import Embedder, ImageBatch, Relevance, Vectors, cache_root, check_image_batch
from geosearch.plugins.caption_memory import CaptionMemory

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
RUNTIMES = ("auto", "torch", "onnx")
"""``onnx``: ONNX Runtime towers (geosearch-lite-clip only, see onnx_runtime.py); ``auto`` picks per model."""
_CKPT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
DIGEST_LENGTH = 12
"""Hex digits of a weights digest in a model id."""
RANDOM_SEED = 0
"""Seed of random-weight models (a bare architecture name): one architecture, one set of weights."""


def resolve_device(device: str | None) -> torch.device:
    """``None``/``'auto'`` → CUDA when available, else CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except RuntimeError as exc:
        raise ModelError(f"invalid device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but CUDA is not available")
    return dev


class OpenClipEmbedder:
    """Batched, normalised image/text encoding around any open_clip model.

    ``precision``: ``fp32``; ``bf16`` (autocast, both towers); ``auto`` = bf16 autocast for a CNN
    image tower on a CPU with native bf16 (`geosearch.plugins.cpu.native_bf16`: faster there at
    cosine > 0.99 to fp32; emulated, i.e. much slower, elsewhere), fp32 otherwise. CNN towers always
    run channels_last. ``memory``: a `CaptionMemory` built with this very model, applied to every
    image vector (text vectors are untouched).

    ``runtime``, ``image_precision`` and ``text_precision`` say what actually runs (reported by
    `runtime_info`, /health, ``geosearch eval --json`` and the benchmarks).
    """

    runtime = "torch"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        model_id: str,
        image_size: int | tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        device: str | None = None,
        batch_size: int = 32,
        precision: str = "fp32",
        text_batch_size: int = 256,
        interpolation: str = "bicubic",
        memory: CaptionMemory | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if batch_size < 1:
            raise ModelError("batch_size must be >= 1")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.model_id = model_id
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.image_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.batch_size = batch_size
        self.interpolation = interpolation
        self.text_batch_size = text_batch_size
        self._mean = torch.tensor(list(mean), device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(list(std), device=self.device).view(1, 3, 1, 1) * 255
        is_cnn = _is_cnn(self.model)
        if precision == "auto":
            from geosearch.plugins.cpu import native_bf16

            self.image_bf16 = self.device.type == "cpu" and is_cnn and native_bf16()
            self.text_bf16 = False
        else:
            self.image_bf16 = self.text_bf16 = precision == "bf16"
        self.channels_last = is_cnn
        if self.channels_last:
            self.model.visual.to(memory_format=torch.channels_last)  # type: ignore[union-attr]
        self.precision = precision
        self.image_precision = "bf16" if self.image_bf16 else "fp32"
        self.text_precision = "bf16" if self.text_bf16 else "fp32"
        text = getattr(self.model, "text", None)
        pad_id = text.config.pad_token_id if isinstance(text, HFTextEncoder) else None
        self._text_pad_id: int | None = None if pad_id is None else int(pad_id)
        with torch.inference_mode():
            probe = self._encode_text_batch(["a"])
        self.dim = int(probe.shape[1])
        if memory is not None and memory.dim != self.dim:
            raise ModelError(f"caption memory is {memory.dim}-d, the model {self.dim}-d")
        self.memory = memory

    @functools.cached_property
    def relevance(self) -> Relevance | None:
        """Query-relative scores against the caption memory's train images as this embedder stores
        them (None without a memory); built on first use (one pass over the reference set)."""
        if self.memory is None:
            return None
        return Relevance(self.memory.expand(self.memory.image_vectors))

    def runtime_info(self) -> dict[str, object]:
        """What runs where: runtime, requested and effective precisions, device, threads."""
        return {
            "runtime": self.runtime,
            "precision": self.precision,
            "image_precision": self.image_precision,
            "text_precision": self.text_precision,
            "channels_last": self.channels_last,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
        }

    def _autocast(self, enabled: bool) -> AbstractContextManager[Any]:
        if not enabled:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def preprocess(self, images: ImageBatch) -> torch.Tensor:
        """uint8 (N,H,W,3) → normalised float (N,3,h,w) on the device, resized as a batch."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode=self.interpolation, antialias=True, align_corners=False)
            x = x.clamp_(0, 255)
        x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def encode_images(self, images: ImageBatch) -> Vectors:
        """L2-normalised float32 (N, dim) image embeddings."""
        images = check_image_batch(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = self.preprocess(images[start : start + self.batch_size])
                feats = F.normalize(self._image_forward(x).float(), dim=-1)
                out[start : start + len(x)] = feats.cpu().numpy()
        return out if self.memory is None else self.memory.expand(out)

    def _image_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch → unnormalised embeddings; the ONNX Runtime embedder overrides this."""
        with self._autocast(self.image_bf16):
            feats: torch.Tensor = self.model.encode_image(x)  # type: ignore[operator]
        return feats

    def _text_forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (padding columns trimmed) → unnormalised embeddings; overridable like `_image_forward`."""
        with self._autocast(self.text_bf16):
            feats: torch.Tensor = self.model.encode_text(ids)  # type: ignore[operator]
        return feats

    def _encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(list(texts))
        if self._text_pad_id is not None:
            # Tokenizers pad to the full context length; a Hugging Face tower masks padding by
            # token id, so dropping all-padding columns is exact and cuts query latency.
            used = (ids != self._text_pad_id).any(dim=0).nonzero()
            ids = ids[:, : int(used.max()) + 1] if len(used) else ids[:, :1]
        return F.normalize(self._text_forward(ids.to(self.device)).float(), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        """L2-normalised float32 (N, dim) text embeddings."""
        from geosearch.errors import InvalidInput

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidInput("texts must be a sequence of strings")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.text_batch_size):
                chunk = texts[start : start + self.text_batch_size]
                out[start : start + len(chunk)] = self._encode_text_batch(chunk).cpu().numpy()
        return out


def check_runtime(runtime: str) -> str:
    """Validate a runtime name once, so every plugin fails the same way."""
    if runtime not in RUNTIMES:
        raise ModelError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def _is_cnn(model: nn.Module) -> bool:
    visual = getattr(model, "visual", None)
    return visual is not None and any(isinstance(m, nn.Conv2d) for m in visual.modules()) and not any(
        isinstance(m, nn.MultiheadAttention) for m in visual.modules()
    )


def file_digest(path: Path, length: int = DIGEST_LENGTH) -> str:
    """Start of the sha256 of a weights file's bytes, so different checkpoints never share a model_id.

    The file is hashed once per version: the full digest is cached in ``cache_root()/weights-digests``
    under a key of the resolved path, size, modification time (ns) and inode, which any rewrite or
    replacement of the file changes. An unwritable cache only costs the hashing again.
    """
    path = path.resolve()
    before = path.stat()
    key = f"{path}\n{before.st_size}\n{before.st_mtime_ns}\n{before.st_ino}"
    entry = cache_root() / "weights-digests" / hashlib.sha256(key.encode()).hexdigest()[:32]
    try:
        cached = entry.read_text().strip()
    except OSError:
        cached = ""
    if re.fullmatch(r"[0-9a-f]{64}", cached):
        return cached[:length]
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    after = path.stat()
    if (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino):
        try:  # written whole or not at all: concurrent loaders may race, each with the same digest
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
            tmp.write_text(digest + "\n")
            os.replace(tmp, entry)
        except OSError as exc:
            log.debug("weights digest not cached (%s)", exc)
    return digest[:length]


def state_digest(model: nn.Module, length: int = DIGEST_LENGTH) -> str:
    """Start of the sha256 of a model's state dict (each tensor's name, dtype, shape and bytes, in order):
    the identity of weights that live in no file."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        h.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:length]


def _guess_arch(path: Path) -> str | None:
    """Architecture from a checkpoint's neighbouring config or its file name."""
    import open_clip

    cfg = path.parent / "open_clip_config.json"
    if cfg.is_file():
        return None  # handled as local-dir by the caller
    stem = path.stem.replace("_", "-")
    for name in sorted(open_clip.list_models(), key=len, reverse=True):
        if re.search(rf"(^|[-]){re.escape(name)}($|[-.])", stem, flags=re.IGNORECASE):
            return str(name)
    return None


def _parse(spec: str) -> tuple[str, str | None, str, Path | None]:
    """(open_clip model name, pretrained tag/file or None, model id before its weights digest, weights
    file when the spec names one) for a spec string."""
    spec = spec.strip()
    if not spec:
        raise ModelError("empty open_clip spec; use e.g. 'ViT-B-32/laion2b_s34b_b79k' or 'ARCH=/path/ckpt.pt'")
    if spec.startswith("hf-hub:"):
        return spec, None, f"open_clip:{spec}", None
    if spec.startswith("local-dir:"):
        folder = Path(spec.removeprefix("local-dir:")).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ModelError(f"local-dir {folder} has no open_clip_config.json")
        from open_clip.factory import _find_checkpoint_in_dir

        ckpt = _find_checkpoint_in_dir(folder)
        if ckpt is None:
            raise ModelError(f"local-dir {folder} has no weights file (.safetensors/.bin/.pth)")
        return f"local-dir:{folder.resolve()}", None, f"open_clip:{folder.name}", Path(ckpt)
    arch, ckpt = None, None
    m = re.match(r"^([A-Za-z0-9_.\-]+)[=:](.+)$", spec)
    if m and Path(m.group(2)).expanduser().suffix in _CKPT_SUFFIXES:
        arch, ckpt = m.group(1), m.group(2)
    elif Path(spec).expanduser().is_file() or Path(spec).suffix in _CKPT_SUFFIXES:
        ckpt = spec
    if ckpt is not None:
        path = Path(ckpt).expanduser()
        if not path.is_file():
            raise ModelError(f"checkpoint file not found: {path}")
        if arch is None:
            if (path.parent / "open_clip_config.json").is_file():
                return _parse(f"local-dir:{path.parent}")
            arch = _guess_arch(path)
            if arch is None:
                raise ModelError(
                    f"cannot tell the architecture of {path.name}; use 'ARCH=/path/ckpt.pt' "
                    "(e.g. 'ViT-B-32=/path/RemoteCLIP-ViT-B-32.pt')"
                )
        return arch, str(path.resolve()), f"open_clip:{arch}", path
    name, _, tag = spec.partition("/")
    return name, tag or None, f"open_clip:{name}/{tag}" if tag else f"open_clip:{name}", None


def _download_weights(name: str, tag: str | None) -> Path:
    """The weights file open_clip loads for an ``hf-hub:`` name or a pretrained tag (from its download
    cache), for the model id to hash. A hub repo without one is refused: open_clip quietly builds random
    weights then."""
    from open_clip.pretrained import download_pretrained, download_pretrained_from_hf, get_pretrained_cfg

    if name.startswith("hf-hub:"):
        target = download_pretrained_from_hf(name.removeprefix("hf-hub:"))
    else:
        target = download_pretrained(get_pretrained_cfg(name, tag or ""))
    if not target or not Path(target).is_file():
        raise ModelError(f"no weights file for open_clip model {name}{'/' + tag if tag else ''}")
    return Path(target)


def load_open_clip_embedder(
    spec: str,
    *,
    device: str | None = None,
    batch_size: int = 32,
    precision: str = "fp32",
    runtime: str = "auto",
) -> Embedder:
    """Entry point ``open_clip``: build an Embedder from an open_clip spec (see module docstring).

    Its model id hashes the weights (see the module docstring). Runs in torch; ``runtime='onnx'`` is
    refused (only geosearch-lite-clip has an ONNX Runtime path)."""
    import open_clip

    check_runtime(runtime)
    if runtime == "onnx":
        raise ModelError(f"ONNX runtime is available for geosearch-lite-clip only, not {spec!r}; use runtime='torch'")

    name, pretrained, label, weights = _parse(spec)
    schema = name.split(":", 1)[0] if name.startswith(("hf-hub:", "local-dir:")) else None
    if schema is None and name not in open_clip.list_models():
        raise ModelError(
            f"unknown open_clip architecture {name!r}; see open_clip.list_models() "
            "(e.g. ViT-B-32, ViT-L-14, RN50) or use hf-hub:/local-dir:/a checkpoint path"
        )
    if schema is None and pretrained and weights is None:
        tags = [t for m, t in open_clip.list_pretrained() if m == name]
        if pretrained not in tags:
            raise ModelError(f"unknown pretrained tag {pretrained!r} for {name}; known: {', '.join(tags)}")
    try:
        downloaded = weights is None and (schema == "hf-hub" or bool(pretrained))
        if weights is None and not downloaded:  # random weights: the same for every load of this architecture
            log.warning("open_clip model %s has random weights (no pretrained tag or checkpoint)", name)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        if downloaded:  # the file open_clip has just fetched (or found in its cache)
            weights = _download_weights(name, pretrained)
        tokenizer = open_clip.get_tokenizer(name)
    except ModelError:
        raise
    except Exception as exc:  # open_clip/hub raise RuntimeError, OSError, HTTP errors, ValueError
        from_hub = schema == "hf-hub" or (schema is None and pretrained and not Path(pretrained).is_file())
        where = "the Hugging Face Hub" if from_hub else "disk"
        offline = any(
            s in f"{type(exc).__name__} {exc}".lower()
            for s in ("offline", "connection", "resolve", "network", "timed out", "max retries", "hub")
        )
        hint = " (no network access? pre-download the weights or use a checkpoint path)" if offline else ""
        raise ModelError(f"cannot load open_clip model {spec!r} from {where}: {exc}{hint}") from exc
    model_id = f"{label}@{file_digest(weights)}" if weights is not None else f"{label}@random-{state_digest(model)}"
    size, mean, std = _preprocess_params(model, preprocess)
    return OpenClipEmbedder(
        model,
        tokenizer,
        model_id=model_id,
        image_size=size,
        mean=mean,
        std=std,
        device=device,
        batch_size=batch_size,
        precision=precision,
    )


def _preprocess_params(model: nn.Module, preprocess: Any) -> tuple[tuple[int, int], list[float], list[float]]:
    """Image size, mean and std from the model's own preprocess config."""
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg: dict[str, Any] = {}
    visual = getattr(model, "visual", None)
    cfg.update(getattr(visual, "preprocess_cfg", None) or {})
    size: Any = cfg.get("size") or getattr(visual, "image_size", None) or 224
    size_t = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean = list(cfg.get("mean") or OPENAI_DATASET_MEAN)
    std = list(cfg.get("std") or OPENAI_DATASET_STD)
    if not cfg:  # older open_clip: read the Normalize transform
        for t in getattr(preprocess, "transforms", []):
            if type(t).__name__ == "Normalize":
                mean, std = list(t.mean), list(t.std)
    return size_t, [float(v) for v in mean], [float(v) for v in std]


def write_local_dir(model_cfg: dict[str, Any], state: dict[str, torch.Tensor], folder: Path) -> Path:
    """Save an open_clip model as a ``local-dir:`` folder (config + safetensors); used by tests/tools."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    return folder
