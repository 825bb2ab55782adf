"""The lite-capret captioner and the factory that assembles it from a weights dir.

A weights dir holds ``config.json`` (the mapper's shape, the LM and embedder it was trained against,
the decoding defaults, the caption vocabulary) and ``mapper.safetensors`` (the trained PrefixMapper).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geosearch.errors import ModelError
from geosearch.plugins.base import Embedder, ImageBatch, check_image_batch
from geosearch.plugins.capret.decoding import DecodeOptions, PrefixDecoder
from geosearch.plugins.capret.lm import load_lm
from geosearch.plugins.capret.mapper import PrefixMapper
from geosearch.plugins.nearest_caption import check_embedder_options

MODEL_ID = "geosearch-lite-capret"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "lite_capret"
CONFIG_NAME = "config.json"
MAPPER_NAME = "mapper.safetensors"


def finish_caption(text: str) -> str:
    """One sentence, capitalised, ending in a period; never empty."""
    text = " ".join(text.replace(" .", ".").split()).rstrip(". ")
    if not text:
        return "An aerial image."
    return text[0].upper() + text[1:] + "."


class CapRetCaptioner:
    """Frozen embedder image tower -> trained prefix mapper -> frozen causal LM."""

    def __init__(
        self,
        embedder: Embedder,
        mapper: PrefixMapper,
        lm: Any,
        tokenizer: Any,
        decoding: DecodeOptions,
        batch_size: int = 32,
        model_id: str = MODEL_ID,
    ) -> None:
        self.model_id = model_id
        self.embedder = embedder
        self.mapper = mapper.eval()
        self.lm = lm
        self.tokenizer = tokenizer
        self.decoder = PrefixDecoder(lm, tokenizer, decoding)
        self.batch_size = max(1, int(batch_size))

    @torch.inference_mode()
    def caption_vectors(self, feats: np.ndarray[Any, Any]) -> list[str]:
        """Captions from this captioner's embedder's image vectors (ingest and validation reuse them)."""
        dtype = self.lm.get_input_embeddings().weight.dtype
        out: list[str] = []
        for i in range(0, len(feats), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(feats[i : i + self.batch_size], dtype=np.float32))
            prefix = self.mapper(x).to(dtype)
            out.extend(finish_caption(t) for t in self.decoder.generate(prefix))
        return out

    def caption(self, images: ImageBatch) -> list[str]:
        images = check_image_batch(images)
        if len(images) == 0:
            return []
        feats = np.asarray(self.embedder.encode_images(images), dtype=np.float32)
        return self.caption_vectors(feats)


def read_config(weights_dir: Path) -> dict[str, Any]:
    path = weights_dir / CONFIG_NAME
    if not path.is_file() or not (weights_dir / MAPPER_NAME).is_file():
        raise ModelError(
            f"lite-capret weights not found in {weights_dir} (expected {CONFIG_NAME} and {MAPPER_NAME}); "
            "train them with `geosearch-train captioner`"
        )
    cfg: dict[str, Any] = json.loads(path.read_text())
    return cfg


def load_capret_captioner(
    spec: str = "",
    *,
    embedder: Embedder | str | None = None,
    batch_size: int = 32,
    beams: int | None = None,
    **embedder_options: Any,
) -> CapRetCaptioner:
    """Factory for the `lite-capret` entry point.

    ``spec``: a weights dir (default: the shipped ``weights/lite_capret``). Options: ``embedder`` (a
    loaded Embedder, reused when it is the one the mapper was trained against, else the mapper's own
    embedder is loaded; or an embedder spec), ``batch_size`` (chips decoded at once), ``beams``
    (1: greedy; more: beam search; default: the config's), and the embedder loader's
    (nearest_caption.EMBEDDER_OPTIONS), which configure the embedder this loads. Any other option is a
    ModelError.
    """
    check_embedder_options("lite-capret", embedder_options, ("embedder", "batch_size", "beams"))
    weights_dir = Path(spec).expanduser() if spec else WEIGHTS_DIR
    cfg = read_config(weights_dir)
    image_embedder = _trained_embedder(cfg, embedder, embedder_options)
    lm, tok = load_lm(str(cfg["lm"]), dtype=getattr(torch, str(cfg.get("lm_dtype", "float32"))))
    if lm.config.hidden_size != int(cfg["hidden_size"]):
        raise ModelError(f"LM hidden size {lm.config.hidden_size} != mapper's {cfg['hidden_size']}")
    mapper = _load_mapper(cfg, weights_dir / MAPPER_NAME)
    decoding = _decode_options(cfg, tok, beams)
    return CapRetCaptioner(image_embedder, mapper, lm, tok, decoding, batch_size=batch_size)


def _trained_embedder(cfg: dict[str, Any], given: Embedder | str | None, options: dict[str, Any]) -> Embedder:
    """The embedder the mapper was trained against: `given` when it is that one, else loaded."""
    from geosearch.models import load_embedder

    trained_on = str(cfg["embedder_model_id"])
    embedder: Any = given
    if isinstance(embedder, Embedder) and embedder.model_id != trained_on:
        embedder = None  # the engine's search model differs: caption with the mapper's own embedder
    if embedder is None or isinstance(embedder, str):
        embedder = load_embedder(embedder or cfg.get("embedder_spec") or None, **options)
    if not isinstance(embedder, Embedder):
        raise ModelError("the `embedder` option must be an Embedder or an embedder spec")
    if embedder.model_id != trained_on:
        raise ModelError(
            f"lite-capret mapper was trained against embedder {trained_on!r} but the embedder in use "
            f"is {embedder.model_id!r}; its image features would be meaningless to the mapper. "
            "Use the matching embedder or retrain with `geosearch-train captioner --embedder SPEC`."
        )
    if embedder.dim != int(cfg["feature_dim"]):
        raise ModelError(f"embedder dim {embedder.dim} != mapper feature_dim {cfg['feature_dim']}")
    return embedder


def _load_mapper(cfg: dict[str, Any], path: Path) -> PrefixMapper:
    from safetensors.torch import load_file

    mapper = PrefixMapper(
        int(cfg["feature_dim"]), int(cfg["hidden_size"]), int(cfg["prefix_tokens"]), float(cfg["out_scale"])
    )
    try:
        mapper.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"cannot load lite-capret mapper weights: {exc}") from exc
    return mapper


def _decode_options(cfg: dict[str, Any], tokenizer: Any, beams: int | None) -> DecodeOptions:
    """The config's decoding, with `beams` overriding its beam count when given."""
    dec = cfg.get("decoding", {})
    return DecodeOptions(
        max_new_tokens=int(dec.get("max_new_tokens", 30)),
        beams=int(beams if beams is not None else dec.get("beams", 1)),
        allowed_token_ids=cfg.get("allowed_token_ids"),
        stop_token_ids=[int(t) for t in cfg.get("stop_token_ids", [tokenizer.eos_token_id])],
        length_penalty=float(dec.get("length_penalty", 0.0)),
    )
