"""Expert-trajectory storage: one file per expert, safe for many concurrent writers.

Layout of a buffer folder (under paths.buffer_root, keyed by everything that determines it):
  expert_<k>.pt           {"format", "key", "index", "param_count", "epochs", "test_acc", "trajectory": [E+1, P]}
  partial_expert_<k>.pt   expert k in progress (per-epoch resume point), deleted when it finishes
  manifest.json           a summary derived from the expert files on disk (never the other way round)
  .locks/expert_<k>.lock  held (flock) by the process training expert k; .locks/manifest.lock by a manifest writer
Expert k is a pure function of (buffer key, k), so any number of jobs may build any subset of experts
(`buffer.experts`, `buffer.worker`/`buffer.num_workers`) and the result equals a one-job build bit for bit.
Every file is written atomically; the manifest is rewritten from a scan of the folder under a lock, so
two writers can never roll it back or leave it disagreeing with the expert files."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from . import atomic
from .errors import BufferError_, ConfigError
from .file_locks import no_locks_message
from .models import model_tag

log = logging.getLogger(__name__)
FORMAT = "tesla-podd/buffer"
EXPERT_FORMAT = "tesla-podd/expert"
VERSION = 2
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_EXPERT_FILE = re.compile(r"^expert_(\d+)\.pt$")


def buffer_key(cfg) -> dict:
    """Every setting that changes the experts' trajectories (the run seed does not)."""
    d, b = cfg.dataset, cfg.buffer
    key = {
        "dataset": d.name, "image_size": int(d.image_size), "train_subset": d.train_subset,
        "subset_seed": d.subset_seed,
        "val_size": d.val_size, "val_seed": int(d.val_seed),  # the experts never see the validation split
        "zca": d.zca, "zca_eps": float(d.zca_eps),
        "model": model_tag(cfg.model, int(d.image_size)),
        "augment": OmegaConf.to_container(cfg.augment, resolve=True) if b.augment else "none",
        "lr_teacher": float(b.lr_teacher), "momentum": float(b.momentum),
        "weight_decay": float(b.weight_decay), "batch_size": int(b.batch_size),
        "train_epochs": int(b.train_epochs), "amp": b.amp, "seed": int(b.seed),
    }
    if d.get("val_mode", "held_out") == "within_train":  # the experts see every train image: as val_size 0
        key["val_size"], key["val_seed"] = 0, 0
    if b.get("import_from"):  # only then: experts imported from other code's files (buffer_import.py)
        from .buffer_import import source_files, sources_digest

        key["imported"] = sources_digest(source_files(b.import_from))
    if d.get("train_indices"):  # only then: the experts saw exactly the images that file lists
        key["train_indices"] = _file_digest(d.train_indices)
    if d.zca != "none" and (d.train_subset or d.get("train_indices")) and d.get("zca_fit", "subset") != "subset":
        key["zca_fit"] = d.zca_fit  # only then: existing buffers keep their folder names
    if b.dtype != "float32":  # only then: float32 buffers keep the folder names they always had
        key["dtype"] = b.dtype
    if isinstance(key["augment"], dict) and key["augment"].get("align_corners") is True:
        del key["augment"]["align_corners"]  # the DSA default: buffers made before the option keep their key
    if d.zca == "none":  # without ZCA the inputs depend on the normalisation (F9: MTT's CIFAR-100 uses CIFAR-10's)
        key["mean"], key["std"] = [float(v) for v in d.mean], [float(v) for v in d.std]
    return key


def _file_digest(path) -> str:
    """The content of a settings file (e.g. `dataset.train_indices`), so a buffer follows the images, not the path."""
    try:
        return hashlib.sha1(Path(str(path)).read_bytes()).hexdigest()[:16]
    except OSError:
        return f"unreadable:{path}"  # loading the data names the missing file with its key


