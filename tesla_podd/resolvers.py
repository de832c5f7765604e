"""OmegaConf resolvers that presets may use (registered on `import tesla_podd`; imports only omegaconf)."""

from __future__ import annotations

from omegaconf import OmegaConf


def if_below(value, threshold, below, otherwise):
    """`${if_below:${ipc},0.7,a,b}` is `a` when ipc < 0.7, else `b`: one sweep whose recipe changes with a
    swept value (PoDD's CIFAR-10 column learns its labels below 0.7 IPC only)."""
    return below if float(value) < float(threshold) else otherwise


def or_else(value, fallback):
    """`${or_else:${sweep_name},${now:%Y-%m-%d_%H-%M-%S}}` is `sweep_name` unless it is null, else the fallback:
    a multirun folder the user can name (and re-launch into) or the launch time."""
    return fallback if value is None else value


def register() -> None:
    for name, fn in (("if_below", if_below), ("or_else", or_else)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
