"""uint8 images -> model space, and back for pictures.

Model space is either mean/std-normalised pixels or ZCA-whitened [0,1] pixels (MTT/TESLA apply
kornia ZCA to un-normalised images; RaT-BPTT/PoDD use the KIP-style variant). The preprocessor's
state travels with every synthetic set, so a saved set can be evaluated and pictured anywhere."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from .. import atomic
from ..errors import check_choice
from .real import RealData

log = logging.getLogger(__name__)

ZCA_KINDS = ("none", "kornia", "kip")


class Preprocessor:
    def __init__(self, mean, std, zca=None):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.zca = zca  # tesla_podd.data.zca.ZCA or None

    def __call__(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """uint8 [N,C,H,W] (any device) -> float32 model-space images, in chunks to bound memory."""
        if x.shape[0] > chunk:
            return torch.cat([self(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])
        x = x.float().div_(255.0)
        if self.zca is not None:
            return self.zca.transform(x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> [0,1] RGB for pictures (de-whitened; per-image rescaled after KIP ZCA)."""
        x = x.detach().float().cpu()
        if self.zca is None:
            return (x * self.std + self.mean).clamp(0, 1)
        x = self.zca.inverse(x)
        if self.zca.kind == "kip":  # per-image normalisation is not invertible: stretch each image
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            return (x - lo) / (hi - lo).clamp_min(1e-8)
        return x.clamp(0, 1)

    def state_dict(self) -> dict:
        return {
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "zca": None if self.zca is None else self.zca.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Preprocessor:
        from .zca import ZCA

        zca = None if state.get("zca") is None else ZCA.from_state_dict(state["zca"])
        return cls(state["mean"], state["std"], zca)

    @property
    def description(self) -> str:
        return "normalise(mean/std)" if self.zca is None else f"zca({self.zca.kind})"


def build_preprocessor(dataset_cfg, real: RealData, cache_dir: str | Path) -> Preprocessor:
    kind = str(dataset_cfg.zca)
    check_choice("dataset.zca", kind, ZCA_KINDS)
    if kind == "none":
        return Preprocessor(real.mean, real.std)
    from .zca import ZCA

    eps = float(dataset_cfg.zca_eps)
    fit_x = real.train_x if real.zca_fit_x is None else real.zca_fit_x  # dataset.zca_fit
    # The whitening depends on exactly which train images it was fit on.
    digest = hashlib.sha1()
    digest.update(str(tuple(fit_x.shape)).encode())
    if real.zca_fit_x is None:
        digest.update(real.train_y[:4096].numpy().tobytes())
    digest.update(fit_x[:256].contiguous().numpy().tobytes())
    key = f"{real.name}-{kind}-eps{eps}-{digest.hexdigest()[:10]}"
    path = Path(cache_dir) / "zca" / f"{key}.pt"
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            return Preprocessor(real.mean, real.std, ZCA.from_state_dict(state))
        except Exception as exc:
            log.warning("ZCA cache %s unreadable (%s); fitting again", path, exc)
    log.info("fitting %s ZCA (eps %.3g) on %d train images", kind, eps, fit_x.shape[0])
    zca = ZCA.fit(fit_x.float().div_(255.0), kind=kind, eps=eps, reg=eps)
    atomic.save_torch(zca.state_dict(), path)
    return Preprocessor(real.mean, real.std, zca)