def buffer_dir(cfg) -> Path:
    if cfg.buffer.dir:
        return Path(cfg.buffer.dir)
    key = buffer_key(cfg)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{key['model']}-zca{key['zca']}-e{key['train_epochs']}-lr{key['lr_teacher']:g}-{digest}"
    return Path(cfg.paths.buffer_root) / cfg.dataset.name / name


def _overrides() -> str:
    """This run's command-line overrides (minus stages/selection), so a suggested command builds *this* buffer."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = list(HydraConfig.get().overrides.task)
    except Exception:
        return "<this run's dataset/model/buffer overrides>"
    drop = ("stages=", "buffer.experts=", "buffer.worker=", "buffer.num_workers=", "buffer.repair=", "resume",
            "hydra/launcher=", "hydra.")
    return " ".join(o for o in task if not o.startswith(drop)) or "(no other overrides)"


def make_command(cfg=None, experts: Sequence[int] | None = None, repair: bool = False) -> str:
    """The exact command that builds (or repairs) this buffer, for error messages."""
    sel = ""
    if experts:
        lo, hi = min(experts), max(experts) + 1
        sel = f" buffer.experts=[{lo},{hi}]"
    rep = " buffer.repair=true" if repair else ""
    extra = _overrides() if cfg is not None else "<this run's overrides>"
    return f"`python -m tesla_podd.train stages=[buffer]{sel}{rep} {extra}`"


def select_experts(num_experts: int, experts, worker: int, num_workers: int) -> list[int]:
    """Expert indices this job builds: the range `experts` ([start, stop), null = all), then every
    `num_workers`-th of it starting at `worker` (so n workers split any range evenly)."""
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ConfigError(f"`buffer.worker={worker}` with `buffer.num_workers={num_workers}`: need "
                          "num_workers >= 1 and 0 <= worker < num_workers, e.g. `buffer.worker=0,1 "
                          "buffer.num_workers=2` in a multirun.")
    start, stop = 0, num_experts
    if experts is not None:
        ok = len(experts) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in experts)
        if not ok or not 0 <= experts[0] < experts[1] <= num_experts:
            raise ConfigError(f"`buffer.experts={list(experts)}`: must be [start, stop] with "
                              f"0 <= start < stop <= buffer.num_experts ({num_experts}), e.g. "
                              f"`buffer.experts=[0,{num_experts}]` (stop excluded), or null for all.")
        start, stop = int(experts[0]), int(experts[1])
    return list(range(start, stop))[worker::num_workers]


def check_finite(trajectory: torch.Tensor, k: int, lr_teacher: float) -> None:
    """A diverged expert never enters a shared buffer: stop and name the key to change."""
    finite = torch.isfinite(trajectory).flatten(1).all(dim=1)
    if not bool(finite.all()):
        epoch = int((~finite).nonzero()[0])
        raise BufferError_(
            f"Expert {k} diverged: its parameters are NaN/Inf after epoch {epoch} with `buffer.lr_teacher="
            f"{lr_teacher:g}`, so it was not saved. Lower `buffer.lr_teacher` (e.g. "
            f"`buffer.lr_teacher={lr_teacher / 10:g}`) or set `buffer.amp=none`, then rerun the buffer stage."
        )


PRELOADS = ("auto", "cpu", "device")


class ExpertTrajectories(Sequence):
    """An indexable sequence of [epochs+1, P] tensors in the stored dtype (float32 unless `buffer.dtype` says
    otherwise: convert rows with `.to(device, torch.float32)`). Each is memory-mapped from its file on first
    access and kept (a run draws a random expert every iteration: each file is opened once, not every time), so
    only the rows a step touches are read and a buffer far larger than RAM works. `preload` can instead hold the
    epochs a recipe reaches on the device."""

    def __init__(self, files: list[Path]):
        self.files = list(files)
        self._loaded: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        if i not in self._loaded:
            self._loaded[i] = _read_expert(self.files[i])["trajectory"]
        return self._loaded[i]

    def preload(self, mode: str, device: torch.device, rows: int) -> ExpertTrajectories:
        """`buffer.preload`: `cpu` keeps the memory-mapped files; `device` copies the first `rows` epochs of every
        expert (what the recipe reaches) to `device` once, in the stored dtype; `auto` does that on CUDA when they
        take at most half of the GPU's free memory, else `cpu`."""
        from .errors import check_choice

        check_choice("buffer.preload", mode, PRELOADS)
        device = torch.device(device)
        if mode == "cpu" or (mode == "auto" and device.type != "cuda"):
            return self
        need = sum(self[i][:rows].numel() * self[i].element_size() for i in range(len(self)))
        if mode == "auto":
            free, _ = torch.cuda.mem_get_info(device)
            if need > free // 2:
                log.info("buffer.preload=auto: the experts' %d epochs take %.2f GB, more than half of the GPU's "
                         "%.2f GB free; they stay memory-mapped on the CPU", rows, need / 1e9, free / 1e9)
                return self
        for i in range(len(self)):
            self._loaded[i] = self[i][:rows].to(device)
        log.info("buffer.preload=%s: %d experts x %d epochs on %s (%.2f GB)", mode, len(self), rows, device, need / 1e9)
        return self

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(len(self)))


