"""Host -> device copies that never make the CPU wait for the GPU.

Every random draw (mini-batch indices, augmentation parameters) happens on the CPU from the iteration's
generator, so seeded runs stay CPU-identical. A plain `.to("cuda")` of such a (pageable) tensor, or indexing a
CUDA tensor with a CPU index, blocks the CPU until the GPU has caught up: one such sync per op per step keeps the
CPU from running ahead. Here a whole plan's tensors go over at once instead: packed per dtype into one pinned
buffer and copied with `non_blocking=True` (the copy queues behind the GPU's work, the CPU goes on). On the CPU
nothing is copied: the same tensors come back."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One tensor to `device`: pinned and non-blocking from the CPU to CUDA; unchanged when already there."""
    return to_device_all([t], device)[0]


def to_device_all(tensors: Iterable[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Tensors to `device` with one copy per dtype (pinned, non-blocking when the target is CUDA). Tensors already
    on the device come back as they are; so does everything when the device is the CPU."""
    tensors = list(tensors)
    device = torch.device(device)
    out = list(tensors)
    todo = [i for i, t in enumerate(tensors) if t.device != device and not _same_cuda(t.device, device)]
    if not todo:
        return out
    if device.type != "cuda":
        for i in todo:
            out[i] = tensors[i].to(device)
        return out
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i in todo:
        if tensors[i].device.type != "cpu":  # another GPU: a device-to-device copy, queued like the rest
            out[i] = tensors[i].to(device, non_blocking=True)
            continue
        by_dtype.setdefault(tensors[i].dtype, []).append(i)
    for idx in by_dtype.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
        moved = flat.pin_memory().to(device, non_blocking=True)
        for i, part in zip(idx, moved.split([tensors[i].numel() for i in idx])):
            out[i] = part.view(tensors[i].shape)
    return out


def _same_cuda(a: torch.device, b: torch.device) -> bool:
    """`cuda` and `cuda:<current>` are one device."""
    if a.type != "cuda" or b.type != "cuda":
        return False
    cur = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)


class HostReads:
    """Counts the ways a tensor's value reaches Python (`.item()`, `.tolist()`, `.cpu()`, `float()`, `int()`,
    `bool()`): on CUDA each of them waits for the GPU. A CPU-side stand-in for torch.cuda.set_sync_debug_mode, so
    tests on machines without a GPU can still assert that a loop reads no values per step:

        with HostReads() as reads:
            match_tesla(...)
        reads.count  # the same for 3 steps as for 30
    """

    METHODS = ("item", "tolist", "cpu", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self):
        self.count, self.by_name, self._saved = 0, {}, {}

    def __enter__(self) -> HostReads:
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(t, *args, _name=name, _original=original, **kwargs):
                self.count += 1
                self.by_name[_name] = self.by_name.get(_name, 0) + 1
                return _original(t, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
