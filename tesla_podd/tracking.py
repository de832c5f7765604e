"""The only module that talks to Weights & Biases.

`wandb.mode`: online | offline | disabled. Default offline unless WANDB_MODE says otherwise. Online
mode first checks that the W&B host answers within a couple of seconds and falls back to offline
with a warning, so a run never hangs on a missing network. `finish()` is safe to call twice."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

from .errors import check_choice

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")


def _host_reachable(url: str, timeout: float = 2.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(configured: str | None) -> str:
    mode = os.environ.get("WANDB_MODE") or configured or "offline"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    check_choice("wandb.mode", mode, MODES)
    if mode == "online":
        base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        if not _host_reachable(base):
            log.warning("W&B host %s unreachable: logging offline (sync later with `wandb sync`)", base)
            mode = "offline"
    return mode


class Tracker:
    def __init__(self, run=None):
        self.run = run

    @classmethod
    def start(cls, cfg, run_dir: str | Path) -> Tracker:
        wcfg = cfg.wandb
        mode = resolve_mode(wcfg.get("mode"))
        if mode == "disabled":
            return cls(None)
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=wcfg.project,
            entity=wcfg.get("entity"),
            group=wcfg.get("group"),
            name=wcfg.get("name"),
            tags=list(wcfg.get("tags") or []),
            mode=mode,
            dir=str(run_dir),
            config=OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False),
            reinit="finish_previous",
            settings=wandb.Settings(init_timeout=60, console="off", silent=True),
        )
        return cls(run)

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(dict(metrics), step=step)

    def log_image(self, key: str, path: str | Path, caption: str = "", step: int | None = None) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path), caption=caption)}, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            run.finish()
