"""ZCA whitening, two variants, each with an inverse (for pictures of whitened images).

- "kornia" (MTT/TESLA): `kornia.enhance.ZCAWhitening(eps)` fit on the whole train set in [0,1]:
  y = (x - mu) @ U diag((s + eps)^-1/2) U^T with the unbiased covariance (N - 1).
- "kip" (RaT-BPTT/PoDD, after KIP): each image is first centred on its own mean over all C*H*W values
  and scaled to unit L2 norm; then cov = X^T X / N (no dataset mean), lambda = reg * trace(cov) / d
  and y = x @ U diag((s + lambda)^-1/2) U^T. The per-image normalisation is not invertible, so
  `inverse` gives back the normalised image (good enough for pictures).

Everything is stored in flat-vector form (d = C*H*W): y = (x_flat - mean) @ transform and
x_flat = y @ inverse + mean, and applied in batches so 50k images never need an N x d x d product.
Files keep only the transform (every synset.pt carries its ZCA, and d x d floats are 38 MB at 32 px, 600 MB at
64 px); the inverse, needed for pictures only, is recomputed in float64 on first use.
"""

from __future__ import annotations

import torch

from ..errors import check_choice

KINDS = ("kornia", "kip")
_CHUNK = 4096  # images per batched matmul (4096 x 3072 floats = 50 MB in float32)


def _kip_normalise(x: torch.Tensor) -> torch.Tensor:
    """Per image: subtract the mean over C*H*W, divide by the L2 norm. [B, d] -> [B, d]."""
    x = x - x.mean(dim=1, keepdim=True)
    # clamp: a constant image would otherwise become 0/0; it becomes the zero vector instead.
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class ZCA:
    def __init__(self, kind: str, mean: torch.Tensor, transform: torch.Tensor, inverse: torch.Tensor | None = None):
        check_choice("dataset.zca", kind, KINDS)
        self.kind = kind
        self.mean = mean.detach().reshape(-1).cpu()  # [d]
        self.transform_matrix = transform.detach().cpu()  # [d, d]
        self._inverse = None if inverse is None else inverse.detach().cpu()  # [d, d], or None until needed
        self._cache: dict = {}  # (name, device, dtype) -> copy of mean / transform / inverse

    @property
    def inverse_matrix(self) -> torch.Tensor:
        if self._inverse is None:  # symmetric positive definite and well conditioned (eps/reg > 0)
            self._inverse = torch.linalg.inv(self.transform_matrix.double()).to(self.transform_matrix.dtype)
        return self._inverse

    def _on(self, like: torch.Tensor, name: str) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(like.device, like.dtype)
        return self._cache[key]

    @classmethod
    def fit(cls, x: torch.Tensor, kind: str = "kornia", eps: float = 0.1, reg: float = 0.1) -> ZCA:
        """Fit on x: [N, C, H, W] floats in [0, 1]. `eps` is kornia's, `reg` the KIP regulariser."""
        check_choice("dataset.zca", kind, KINDS)
        if kind == "kornia":
            from kornia.enhance import ZCAWhitening

            z = ZCAWhitening(eps=float(eps), compute_inv=True).fit(x)
            return cls("kornia", z.mean_vector, z.transform_matrix, z.transform_inv)
        n, d = x.shape[0], x[0].numel()
        cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        for i in range(0, n, _CHUNK):  # accumulate X^T X in float64, one chunk of images at a time
            xi = _kip_normalise(x[i : i + _CHUNK].reshape(-1, d).double())
            cov += xi.T @ xi
        cov /= n
        s, u = torch.linalg.eigh(cov)
        s = s.clamp_min(0.0)  # round-off can leave tiny negative eigenvalues
        lam = reg * torch.trace(cov) / d  # reg x mean eigenvalue
        transform = (u * (s + lam).rsqrt()) @ u.T
        inverse = (u * (s + lam).sqrt()) @ u.T
        return cls("kip", torch.zeros(d), transform.float(), inverse.float())

    def _batched(self, x: torch.Tensor, fn) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        out = [fn(flat[i : i + _CHUNK]) for i in range(0, flat.shape[0], _CHUNK)]
        return torch.cat(out).reshape(x.shape) if out else x.clone()

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> whitened, same shape, dtype and device (differentiable in x)."""
        mean, t = self._on(x, "mean"), self._on(x, "transform_matrix")
        if self.kind == "kip":
            return self._batched(x, lambda f: _kip_normalise(f) @ t)
        return self._batched(x, lambda f: (f - mean) @ t)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Whitened -> image space ([0,1] pixels for kornia; per-image-normalised pixels for kip)."""
        mean, inv = self._on(x, "mean"), self._on(x, "inverse_matrix")
        return self._batched(x, lambda f: f @ inv + mean)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean, "transform": self.transform_matrix}

    @classmethod
    def from_state_dict(cls, d: dict) -> ZCA:
        return cls(d["kind"], d["mean"], d["transform"], d.get("inverse"))  # files before 2026-11-22 hold it

    def __repr__(self) -> str:
        return f"ZCA(kind={self.kind!r}, d={self.mean.numel()})"