def _read_expert(path: Path, mmap: bool = True) -> dict:
    try:
        d = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as exc:
        raise BufferError_(f"Expert file {path} is unreadable or truncated ({type(exc).__name__}): "
                           f"{_REPAIR_HINT}") from None
    if not isinstance(d, dict) or d.get("format") != EXPERT_FORMAT:
        raise BufferError_(f"{path} is not a tesla-podd expert file (foreign file?): {_REPAIR_HINT}")
    return d


class _CorruptManifest(BufferError_):
    """manifest.json is not JSON (a refresh rebuilds it from the expert files)."""


_REPAIR_HINT = ("repair the buffer with the buffer stage and `buffer.repair=true` (it moves bad files to "
                "`quarantine/`, rewrites the manifest from the files on disk, then rebuilds what is missing)")


@dataclass
class BufferStore:
    dir: Path
    key: dict

    # ---- paths --------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def expert_path(self, k: int) -> Path:
        return self.dir / f"expert_{k}.pt"

    def partial_path(self, k: int) -> Path:
        return self.dir / f"partial_expert_{k}.pt"

    @contextmanager
    def lock(self, name: str, blocking: bool = True):
        """An exclusive flock on .locks/<name>.lock (released by the kernel if the holder dies).
        Yields True when held, False when `blocking=False` and another process holds it."""
        path = self.dir / ".locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            except OSError as exc:  # NFS / Lustre without locks: ENOLCK, ENOSYS, EOPNOTSUPP
                raise BufferError_(no_locks_message(self.dir, exc)) from None
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def clean_orphans(self, name: str) -> None:
        """Delete temp files of `name` a killed writer left. Call with that file's lock held: only the lock
        holder writes it, so every such temp file is an orphan, however recent."""
        for p in self.dir.glob(f".{name}.*.tmp"):
            p.unlink(missing_ok=True)

    # ---- the manifest, derived from disk ------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            m = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise _CorruptManifest(f"Buffer manifest {self.manifest_path} is corrupt ({exc}): "
                                   f"{_REPAIR_HINT}.") from None
        if m.get("format") != FORMAT:
            raise BufferError_(f"{self.manifest_path} is not a tesla-podd buffer manifest.")
        if m.get("key") != self.key:
            raise BufferError_(
                f"Buffer folder {self.dir} was made with different settings: {_diff(m.get('key'), self.key)}. "
                "Use another `buffer.dir`, or delete that folder to rebuild."
            )
        if m.get("version") != VERSION:
            raise BufferError_(f"Buffer {self.dir} is in the old one-writer format (shards of many experts): "
                               f"convert it in place with the buffer stage and `buffer.repair=true`.")
        return m

    def expert_files(self) -> dict[int, Path]:
        if not self.dir.exists():
            return {}
        found = {int(m.group(1)): p for p in self.dir.iterdir() if (m := _EXPERT_FILE.match(p.name))}
        return dict(sorted(found.items()))

    def refresh_manifest(self) -> dict:
        """Rewrite manifest.json from the expert files on disk (under the manifest lock). Entries whose
        file size is unchanged are reused, so a refresh reads only new files."""
        with self.lock("manifest"):
            self.clean_orphans("manifest.json")
            try:
                old = self.read_manifest() or {}
            except _CorruptManifest:
                old = {}  # rebuilt below from the expert files
            known = {int(k): e for k, e in (old.get("experts") or {}).items()}
            experts = {}
            for k, path in self.expert_files().items():
                size = path.stat().st_size
                if k in known and known[k].get("bytes") == size:
                    experts[k] = known[k]
                    continue
                d = self.validate_expert(k, path)
                experts[k] = {"file": path.name, "bytes": size, "epochs": int(d["epochs"]),
                              "param_count": int(d["param_count"]), "test_acc": float(d["test_acc"]),
                              "dtype": str(d["trajectory"].dtype).removeprefix("torch.")}
            m = {"format": FORMAT, "version": VERSION, "key": self.key, "dataset": self.key["dataset"],
                 "model": self.key["model"], "zca": self.key["zca"], "train_epochs": self.key["train_epochs"],
                 "param_count": next((e["param_count"] for e in experts.values()), None),
                 "num_experts": len(experts), "experts": {str(k): e for k, e in experts.items()}}
            atomic.write_json(m, self.manifest_path)
            return m

    def validate_expert(self, k: int, path: Path | None = None) -> dict:
        path = path or self.expert_path(k)
        d = _read_expert(path)
        t = d.get("trajectory")
        if d.get("key") != self.key or d.get("index") != k or not isinstance(t, torch.Tensor) or t.ndim != 2 \
                or t.shape[0] != int(d.get("epochs", -1)) + 1 or t.shape[1] != d.get("param_count"):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else None
            raise BufferError_(f"Expert file {path} does not belong to this buffer or has a wrong shape "
                               f"(index {d.get('index')}, shape {shape}): {_REPAIR_HINT}.")
        return d

    # ---- writing ------------------------------------------------------------------------------------------
    def save_expert(self, k: int, trajectory: torch.Tensor, test_acc: float, dtype: str) -> Path:
        """Write expert k atomically, then refresh the manifest. Call with the expert's lock held."""
        traj = trajectory.detach().cpu().to(DTYPES[dtype]).contiguous()
        atomic.save_torch({"format": EXPERT_FORMAT, "key": self.key, "index": k, "param_count": int(traj.shape[1]),
                           "epochs": int(traj.shape[0]) - 1, "test_acc": float(test_acc), "trajectory": traj},
                          self.expert_path(k))
        return self.expert_path(k)

    def has_expert(self, k: int, epochs: int) -> bool:
        """Expert k is on disk, valid and holds at least `epochs` epochs."""
        if not self.expert_path(k).exists():
            return False
        return int(self.validate_expert(k)["epochs"]) >= epochs

    # ---- reading ------------------------------------------------------------------------------------------
    def load_trajectories(self, need_epochs: int, cfg=None, num_experts: int | None = None) -> ExpertTrajectories:
        """Experts 0..num_experts-1 (default: `cfg.buffer.num_experts`, else every expert on disk) as a lazy
        sequence of [epochs+1, P] tensors (see ExpertTrajectories); a clear error naming the missing experts
        and the command that makes them."""
        if num_experts is None and cfg is not None:
            num_experts = int(cfg.buffer.num_experts)
        self.read_manifest()  # settings, format and corruption checks
        files = self.expert_files()
        wanted = range(num_experts) if num_experts is not None else sorted(files)
        missing = [k for k in wanted if k not in files]
        if not files or missing:
            what = f"experts {_ranges(missing)} of {num_experts} are missing" if files else "no expert is there yet"
            raise BufferError_(f"The expert buffer at {self.dir} is incomplete: {what}. Create them first with "
                               f"{make_command(cfg, missing or None)} (several jobs may share the work, e.g. "
                               "`-m buffer.num_workers=2 buffer.worker=0,1`).")
        m = self.read_manifest() or {}
        listed = {int(k) for k in (m.get("experts") or {})}
        if listed - set(files):
            raise BufferError_(f"Buffer {self.dir} is inconsistent: the manifest lists experts "
                               f"{_ranges(sorted(listed - set(files)))} that are not on disk: {_REPAIR_HINT}, i.e. "
                               f"{make_command(cfg, repair=True)}.")
        short = []
        for k in wanted:
            d = self.validate_expert(k, files[k])
            if int(d["epochs"]) < need_epochs:
                short.append((k, int(d["epochs"])))
        if short:
            k, have = short[0]
            raise BufferError_(
                f"Buffer {self.dir} holds {have} epochs for expert {k} (and {len(short) - 1} more short experts), "
                f"but this run needs {need_epochs} (max_start_epoch + expert_epochs). Lower those, or rebuild with "
                f"`buffer.train_epochs={need_epochs}` (and `buffer.keep_epochs` null or >= {need_epochs})."
            )
        return ExpertTrajectories([files[k] for k in wanted])

    # ---- repair -------------------------------------------------------------------------------------------
    def repair(self) -> dict:
        """Quarantine unreadable/foreign expert files, convert an old sharded buffer, rewrite the manifest."""
        with self.lock("manifest"):
            bad = self.dir / "quarantine"
            self._convert_shards(bad)
            for k, path in self.expert_files().items():
                try:
                    self.validate_expert(k, path)
                except BufferError_ as exc:
                    bad.mkdir(exist_ok=True)
                    os.replace(path, bad / path.name)
                    log.warning("buffer repair: moved %s to %s (%s)", path.name, bad, str(exc).split(":")[0])
            self.manifest_path.unlink(missing_ok=True)
        return self.refresh_manifest()

    def _convert_shards(self, bad: Path) -> None:
        """The old format (manifest v1 + replay_buffer_<i>.pt shards of many experts) -> one file per expert."""
        try:
            old = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}
        except json.JSONDecodeError:
            return
        if old.get("version") != 1 or old.get("key") != self.key:
            return
        k = 0
        for shard in old.get("shards", []):
            path = self.dir / shard["file"]
            try:
                t = torch.load(path, map_location="cpu", weights_only=False)["trajectories"]
            except Exception:
                log.warning("buffer repair: unreadable old shard %s skipped", path.name)
                k += shard["experts"]
                continue
            for i in range(shard["experts"]):
                acc = old.get("expert_test_acc", [])
                self.save_expert(k, t[i], acc[k] if k < len(acc) else float("nan"), "float32")
                k += 1
            bad.mkdir(exist_ok=True)
            os.replace(path, bad / path.name)
        log.info("buffer repair: converted %d experts of the old sharded format", k)


def _ranges(ks: list[int]) -> str:
    """[0,1,2,5] -> '0-2, 5'."""
    out, ks = [], sorted(ks)
    i = 0
    while i < len(ks):
        j = i
        while j + 1 < len(ks) and ks[j + 1] == ks[j] + 1:
            j += 1
        out.append(str(ks[i]) if i == j else f"{ks[i]}-{ks[j]}")
        i = j + 1
    return ", ".join(out)


def _diff(a: dict | None, b: dict) -> str:
    a = a or {}
    keys = sorted(set(a) | set(b), key=str)
    return ", ".join(f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)) or "unknown"


def open_store(cfg) -> BufferStore:
    return BufferStore(buffer_dir(cfg), buffer_key(cfg))
