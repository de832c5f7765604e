"""OmegaConf resolvers that presets may use (registered on `import tesla_podd`; imports only omegaconf)."""

from __future__ import annotations

from omegaconf import OmegaConf


def if_below(value, threshold, below, otherwise):
    """`${if_below:${ipc},0.7,a,b}` is `a` when ipc < 0.7, else `b`: one sweep whose recipe changes with a
    swept value (PoDD's CIFAR-10 column learns its labels below 0.7 IPC only)."""
    return below if float(value) < float(threshold) else otherwise


def register() -> None:
    if not OmegaConf.has_resolver("if_below"):
        OmegaConf.register_new_resolver("if_below", if_below)
