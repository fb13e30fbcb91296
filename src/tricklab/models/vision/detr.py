"""DETR (Carion, Massa, Synnaeve, Usunier, Kirillov & Zagoruyko 2020, "End-to-End Object Detection with
Transformers", ECCV), small enough to train on 2 CPU cores.

Layout (defaults on a (B, 1, 64, 64) canvas: 8 x 8 = 64 memory tokens)::

    backbone  conv3x3(C_in -> w0, stride 2) - BN - ReLU, then one ResNet basic block of stride 2 per further
              width (tricklab.layers.conv.BasicBlock)                    (B, w_last, 8, 8): stride 8
    project   1x1 conv to dim; flattened to (B, HW, dim); fixed 2-D sine-cosine positions P (sincos_2d)
    encoder   enc_layers x [x + SelfAttn(q = k = LN(x) + P, v = LN(x)); x + FFN(LN(x))]
    decoder   num_queries learned object queries: positions E and initial contents t_0 (two tables);
              dec_layers x [t + SelfAttn(q = k = LN(t) + E, v = LN(t)); t + CrossAttn(q = LN(t) + E,
              k = memory + P, v = memory); t + FFN(LN(t))]
    heads     per decoder layer, after a shared LayerNorm: class = Linear(dim -> C + 1) (the last class is
              "no object"), box = 3-layer MLP -> sigmoid (cx, cy, w, h) normalised to the image

As in the paper (sec. 3.2), positions are added to queries and keys at every attention layer, not to values;
decoder self-attention is not causal (all queries are decoded in parallel); the outputs of every decoder layer
go through the shared heads so that auxiliary losses can supervise them. The attention layers are
:class:`tricklab.layers.attention.MultiHeadAttention`. Layers are pre-LN (Xiong et al. 2020) rather than the
paper's post-LN: it trains without warm-up at this scale. With pre-LN the paper's t_0 = 0 would make the first
decoder LayerNorm see constant inputs (its scale would get no gradient), so the slots start from a learned content
table instead, as Deformable DETR splits each query into a position and a content part (Zhu et al. 2021, ICLR).

``forward(x)`` returns ``{"logits": (B, Q, C+1), "boxes": (B, Q, 4), "aux": [{"logits", "boxes"}, ...]}``
(aux = the dec_layers - 1 earlier layers); :func:`tricklab.evaluate.detection.decode_set_predictions` turns it
into per-image detections (each query one detection of its best real class).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.attention import MultiHeadAttention
from tricklab.layers.conv import BasicBlock
from tricklab.models import as_int_tuple, check_positive
from tricklab.models.vision.vit import sincos_2d

__all__ = ["DETR", "DETRDecoderLayer", "DETREncoderLayer", "detr", "detr_predict", "pack_predictions",
           "unpack_predictions"]


def _ffn(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class DETREncoderLayer(nn.Module):
    """Pre-LN encoder layer with positions added to queries and keys: x (B, S, D), pos (S, D) -> (B, S, D)."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.ffn = _ffn(dim, hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        h = self.norm1(x)
        qk = h + pos
        x = x + self.drop(self.attn(qk, qk, h))
        return x + self.drop(self.ffn(self.norm2(x)))


