"""geosearch-lite-capret: RS-CapRet-style captioner (Silva et al.).

The embedder's joint-space image embedding is mapped by a small trained linear layer to ``k``
soft-prefix vectors in the input-embedding space of a frozen causal LM (default: Gemma 3 270M,
shipped as a GGUF inside PyPI packages), which then writes the caption, batched over chips.

Modules, in the order a caption flows through them:

- ``mapper``: PrefixMapper, the trained layer (image embedding -> k soft tokens).
- ``lm``: loading the frozen LM; the packaged Gemma GGUF is converted once to a safetensors cache.
- ``decoding``: DecodeOptions and PrefixDecoder (greedy or beam search from [BOS] + prefix).
- ``captioner``: CapRetCaptioner (embedder -> mapper -> decoder) and the entry point's factory.
"""

from geosearch.plugins.capret.captioner import (
    CONFIG_NAME,
    MAPPER_NAME,
    MODEL_ID,
    WEIGHTS_DIR,
    CapRetCaptioner,
    finish_caption,
    load_capret_captioner,
    read_config,
)
from geosearch.plugins.capret.decoding import DecodeOptions, PrefixDecoder, stop_ids_for
from geosearch.plugins.capret.lm import DEFAULT_LM, gemma_cache_dir, lm_fingerprint, load_lm, resolve_lm
from geosearch.plugins.capret.mapper import PrefixMapper, embed_scale_of, prefix_out_scale

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_LM",
    "MAPPER_NAME",
    "MODEL_ID",
    "WEIGHTS_DIR",
    "CapRetCaptioner",
    "DecodeOptions",
    "PrefixDecoder",
    "PrefixMapper",
    "embed_scale_of",
    "finish_caption",
    "gemma_cache_dir",
    "lm_fingerprint",
    "load_capret_captioner",
    "load_lm",
    "prefix_out_scale",
    "read_config",
    "resolve_lm",
    "stop_ids_for",
]
