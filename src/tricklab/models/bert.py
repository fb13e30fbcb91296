"""BERT (masked-LM pre-training, sequence classification) and ELECTRA (replaced-token detection).

BERT (Devlin et al. 2019): a bidirectional Transformer encoder

    h_0 = LayerNorm(E[x] + P[:T]),  h_l = Block_l(h_{l-1}) (no causal mask),  H = LayerNorm(h_L)   (B, T, D)

pre-trained to recover masked tokens: ``logits = LN(GELU(H W_t + b_t)) E^T + b`` (the MLM head with the
output matrix tied to the input embedding), loss = cross-entropy at the masked positions only (``-100``
elsewhere; masking itself is :func:`tricklab.data.datasets.text.mlm_mask`). The blocks are pre-LN
(Xiong et al. 2020) rather than BERT's post-LN, which trains stably without warm-up at these small sizes.

``bert_classifier`` puts a linear layer on the mean of H over non-padding positions (or on a learned CLS vector
prepended to the sequence) and can start from the encoder of a pre-trained ``bert`` run
(``pretrained="runs/.../model.safetensors"``); the keys and shapes must match exactly.

ELECTRA (Clark et al. 2020): a small MLM *generator* G fills masked positions with samples, and a
*discriminator* D predicts for every token whether it was replaced:

    L = L_MLM(x, G) + lambda * L_Disc(x, D),    L_Disc = mean_t BCE(D(x_corrupt)_t, [x_corrupt_t != x_t])

with lambda = 50 and no gradient through the sampling (eq. 1-3 and §2 of the paper). A token that the
generator happens to sample correctly counts as *original*.

References:
    Devlin, Chang, Lee & Toutanova 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
        Understanding", NAACL.
    Clark, Luong, Le & Manning 2020, "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than
        Generators", ICLR.
    Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture", ICML.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.attention import TransformerBlock
from tricklab.layers.positional import LearnedPositionalEmbedding
from tricklab.models import MODELS, as_shape, check_positive
from tricklab.models.gpt import check_tokens, gpt2_init_

__all__ = [
    "BertClassifier",
    "BertEncoder",
    "BertMLM",
    "ElectraDiscriminator",
    "ElectraOutput",
    "ElectraPretrainer",
    "albert",
    "bert",
    "bert_classifier",
    "distil_student",
    "electra_forward",
    "electra_loss",
    "load_encoder_weights",
    "make_electra",
    "select_positions",
]


class BertEncoder(nn.Module):
    """Token + learned position embeddings, LayerNorm, bidirectional pre-LN blocks, final LayerNorm.

    ``forward(x (B, T) int64, key_padding_mask (B, T) bool | None = None, cls (E,) | None = None) -> (B, T', D)``
    with T' = T, or T + 1 when a ``cls`` vector is prepended (then output position 0 is the CLS summary).

    ALBERT (Lan et al. 2020) is two options of this encoder: ``embedding_dim=E`` factorizes the embedding (token
    and position tables V x E and T x E, LayerNorm in E, then a linear E -> H = d_model) and ``share_layers=True``
    applies one block ``n_layer`` times. With both off (the default) it is BERT, unchanged.
    """

    def __init__(self, vocab_size: int, max_len: int, d_model: int = 128, n_layer: int = 4, n_heads: int = 4,
                 dropout: float = 0.1, d_ff: int | None = None, embedding_dim: int | None = None,
                 share_layers: bool = False) -> None:
        super().__init__()
        check_positive("bert", vocab_size=vocab_size, max_len=max_len, d_model=d_model, n_layer=n_layer,
                       n_heads=n_heads)
        if d_model % n_heads:
            raise ConfigError(f"model 'bert': d_model={d_model} must be divisible by n_heads={n_heads}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model 'bert': dropout must be in [0, 1), got {dropout}")
        if embedding_dim is not None:
            check_positive("bert", embedding_dim=embedding_dim)
        self.vocab_size, self.max_len, self.d_model, self.n_layer = vocab_size, max_len, d_model, n_layer
        # ALBERT's factorized embedding (Lan et al. 2020, sec. 3.1): tokens and positions live in E dimensions
        # (V x E + T x E parameters) and one E x H projection lifts their sum to the hidden size H = d_model
        self.embedding_dim = d_model if embedding_dim is None else int(embedding_dim)
        e = self.embedding_dim
        self.tok_emb = nn.Embedding(vocab_size, e)
        self.pos_emb = LearnedPositionalEmbedding(max_len, e)
        self.emb_norm = nn.LayerNorm(e)
        self.emb_proj = nn.Linear(e, d_model) if e != d_model else None
        self.drop = nn.Dropout(dropout)
        # ALBERT's cross-layer sharing (sec. 3.1): one block applied n_layer times, so the block parameters do not
        # grow with depth; the state dict then holds blocks.0 only
        self.share_layers = bool(share_layers)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff=d_ff, dropout=dropout, norm_first=True, causal=False)
            for _ in range(1 if self.share_layers else n_layer)
        )
        self.final_norm = nn.LayerNorm(d_model)
        gpt2_init_(self)  # BERT's init: N(0, 0.02) weights, zero biases

    def layers(self) -> list[nn.Module]:
        """The blocks in the order they are applied (the one shared block n_layer times under sharing)."""
        return [self.blocks[0]] * self.n_layer if self.share_layers else list(self.blocks)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, cls: Tensor | None = None) -> Tensor:
        check_tokens(x, "BertEncoder", self.max_len)
        if key_padding_mask is not None and (key_padding_mask.shape != x.shape or key_padding_mask.dtype != torch.bool):
            raise ValueError(f"BertEncoder: key_padding_mask must be bool of shape {tuple(x.shape)} (True = padding), "
                             f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
        h = self.pos_emb(self.tok_emb(x))  # (B, T, D)
        if cls is not None:
            # the CLS vector carries no position: it is told apart by its own learned value
            h = torch.cat([cls.expand(h.shape[0], 1, -1).to(h.dtype), h], dim=1)  # (B, T+1, D)
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (1, 0), value=False)
        h = self.drop(self.emb_norm(h))  # (B, T, E)
        if self.emb_proj is not None:
            h = self.emb_proj(h)  # (B, T, H)
        for block in self.layers():
            h = block(h, key_padding_mask=key_padding_mask)  # every position sees every non-padding position
        return self.final_norm(h)


class BertMLM(nn.Module):
    """BERT encoder + MLM head (dense, GELU, LayerNorm, decoder tied to the token embedding + bias).

    ``forward(x (B, T), key_padding_mask=None) -> logits (B, T, vocab_size)``. ``mask_id`` is the ``[MASK]`` id
    (ELECTRA masks with it and never samples it).
    """

    def __init__(self, encoder: BertEncoder, mask_id: int | None = None) -> None:
        super().__init__()
        v, d, e = encoder.vocab_size, encoder.d_model, encoder.embedding_dim
        self.mask_id = v - 1 if mask_id is None else int(mask_id)
        if not 0 <= self.mask_id < v:
            raise ConfigError(f"model 'bert': mask_id={self.mask_id} is outside the vocabulary [0, {v})")
        self.encoder = encoder
        # H -> E so the tied decoder E^T (V x E) applies; E = H for BERT, E < H for ALBERT's factorized embedding
        self.transform = nn.Sequential(nn.Linear(d, e), nn.GELU(), nn.LayerNorm(e))
        self.bias = nn.Parameter(torch.zeros(v))
        gpt2_init_(self.transform)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self.head(self.encoder(x, key_padding_mask))

    def head(self, hidden: Tensor) -> Tensor:
        """The MLM head on encoder outputs (B, T, H) -> logits (B, T, V) (DistilBERT needs both)."""
        h = self.transform(hidden)  # (B, T, E)
        return F.linear(h, self.encoder.tok_emb.weight, self.bias)  # (B, T, V), tied decoder


def _clean_key(key: str) -> str:
    # torch.compile wraps the model as _orig_mod, DDP as module: strip either so any run's file loads
    for prefix in ("_orig_mod.", "module."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _read_safetensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: {path}; pass the model.safetensors of a 'bert' run")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"cannot read {path} as safetensors: {exc}") from exc
    return {_clean_key(k): v for k, v in tensors.items()}


def load_encoder_weights(encoder: BertEncoder, path: str | os.PathLike[str], prefix: str = "encoder.") -> None:
    """Copy the ``prefix``-ed tensors of a safetensors file into ``encoder``; strict about keys and shapes.

    Other keys of the file (the MLM head) are ignored. Missing keys, extra encoder keys or a shape mismatch
    raise ValueError listing each one, so loading a checkpoint of another architecture never half-succeeds.
    """
    tensors = _read_safetensors(path)
    found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not found:
        sample = ", ".join(sorted(tensors)[:5])
        raise ValueError(f"{path} holds no '{prefix}*' tensors (it has e.g. {sample}); pass the model.safetensors "
                         "of a 'bert' (BertMLM) run")
    own = encoder.state_dict()
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    wrong = sorted(f"{k}: file {tuple(found[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(found) if found[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match this encoder: missing {missing or 'none'}; unexpected {unexpected or 'none'}; "
            f"shape mismatches {wrong or 'none'}. Build the classifier with the bert run's d_model, n_layer, "
            "n_heads and vocab_size"
        )
    encoder.load_state_dict(found, strict=True)


class BertClassifier(nn.Module):
    """BERT encoder + pooling + dropout + linear: ``forward(x (B, T), key_padding_mask=None) -> (B, num_classes)``.

    ``pooling="mean"``: masked mean of the encoder outputs over non-padding positions.
    ``pooling="cls"``: a learned vector is prepended and its output (position 0) is classified, as BERT's [CLS].
    """

    def __init__(self, encoder: BertEncoder, num_classes: int, pooling: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"model 'bert_classifier': pooling must be 'mean' or 'cls', got {pooling!r}")
        check_positive("bert_classifier", num_classes=num_classes)
        self.encoder, self.pooling = encoder, pooling
        # the CLS vector is prepended before the embedding LayerNorm, so it lives in the embedding size E
        self.cls = nn.Parameter(torch.randn(encoder.embedding_dim) * 0.02) if pooling == "cls" else None
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.d_model, num_classes)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        h = self.encoder(x, key_padding_mask, cls=self.cls)  # (B, T or T+1, D)
        if self.cls is not None:
            pooled = h[:, 0]  # (B, D)
        elif key_padding_mask is None:
            pooled = h.mean(1)
        else:
            keep = (~key_padding_mask).to(h.dtype)[..., None]  # (B, T, 1)
            pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.head(self.drop(pooled))


@MODELS.register("bert", summary="BERT masked LM: bidirectional pre-LN Transformer, tied MLM head (Devlin 2019)")
def bert(input_shape: tuple[int, ...], num_classes: int, n_layer: int = 4, d_model: int = 128, n_heads: int = 4,
         dropout: float = 0.1, d_ff: int | None = None, mask_id: int | None = None) -> nn.Module:
    """BertMLM for token ids of shape ``(T,)``; ``num_classes`` = vocabulary size including ``[MASK]``
    (``mask_id`` defaults to the last id, where ``shakespeare-mlm`` puts it)."""
    (length,) = as_shape(input_shape, model="bert", ndim=(1,))
    enc = BertEncoder(num_classes, length, d_model, n_layer, n_heads, dropout, d_ff)
    return BertMLM(enc, mask_id)


@MODELS.register("bert_classifier", summary="BERT encoder + mean/CLS pooling + linear; can load a bert run's encoder")
def bert_classifier(input_shape: tuple[int, ...], num_classes: int, vocab_size: int | None = None, n_layer: int = 4,
                    d_model: int = 128, n_heads: int = 4, dropout: float = 0.1, d_ff: int | None = None,
                    pooling: str = "mean", pretrained: str | None = None) -> nn.Module:
    """Sequence classifier over token ids ``(T,)`` into ``num_classes`` classes.

    ``vocab_size`` is the token vocabulary (e.g. ``len(dataset.meta["vocab"])``); with ``pretrained`` it may be
    left out and is read from the checkpoint, as is the position-table length (which must be >= T). The rest
    of the architecture must match the checkpoint (checked key by key).
    """
    (length,) = as_shape(input_shape, model="bert_classifier", ndim=(1,))
    max_len = length
    if pretrained is not None:
        tensors = _read_safetensors(pretrained)
        emb, pos = tensors.get("encoder.tok_emb.weight"), tensors.get("encoder.pos_emb.weight")
        if emb is None or pos is None:
            raise ValueError(f"{pretrained} has no encoder.tok_emb.weight / encoder.pos_emb.weight: it is not the "
                             "model.safetensors of a 'bert' run")
        if vocab_size is not None and vocab_size != emb.shape[0]:
            raise ValueError(f"vocab_size={vocab_size} but {pretrained} embeds {emb.shape[0]} tokens; drop vocab_size "
                             "or use the same vocabulary as the bert run")
        vocab_size, max_len = int(emb.shape[0]), int(pos.shape[0])
        if max_len < length:
            raise ValueError(f"{pretrained} was trained with {max_len} positions, shorter than the input length "
                             f"{length}")
    if vocab_size is None:
        raise ConfigError("model 'bert_classifier': pass vocab_size= the number of token ids "
                          "(len(dataset.meta['vocab'])) or pretrained= a bert run's model.safetensors")
    enc = BertEncoder(vocab_size, max_len, d_model, n_layer, n_heads, dropout, d_ff)
    if pretrained is not None:
        load_encoder_weights(enc, pretrained)
    return BertClassifier(enc, num_classes, pooling, dropout)


@MODELS.register("albert", summary="ALBERT masked LM: BERT with a factorized embedding (V x E, E x H) and one "
                                   "block shared by all layers (Lan 2020)")
def albert(input_shape: tuple[int, ...], num_classes: int, n_layer: int = 4, d_model: int = 128, n_heads: int = 4,
           embedding_dim: int = 32, share_layers: bool = True, dropout: float = 0.1, d_ff: int | None = None,
           mask_id: int | None = None) -> nn.Module:
    """BertMLM whose encoder has ALBERT's factorized embedding (``embedding_dim`` = E) and cross-layer sharing.

    Parameters (biases included, H = d_model, F = d_ff, V = num_classes, T = input length):
    ``V E + T E + 2 E + (E H + H) + P_block + 2 H`` in the encoder, with ``P_block = 4 H^2 + 4 H + 2 H F + F + H +
    4 H`` counted once however deep the stack, plus the head ``H E + E + 2 E + V``. Sentence-order prediction is
    left out: our BERT has no sentence-pair objective to replace.
    """
    (length,) = as_shape(input_shape, model="albert", ndim=(1,))
    enc = BertEncoder(num_classes, length, d_model, n_layer, n_heads, dropout, d_ff, embedding_dim=embedding_dim,
                      share_layers=share_layers)
    return BertMLM(enc, mask_id)


def distil_student(teacher: BertMLM, n_layer: int | None = None, dropout: float | None = None) -> BertMLM:
    """DistilBERT's student (Sanh et al. 2019, sec. 3): the teacher's architecture with every other layer.

    The student keeps the teacher's width, embeddings, final LayerNorm and MLM head (copied), and its block i
    starts as a copy of teacher block ``2 i`` ("taking one layer out of two"); ``n_layer`` defaults to half the
    teacher's depth (rounded up). The teacher is not modified; the copies share no storage with it.
    """
    if not isinstance(teacher, BertMLM):
        raise TypeError(f"distil_student needs a BertMLM teacher, got {type(teacher).__name__}")
    t_enc = teacher.encoder
    if t_enc.share_layers:
        raise ValueError("distil_student: the teacher shares one block across layers (ALBERT); there are no "
                         "distinct alternate layers to copy")
    n_layer = (t_enc.n_layer + 1) // 2 if n_layer is None else int(n_layer)
    if not 1 <= n_layer <= (t_enc.n_layer + 1) // 2:
        raise ValueError(f"distil_student: n_layer must be in [1, {(t_enc.n_layer + 1) // 2}] for a "
                         f"{t_enc.n_layer}-layer teacher (block i copies teacher block 2i), got {n_layer}")
    block0 = t_enc.blocks[0]
    p = float(block0.dropout.p) if dropout is None else float(dropout)
    enc = BertEncoder(t_enc.vocab_size, t_enc.max_len, t_enc.d_model, n_layer, block0.self_attn.n_heads, p,
                      block0.linear1.out_features, embedding_dim=t_enc.embedding_dim)
    student = BertMLM(enc, teacher.mask_id)
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("encoder.blocks.")}
    for i in range(n_layer):
        prefix = f"encoder.blocks.{2 * i}."
        state.update({f"encoder.blocks.{i}.{k[len(prefix):]}": v for k, v in teacher.state_dict().items()
                      if k.startswith(prefix)})
    student.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return student


# ================================================================================================= ELECTRA
class ElectraDiscriminator(nn.Module):
    """BERT encoder + per-token head: ``forward(x (B, T), key_padding_mask=None) -> (B, T)`` "replaced" logits."""

    def __init__(self, encoder: BertEncoder) -> None:
        super().__init__()
        d = encoder.d_model
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        gpt2_init_(self.head)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        return self.head(self.encoder(x, key_padding_mask)).squeeze(-1)


class ElectraPretrainer(nn.Module):
    """Generator (a :class:`BertMLM`) and discriminator trained jointly with :func:`electra_loss`.

    ``tie_embeddings=True`` shares the token embedding matrix (Clark et al. 2020, §3.2 found it helps); it needs
    the same d_model in both. After pre-training keep ``discriminator.encoder`` and fine-tune it.
    """

    def __init__(self, generator: BertMLM, discriminator: ElectraDiscriminator, tie_embeddings: bool = False) -> None:
        super().__init__()
        if not isinstance(generator, BertMLM) or not isinstance(discriminator, ElectraDiscriminator):
            raise TypeError("ElectraPretrainer(generator, discriminator) takes a BertMLM and an ElectraDiscriminator, "
                            f"got {type(generator).__name__} and {type(discriminator).__name__}")
        g_emb, d_emb = generator.encoder.tok_emb, discriminator.encoder.tok_emb
        if g_emb.num_embeddings != d_emb.num_embeddings:
            raise ValueError(f"generator and discriminator vocabularies differ: {g_emb.num_embeddings} vs "
                             f"{d_emb.num_embeddings}")
        if tie_embeddings:
            if g_emb.weight.shape != d_emb.weight.shape:
                raise ValueError(f"tie_embeddings needs equal embedding shapes, got generator "
                                 f"{tuple(g_emb.weight.shape)} and discriminator {tuple(d_emb.weight.shape)}")
            g_emb.weight = d_emb.weight
        self.generator, self.discriminator = generator, discriminator

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Discriminator logits (B, T) for already-corrupted ids (what a fine-tuning/eval loop would call)."""
        return self.discriminator(x, key_padding_mask)


def make_electra(vocab_size: int, max_len: int, d_model: int = 128, n_layer: int = 4, n_heads: int = 4,
                 generator_d_model: int | None = None, generator_n_heads: int | None = None, dropout: float = 0.1,
                 mask_id: int | None = None, tie_embeddings: bool = False) -> ElectraPretrainer:
    """An ELECTRA pair; the generator defaults to 1/4 of the discriminator's width (the paper's best, §3.2)."""
    g_d = generator_d_model or max(d_model // 4, 1)
    # default generator heads: the largest count <= n_heads that divides its width
    g_h = generator_n_heads or max(h for h in range(1, n_heads + 1) if g_d % h == 0)
    gen = BertMLM(BertEncoder(vocab_size, max_len, g_d, n_layer, g_h, dropout), mask_id)
    disc = ElectraDiscriminator(BertEncoder(vocab_size, max_len, d_model, n_layer, n_heads, dropout))
    return ElectraPretrainer(gen, disc, tie_embeddings)


def select_positions(shape: torch.Size | tuple[int, ...], mask_prob: float, generator: torch.Generator | None = None,
                     key_padding_mask: Tensor | None = None, device: torch.device | str | None = None) -> Tensor:
    """ELECTRA's position choice: exactly k = ceil(mask_prob * T) random positions per row (paper §2).

    Returns a bool (B, T) tensor. With ``key_padding_mask`` the draw is among non-padding positions only
    (k computed from each row's valid length, at least 1 if the row has any).
    """
    if not 0.0 < float(mask_prob) < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    b, t = shape
    scores = torch.rand((b, t), generator=generator, device=device)
    valid = torch.ones((b, t), dtype=torch.bool, device=scores.device)
    if key_padding_mask is not None:
        valid = ~key_padding_mask.to(scores.device)
        scores = scores.masked_fill(~valid, 2.0)  # padding sorts after every real position
    n_valid = valid.sum(1, keepdim=True)
    k = torch.ceil(n_valid.to(torch.float64) * float(mask_prob)).long().clamp(max=t)
    ranks = scores.argsort(1).argsort(1)  # rank of each position in its row
    return (ranks < k) & valid


class ElectraOutput(NamedTuple):
    """What :func:`electra_forward` returns: the total loss and its parts (for logging)."""

    loss: Tensor  # mlm_loss + lambda * rtd_loss
    mlm_loss: Tensor  # generator cross-entropy at the masked positions
    rtd_loss: Tensor  # discriminator BCE over all non-padding positions
    corrupted: Tensor  # (B, T) ids fed to the discriminator
    replaced: Tensor  # (B, T) bool, the discriminator's labels
    disc_logits: Tensor  # (B, T)


def electra_forward(model: ElectraPretrainer, x: Tensor, mask_prob: float = 0.15,
                    generator_rng: torch.Generator | None = None, lambda_: float = 50.0,
                    key_padding_mask: Tensor | None = None) -> ElectraOutput:
    """ELECTRA's joint objective on clean ids ``x`` (B, T) int64 (Clark et al. 2020, eq. 1-3).

    1. choose positions m (:func:`select_positions`), replace them with ``[MASK]``;
    2. generator MLM loss at m; sample x_hat_t ~ softmax(G(x_masked)_t) at m (``[MASK]`` excluded), detached;
    3. x_corrupt = x with x_hat at m; label_t = [x_corrupt_t != x_t];
    4. discriminator BCE on all non-padding tokens; loss = mlm + lambda * rtd.
    """
    if not isinstance(model, ElectraPretrainer):
        raise TypeError(f"electra_forward needs an ElectraPretrainer, got {type(model).__name__}")
    check_tokens(x, "electra_forward")
    if float(lambda_) < 0 or not math.isfinite(float(lambda_)):
        raise ValueError(f"lambda_ must be a finite number >= 0, got {lambda_}")
    gen = model.generator
    m = select_positions(x.shape, mask_prob, generator_rng, key_padding_mask, device=x.device)
    x_masked = x.masked_fill(m, gen.mask_id)
    gen_logits = gen(x_masked, key_padding_mask)  # (B, T, V)
    mlm_loss = F.cross_entropy(gen_logits[m], x[m])
    with torch.no_grad():  # sampling is not differentiable: the discriminator loss does not reach G (§2)
        logits_m = gen_logits[m].float()
        logits_m[:, gen.mask_id] = -math.inf
        probs = torch.softmax(logits_m, dim=-1)
        if generator_rng is not None and probs.device != generator_rng.device:
            raise ValueError(f"generator_rng lives on {generator_rng.device} but the model runs on {probs.device}")
        sampled = torch.multinomial(probs, 1, generator=generator_rng).squeeze(1)
        corrupted = x.clone()
        corrupted[m] = sampled
        replaced = corrupted != x
    disc_logits = model.discriminator(corrupted, key_padding_mask)  # (B, T)
    if key_padding_mask is None:
        rtd = F.binary_cross_entropy_with_logits(disc_logits, replaced.to(disc_logits.dtype))
    else:
        keep = ~key_padding_mask
        rtd = F.binary_cross_entropy_with_logits(disc_logits[keep], replaced[keep].to(disc_logits.dtype))
    return ElectraOutput(mlm_loss + float(lambda_) * rtd, mlm_loss, rtd, corrupted, replaced, disc_logits)


def electra_loss(model: ElectraPretrainer, x: Tensor, mask_prob: float = 0.15,
                 generator_rng: torch.Generator | None = None, lambda_: float = 50.0,
                 key_padding_mask: Tensor | None = None) -> Tensor:
    """Generator MLM loss + ``lambda_`` * replaced-token-detection BCE; see :func:`electra_forward`."""
    return electra_forward(model, x, mask_prob, generator_rng, lambda_, key_padding_mask).loss
