"""Bring existing expert trajectories into a buffer: the MTT/TESLA `replay_buffer_<n>.pt` layout.

Those files (written by the MTT and TESLA `buffer.py`) each hold a list of trajectories; a trajectory is a list
of snapshots (the initial network, then one per saved epoch) and a snapshot is the list of the network's
parameter tensors in `named_parameters()` order. Our ConvNet names and orders its parameters the same way, so a
snapshot flattens to exactly the vector our experts store. Every tensor's shape is checked against `model`
before anything is written, and each imported expert is saved as `expert_<k>.pt` of the run's buffer folder
(keyed by the run's settings plus the content of the source files), with its test accuracy measured on this
run's test set: a wrong ZCA, dataset or model shows up there at once.

Used by the buffer stage when `buffer.import_from` is set (a folder of replay_buffer_*.pt files, or a list of
files); the distill stage of the same command line then finds the experts as if it had trained them."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch

from .errors import ConfigError
from .models import FlatModel

log = logging.getLogger(__name__)
_REPLAY = re.compile(r"^replay_buffer_(\d+)\.pt$")


def source_files(spec) -> list[Path]:
    """`buffer.import_from` as a list of files: a folder's replay_buffer_<n>.pt in n order, or the files given."""
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    if not items:
        raise ConfigError("`buffer.import_from` is an empty list: give a folder of replay_buffer_<n>.pt files "
                          "or a list of such files.")
    files: list[Path] = []
    for item in items:
        p = Path(str(item))
        if p.is_dir():
            found = sorted((int(m.group(1)), q) for q in p.iterdir() if (m := _REPLAY.match(q.name)))
            if not found:
                raise ConfigError(f"`buffer.import_from={item}` is a folder without replay_buffer_<n>.pt files "
                                  "(the MTT/TESLA buffer layout); give that folder or the files themselves.")
            files += [q for _, q in found]
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"`buffer.import_from` names {item}, which is neither a file nor a folder.")
    return files


def sources_digest(files: list[Path]) -> str:
    """The content of the source files (part of the buffer key: an import never mixes with trained experts)."""
    h = hashlib.sha1()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def read_replay_buffers(files: list[Path], flat: FlatModel) -> list[torch.Tensor]:
    """Every trajectory of the files, in file order, as a float32 [snapshots, P] tensor in our flat layout."""
    out = []
    for f in files:
        try:
            data = torch.load(f, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ConfigError(f"`buffer.import_from`: {f} is not a readable torch file ({type(exc).__name__}).") \
                from None
        if not isinstance(data, list | tuple) or not data:
            raise ConfigError(f"`buffer.import_from`: {f} does not hold a list of trajectories (the MTT/TESLA "
                              f"replay_buffer layout); found {type(data).__name__}.")
        for t, traj in enumerate(data):
            out.append(_flatten_trajectory(traj, flat, f"{f.name}[{t}]"))
    return out


def _flatten_trajectory(traj, flat: FlatModel, where: str) -> torch.Tensor:
    if not isinstance(traj, list | tuple) or len(traj) < 2:
        raise ConfigError(f"`buffer.import_from`: trajectory {where} is not a list of at least two snapshots "
                          "(initial network + saved epochs).")
    rows = []
    for e, snap in enumerate(traj):
        shapes = [tuple(p.shape) for p in snap] if isinstance(snap, list | tuple) else None
        want = [tuple(s) for s in flat.shapes]
        if shapes != want:
            raise ConfigError(
                f"`buffer.import_from`: snapshot {e} of trajectory {where} has parameter shapes {shapes}, but "
                f"`model` expects {want} (named_parameters order): import into a run configured with the model "
                "the experts were trained as (e.g. `model.depth`, `model.width`, `dataset` image size).")
        rows.append(torch.cat([p.detach().float().reshape(-1) for p in snap]))
    return torch.stack(rows)


@torch.no_grad()
def import_experts(store, files: list[Path], flat: FlatModel, module, test_set, epochs: int, dtype: str,
                   need: int = 1) -> list[float]:
    """Write every trajectory of `files` as experts 0..n-1 of `store` (keeping `epochs` + 1 snapshots each);
    returns their test accuracies (%, last kept snapshot). Writes nothing unless there are at least `need`."""
    from .classifier import accuracy

    trajs = read_replay_buffers(files, flat)
    if len(trajs) < need:
        raise ConfigError(f"`buffer.import_from` holds {len(trajs)} trajectories but `buffer.num_experts` is "
                          f"{need}: set `buffer.num_experts={len(trajs)}`.")
    short = [i for i, t in enumerate(trajs) if t.shape[0] - 1 < epochs]
    if short:
        have = trajs[short[0]].shape[0] - 1
        raise ConfigError(f"`buffer.import_from`: trajectory {short[0]} holds {have} epochs but the run keeps "
                          f"{epochs} (`buffer.train_epochs` / `buffer.keep_epochs`): set "
                          f"`buffer.train_epochs={have}`.")
    accs = []
    for k, traj in enumerate(trajs):
        traj = traj[: epochs + 1]
        if not torch.isfinite(traj).all():
            raise ConfigError(f"`buffer.import_from`: trajectory {k} holds NaN/Inf parameters; not imported.")
        flat.load_(traj[-1].to(next(module.parameters()).device), module)
        acc = accuracy(module, *test_set)
        with store.lock(f"expert_{k}"):
            store.save_expert(k, traj, acc, dtype)
        accs.append(acc)
        log.info("imported expert %d (%d epochs): test accuracy %.2f%%", k, traj.shape[0] - 1, acc)
    store.refresh_manifest()
    return accs
