"""The trained part of lite-capret: a linear map from an image embedding to soft LM input tokens."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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
