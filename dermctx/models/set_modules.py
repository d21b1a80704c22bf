"""The set-transformer torch modules: score each lesion against the other lesions of its set.

:class:`SetTransformer` is a torch module over padded lesion sets: ``(B, N, D)`` features and a
``(B, N)`` mask (True = a real lesion) in, one logit per lesion out. It is built from the small
blocks of Lee et al. (2019), "Set Transformer": :class:`MAB`, :class:`SAB`, :class:`ISAB`. Each
lesion's score comes from the permutation-equivariant encoder output, never from a pooled vector.

The scikit-learn estimator around it, which reads a lesion table, is
:class:`dermctx.models.set_ranker.SetRanker`. See ``docs/set_transformer.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dermctx.errors import ModelError

__all__ = ["ISAB", "MAB", "MLP", "SAB", "Attention", "SetTransformer", "SetTransformerConfig"]


@dataclass(kw_only=True)
class SetTransformerConfig:
    """Sizes of a :class:`SetTransformer` (all keyword-only).

    Attributes
    ----------
    d_in : int
        Features per lesion.
    d_model : int
        Width of the encoder.
    n_heads : int
        Attention heads; must divide ``d_model``.
    n_inducing : int
        Inducing points per :class:`ISAB` block (cost O(N * n_inducing)); 0 uses full
        self-attention (:class:`SAB`, cost O(N²)).
    n_blocks : int
        Encoder blocks.
    dropout : float
        Dropout on attention weights and residual branches.
    context : bool
        True: each lesion sees its own features and its difference from the patient's mean, then
        attends to the set. False: the same embedding, MLPs and head without any set context (a
        per-lesion baseline of the same size).
    linear_skip : bool
        Add a linear function of the lesion's inputs to its logit ("wide and deep"): the model
        is then at least a logistic regression on them, which matters when one input (a CNN
        logit) already ranks well and the network should only correct it.
    """

    d_in: int
    d_model: int = 32
    n_heads: int = 4
    n_inducing: int = 8
    n_blocks: int = 1
    dropout: float = 0.1
    context: bool = True
    linear_skip: bool = True

    def __post_init__(self) -> None:
        if self.d_in < 1 or self.d_model < 1 or self.n_heads < 1 or self.n_blocks < 0:
            raise ModelError(f"SetTransformerConfig: sizes must be positive, got {self}")
        if self.d_model % self.n_heads:
            raise ModelError(
                f"SetTransformerConfig: n_heads={self.n_heads} must divide d_model={self.d_model}"
            )
        if self.n_inducing < 0 or not 0.0 <= self.dropout < 1.0:
            raise ModelError(
                f"SetTransformerConfig: need n_inducing >= 0 and dropout in [0, 1), got {self}"
            )


class MLP(nn.Module):
    """Position-wise feed-forward layer, width 2 * d."""

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(2 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, N, D)


class Attention(nn.Module):
    """Multi-head attention of queries over a padded set, with a learned null slot.

    Every query may also attend to one learned "null" key/value, so a query facing a set with no
    real element (an all-padding set) gets a defined output instead of NaN from a softmax over
    nothing. Scores are scaled per head, by 1/sqrt(head width), inside
    ``F.scaled_dot_product_attention``.
    """

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.null = nn.Parameter(torch.zeros(1, 1, d))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, Nq, D = q.shape
        H = self.n_heads
        kv = torch.cat([self.null.expand(B, 1, D), kv], dim=1)  # (B, 1+Nk, D)
        q = self.q(q).view(B, Nq, H, D // H).transpose(1, 2)  # (B, H, Nq, D/H)
        k, v = self.kv(kv).split(D, dim=2)  # (B, 1+Nk, D) each
        k = k.view(B, -1, H, D // H).transpose(1, 2)  # (B, H, 1+Nk, D/H)
        v = v.view(B, -1, H, D // H).transpose(1, 2)  # (B, H, 1+Nk, D/H)
        attn_mask = None
        if kv_mask is not None:
            attn_mask = F.pad(kv_mask, (1, 0), value=True)[:, None, None, :]  # (B, 1, 1, 1+Nk)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, Nq, D/H)
        y = y.transpose(1, 2).reshape(B, Nq, D)  # (B, Nq, D)
        return self.drop(self.proj(y))


class MAB(nn.Module):
    """Multihead attention block: queries attend to a set, then an MLP (pre-LayerNorm residuals)."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, n_heads, dropout)
        self.mlp = MLP(d, dropout)

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = q + self.attn(self.ln_q(q), self.ln_kv(kv), kv_mask)  # (B, Nq, D)
        return q + self.mlp(self.ln_2(q))  # (B, Nq, D)


