"""`synset.pt`: everything needed to evaluate or picture a distilled set, anywhere.

{"format": "tesla-podd/synset", "version": 1, "images": [N,C,H,W] model space, "labels": [N] int
or [N, n] soft, "lr": learned/used student lr or None, "preprocess": Preprocessor state (ZCA
included), "class_names", "dataset", "image_shape", "meta": {...}, "extra": {...}}"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import atomic
from ..data.preprocess import Preprocessor
from ..errors import DataError

FORMAT = "tesla-podd/synset"


@dataclass
class SynsetFile:
    images: torch.Tensor
    labels: torch.Tensor
    lr: float | None
    preprocess: Preprocessor
    class_names: list[str]
    dataset: str
    meta: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # e.g. the poster tensor and its layout

    @property
    def soft_labels(self) -> bool:
        return self.labels.is_floating_point()

    def check_finite(self, source: str) -> None:
        """NaN never becomes a result: refuse a set whose images, labels or lr are NaN/Inf."""
        bad = [name for name, t in (("images", self.images), ("labels", self.labels))
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if self.lr is not None and not math.isfinite(float(self.lr)):
            bad.append(f"lr ({self.lr})")
        if bad:
            raise DataError(f"Synthetic set {source} has non-finite {' and '.join(bad)} (a diverged distillation), "
                            "so it cannot be evaluated or saved; distill again with a lower `algorithm.lr_img` / "
                            "`algorithm.lr_lr` / `algorithm.lr_label`.")

    def save(self, path: str | Path) -> Path:
        self.check_finite(f"`{path}`")
        return atomic.save_torch(
            {
                "format": FORMAT,
                "version": 1,
                "images": self.images.detach().cpu(),
                "labels": self.labels.detach().cpu(),
                "lr": None if self.lr is None else float(self.lr),
                "preprocess": self.preprocess.state_dict(),
                "class_names": list(self.class_names),
                "dataset": self.dataset,
                "image_shape": tuple(self.images.shape[1:]),
                "meta": dict(self.meta),
                "extra": dict(self.extra),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> SynsetFile:
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"Synthetic set `{path}` does not exist. It is written by the distill stage "
                "(`stages=[distill]`), or pass an existing file with `eval.synset_path=...`."
            )
        try:
            d = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise DataError(f"Synthetic set `{path}` is unreadable ({type(exc).__name__}: {exc}).") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DataError(f"`{path}` is not a tesla-podd synthetic-set file (no `format: {FORMAT}`).")
        out = cls(
            images=d["images"],
            labels=d["labels"],
            lr=d["lr"],
            preprocess=Preprocessor.from_state_dict(d["preprocess"]),
            class_names=d["class_names"],
            dataset=d["dataset"],
            meta=d.get("meta", {}),
            extra=d.get("extra", {}),
        )
        out.check_finite(f"`{path}`")
        return out
