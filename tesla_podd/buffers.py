"""Expert-trajectory storage: shards of flat parameter vectors + a manifest.

Layout of a buffer folder (under paths.buffer_root, keyed by everything that determines it):
  manifest.json           format, key, dataset, model, zca, train_epochs, param_count, shards, accs
  replay_buffer_<k>.pt    {"format", "param_count", "train_epochs", "trajectories": [n, epochs+1, P]}
  partial_expert.pt       the expert in progress (per-epoch resume point), deleted when it finishes
All files are written atomically, and the manifest is the single source of truth on what is done."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from . import atomic
from .errors import BufferError_
from .models import model_tag

FORMAT = "tesla-podd/buffer"
SHARD_FORMAT = "tesla-podd/buffer-shard"


def buffer_key(cfg) -> dict:
    """Every setting that changes the experts' trajectories (the run seed does not)."""
    d, b = cfg.dataset, cfg.buffer
    return {
        "dataset": d.name, "image_size": int(d.image_size), "train_subset": d.get("train_subset"),
        "subset_seed": d.get("subset_seed", 0), "zca": d.zca, "zca_eps": float(d.zca_eps),
        "model": model_tag(cfg.model, int(d.image_size)),
        "augment": OmegaConf.to_container(cfg.augment, resolve=True) if b.augment else "none",
        "lr_teacher": float(b.lr_teacher), "momentum": float(b.momentum),
        "weight_decay": float(b.weight_decay), "batch_size": int(b.batch_size),
        "train_epochs": int(b.train_epochs), "amp": b.amp, "seed": int(b.seed),
    }


def buffer_dir(cfg) -> Path:
    if cfg.buffer.get("dir"):
        return Path(cfg.buffer.dir)
    key = buffer_key(cfg)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{key['model']}-zca{key['zca']}-e{key['train_epochs']}-lr{key['lr_teacher']:g}-{digest}"
    return Path(cfg.paths.buffer_root) / cfg.dataset.name / name


def make_command(cfg) -> str:
    return (f"python -m tesla_podd.train stages=[buffer] dataset={cfg.dataset.name} "
            f"buffer.train_epochs={cfg.buffer.train_epochs} buffer.num_experts=<n> "
            "(plus the same dataset/model/ZCA/augment overrides as this run)")


@dataclass
class BufferStore:
    dir: Path
    key: dict

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def partial_path(self) -> Path:
        return self.dir / "partial_expert.pt"

    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            m = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise BufferError_(f"Buffer manifest {self.manifest_path} is corrupt ({exc}); delete the folder "
                               "and rebuild it with `stages=[buffer]`.") from None
        if m.get("format") != FORMAT:
            raise BufferError_(f"{self.manifest_path} is not a tesla-podd buffer manifest.")
        if m.get("key") != self.key:
            raise BufferError_(
                f"Buffer folder {self.dir} was made with different settings: {_diff(m.get('key'), self.key)}. "
                "Use another `buffer.dir`, or delete that folder to rebuild."
            )
        return m

    def new_manifest(self, param_count: int) -> dict:
        return {"format": FORMAT, "version": 1, "key": self.key, "dataset": self.key["dataset"],
                "model": self.key["model"], "zca": self.key["zca"], "train_epochs": self.key["train_epochs"],
                "param_count": param_count, "num_experts": 0, "shards": [], "expert_test_acc": []}

    def append_expert(self, manifest: dict, trajectory: torch.Tensor, test_acc: float, per_shard: int) -> dict:
        """Add one finished expert [epochs+1, P]: rewrite its shard, then the manifest (both atomic)."""
        shards = manifest["shards"]
        if not shards or shards[-1]["experts"] >= per_shard:
            shards.append({"file": f"replay_buffer_{len(shards)}.pt", "experts": 0})
        shard = shards[-1]
        path = self.dir / shard["file"]
        done = self._read_shard(path)["trajectories"][: shard["experts"]] if shard["experts"] else None
        traj = trajectory[None].float().cpu()
        stacked = traj if done is None else torch.cat([done, traj])
        atomic.save_torch({"format": SHARD_FORMAT, "param_count": manifest["param_count"],
                           "train_epochs": manifest["train_epochs"], "trajectories": stacked}, path)
        shard["experts"] += 1
        manifest["num_experts"] += 1
        manifest["expert_test_acc"].append(test_acc)
        atomic.write_json(manifest, self.manifest_path)
        return manifest

    def _read_shard(self, path: Path) -> dict:
        try:
            d = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as exc:
            raise BufferError_(f"Buffer shard {path} is unreadable or truncated ({type(exc).__name__}). "
                               "Delete the buffer folder and rebuild it with `stages=[buffer]`.") from None
        if not isinstance(d, dict) or d.get("format") != SHARD_FORMAT:
            raise BufferError_(f"{path} is not a tesla-podd buffer shard (foreign file?). "
                               "Delete the buffer folder and rebuild it with `stages=[buffer]`.")
        return d

    def load_trajectories(self, need_epochs: int, cfg=None) -> list[torch.Tensor]:
        """All finished experts as [epochs+1, P] tensors; clear errors for every way this can fail."""
        m = self.read_manifest()
        hint = make_command(cfg) if cfg is not None else "`stages=[buffer]`"
        if m is None or m["num_experts"] == 0:
            raise BufferError_(f"No expert buffer at {self.dir}. Create it first: {hint}.")
        if m["train_epochs"] < need_epochs:
            raise BufferError_(
                f"Buffer {self.dir} holds {m['train_epochs']} epochs per expert, but this run needs "
                f"{need_epochs} (max_start_epoch + expert_epochs). Lower those or rebuild with "
                f"`buffer.train_epochs={need_epochs}`."
            )
        out = []
        for shard in m["shards"]:
            d = self._read_shard(self.dir / shard["file"])
            t = d["trajectories"]
            if t.shape[0] < shard["experts"] or t.shape[1] != m["train_epochs"] + 1 or t.shape[2] != m["param_count"]:
                raise BufferError_(f"Buffer shard {shard['file']} in {self.dir} has shape {tuple(t.shape)}, "
                                   f"expected [{shard['experts']}, {m['train_epochs'] + 1}, {m['param_count']}]: "
                                   "truncated or foreign. Rebuild with `stages=[buffer]`.")
            out.extend(t[i] for i in range(shard["experts"]))
        return out


def _diff(a: dict | None, b: dict) -> str:
    a = a or {}
    keys = sorted(set(a) | set(b), key=str)
    return ", ".join(f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)) or "unknown"


def open_store(cfg) -> BufferStore:
    return BufferStore(buffer_dir(cfg), buffer_key(cfg))