class SAB(MAB):
    """Set attention block: every lesion attends to every real lesion of its set. O(N²)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x, mask)  # (B, N, D)


class ISAB(nn.Module):
    """Induced set attention block: M learned inducing points summarise the set, the lesions
    attend to the summary. O(N * M)."""

    def __init__(self, d: int, n_heads: int, n_inducing: int, dropout: float) -> None:
        super().__init__()
        self.inducing = nn.Parameter(torch.randn(1, n_inducing, d))
        self.mab_in = MAB(d, n_heads, dropout)
        self.mab_out = MAB(d, n_heads, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.mab_in(self.inducing.expand(x.shape[0], -1, -1), x, mask)  # (B, M, D)
        return self.mab_out(x, h)  # (B, N, D)


class _PerLesion(nn.Module):
    """The MLPs of an ISAB without its attention: the no-context baseline's block."""

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp_1, self.mlp_2 = MLP(d, dropout), MLP(d, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.mlp_1(self.ln_1(x))  # (B, N, D)
        return x + self.mlp_2(self.ln_2(x))  # (B, N, D)


class SetTransformer(nn.Module):
    """One logit per lesion from a permutation-equivariant encoder over the patient's lesions.

    With ``config.context``, each lesion enters as its features ``x``, its difference from the
    mean of the real lesions of its set, the log mean squared size of that difference, and how
    far that size is from the set's average one (the "ugly duckling" cue: how unlike the
    patient's other lesions it is); attention blocks then refine that comparison. Without
    context, a lesion enters as ``x`` alone.

    Permuting the lesions of a set permutes the logits the same way; padded slots do not change
    the logits of real lesions; a one-lesion set and an all-padding set give finite values.
    """

    def __init__(self, config: SetTransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        d_feat = 2 * c.d_in + 2 if c.context else c.d_in
        self.embed = nn.Linear(d_feat, c.d_model)
        self.skip = nn.Linear(d_feat, 1) if c.linear_skip else None
        if not c.context:
            blocks: list[nn.Module] = [_PerLesion(c.d_model, c.dropout) for _ in range(c.n_blocks)]
        elif c.n_inducing > 0:
            blocks = [ISAB(c.d_model, c.n_heads, c.n_inducing, c.dropout) for _ in range(c.n_blocks)]
        else:
            blocks = [SAB(c.d_model, c.n_heads, c.dropout) for _ in range(c.n_blocks)]
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, N)`` for features ``x`` ``(B, N, d_in)`` and ``mask`` ``(B, N)`` bool
        (True = a real lesion; None = all real). Padded slots get logit 0."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        x = x.masked_fill(~mask[..., None], 0.0)  # (B, N, d_in): padding never leaks, even NaN
        if self.config.context:
            real = mask[..., None]  # (B, N, 1)
            count = mask.sum(1, keepdim=True).clamp(min=1)[..., None]  # (B, 1, 1)
            diff = (x - x.sum(1, keepdim=True) / count).masked_fill(~real, 0.0)  # (B, N, d_in)
            dist = torch.log1p(diff.pow(2).mean(2, keepdim=True))  # (B, N, 1): distance to the mean
            typical = (dist * real).sum(1, keepdim=True) / count  # (B, 1, 1): the patient's usual distance
            rel = (dist - typical).masked_fill(~real, 0.0)  # (B, N, 1)
            x = torch.cat([x, diff, dist, rel], dim=2)  # (B, N, 2*d_in + 2)
        h = self.embed(x)  # (B, N, D)
        for block in self.blocks:
            h = block(h, mask)  # (B, N, D)
        logits = self.head(self.ln_f(h)).squeeze(2)  # (B, N)
        if self.skip is not None:
            logits = logits + self.skip(x).squeeze(2)  # (B, N)
        return logits.masked_fill(~mask, 0.0)
