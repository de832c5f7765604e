"""Vision Transformer of TESLA Table 2. TESLA cites DC-BENCH (Cui et al. 2022) for its ViT; DC-BENCH
(`networks/network_utils.py`, model `vit`, "for CIFAR10 and CIFAR100") builds the lucidrains `vit-pytorch`
ViT (`networks/vit.py`) with patch 4, dim 512, depth 6, heads 8, dim_head 64, mlp_dim 512, dropout 0.1,
emb_dropout 0.1, cls-token pooling. Our definition follows that one:

patches (p x p, flattened in (row, col, channel) order) -> linear to `dim`; a learned cls token is
prepended and a learned position embedding added (both N(0,1) init), dropout; `depth` pre-norm blocks
[LayerNorm -> multi-head attention (bias-free qkv, output projection + dropout)] + residual,
[LayerNorm -> Linear(dim, mlp_dim) -> GELU -> dropout -> Linear(mlp_dim, dim) -> dropout] + residual;
the cls token -> LayerNorm -> linear classifier.

Any side divisible by the patch size works (64 px gives 256 patches with the same patch 4; the
position embedding grows with the number of patches, everything else keeps its size)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        # The reference skips the output projection only when one head already has width `dim`.
        project = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x)) + x
        return self.mlp(self.norm2(x)) + x


class ViT(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int, patch_size: int = 4, dim: int = 512,
                 depth: int = 6, heads: int = 8, dim_head: int = 64, mlp_dim: int = 512, dropout: float = 0.1,
                 emb_dropout: float = 0.1):
        super().__init__()
        if image_size % patch_size:
            raise ConfigError(f"Model `vit` has `model.patch_size` {patch_size}, which does not divide the "
                              f"dataset's image_size {image_size}; choose a patch size that divides it (DC-BENCH: 4).")
        self.patch = patch_size
        num_patches = (image_size // patch_size) ** 2
        self.to_patch_embedding = nn.Linear(channels * patch_size * patch_size, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.blocks = nn.Sequential(*[Block(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H/p * W/p, p*p*C), each patch flattened as (row, col, channel)."""
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.to_patch_embedding(self.patches(x))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.dropout(torch.cat([cls, tokens], dim=1) + self.pos_embedding)
        return self.head(self.blocks(tokens)[:, 0])