class DETRDecoderLayer(nn.Module):
    """Pre-LN decoder layer: query self-attention, cross-attention to the memory, FFN.

    t (B, Q, D) object slots, query_pos (Q, D), memory (B, S, D), pos (S, D) -> (B, Q, D)."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout)
        self.ffn = _ffn(dim, hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, t: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor) -> Tensor:
        h = self.norm1(t)
        qk = h + query_pos
        t = t + self.drop(self.self_attn(qk, qk, h))
        h = self.norm2(t)
        t = t + self.drop(self.cross_attn(h + query_pos, memory + pos, memory))
        return t + self.drop(self.ffn(self.norm3(t)))


class DETR(nn.Module):
    """Small DETR; build it with :func:`detr`."""

    def __init__(self, in_channels: int, num_classes: int, backbone_widths: Sequence[int], dim: int, heads: int,
                 enc_layers: int, dec_layers: int, num_queries: int, hidden: int, dropout: float,
                 stem_stride: int = 2) -> None:
        super().__init__()
        self.num_classes, self.num_queries = num_classes, num_queries
        w0 = backbone_widths[0]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, w0, 3, stride=stem_stride, padding=1, bias=False),
                                   nn.BatchNorm2d(w0),
                                   nn.ReLU()]
        prev = w0
        for w in backbone_widths[1:]:
            layers.append(BasicBlock(prev, w, stride=2))
            prev = w
        self.backbone = nn.Sequential(*layers)
        self.input_proj = nn.Conv2d(prev, dim, 1)
        self.encoder = nn.ModuleList(DETREncoderLayer(dim, heads, hidden, dropout) for _ in range(enc_layers))
        self.enc_norm = nn.LayerNorm(dim)
        self.query_embed = nn.Parameter(torch.randn(num_queries, dim))    # query positions E
        self.query_content = nn.Parameter(torch.randn(num_queries, dim))  # initial slot contents t_0
        self.decoder = nn.ModuleList(DETRDecoderLayer(dim, heads, hidden, dropout) for _ in range(dec_layers))
        self.dec_norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.box_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(),
                                      nn.Linear(dim, 4))

    def _heads(self, t: Tensor) -> dict[str, Tensor]:
        h = self.dec_norm(t)
        return {"logits": self.class_head(h), "boxes": self.box_head(h).sigmoid()}

    def forward(self, x: Tensor) -> dict[str, Any]:
        if x.dim() != 4:
            raise ValueError(f"DETR expects images (B, C, H, W), got shape {tuple(x.shape)}")
        f = self.input_proj(self.backbone(x))                       # (B, D, h, w)
        B, D, h, w = f.shape
        pos = sincos_2d((h, w), D, dtype=f.dtype).to(f.device)      # (h*w, D)
        memory = f.flatten(2).transpose(1, 2)                       # (B, h*w, D)
        for layer in self.encoder:
            memory = layer(memory, pos)
        memory = self.enc_norm(memory)
        t = self.query_content.expand(B, -1, -1)
        outs = []
        for layer in self.decoder:
            t = layer(t, self.query_embed, memory, pos)
            outs.append(self._heads(t))
        return {**outs[-1], "aux": outs[:-1]}


def detr(in_channels: int = 1, num_classes: int = 10, backbone_widths: Sequence[int] = (16, 32, 64),
         dim: int = 64, heads: int = 4, enc_layers: int = 2, dec_layers: int = 3, num_queries: int = 10,
         hidden: int = 128, dropout: float = 0.0, stem_stride: int = 2) -> DETR:
    """Small DETR: ``backbone_widths`` (stem of stride ``stem_stride``, then one stride-2 block per further
    width: stride 8 by default),
    Transformer width ``dim`` with ``heads`` heads, ``enc_layers`` / ``dec_layers``, ``num_queries`` object
    queries (more than the most objects per image), FFN width ``hidden``."""
    widths = as_int_tuple(backbone_widths, model="detr", name="backbone_widths", what="backbone stage")
    check_positive("detr", in_channels=in_channels, num_classes=num_classes, dim=dim, heads=heads,
                   enc_layers=enc_layers, dec_layers=dec_layers, num_queries=num_queries, hidden=hidden,
                   stem_stride=stem_stride)
    if dim % heads or dim % 4:
        raise ConfigError(f"model 'detr': dim={dim} must be divisible by heads={heads} and by 4 (2-D sine-cosine "
                          f"positions)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model 'detr': dropout must be a float in [0, 1), got {dropout!r}")
    return DETR(in_channels, num_classes, widths, dim, heads, enc_layers, dec_layers, num_queries, hidden,
                float(dropout), stem_stride)


def pack_predictions(outputs: dict[str, Any]) -> Tensor:
    """(B, Q, C+1+4): logits and boxes side by side, one tensor, for the trainer's ``predict_fn``."""
    return torch.cat([outputs["logits"], outputs["boxes"]], dim=-1)


def unpack_predictions(packed: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack_predictions`: (logits (B, Q, C+1), boxes (B, Q, 4))."""
    return packed[..., :-4], packed[..., -4:]


@torch.no_grad()
def detr_predict(model: nn.Module, data: tuple[Tensor, Tensor], batch_size: int = 250) -> tuple[Tensor, Tensor]:
    """The trainer's ``predict_fn``: ``data`` = (images (N, C, H, W), padded targets (N, M, 5)) ->
    (packed predictions (N, Q, C+1+4), targets), in batches of ``batch_size`` (the model is already in eval mode)."""
    x, targets = data
    outs = [pack_predictions(model(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(outs), targets
