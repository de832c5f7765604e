"""Entrypoint: `python -m tesla_podd.train [overrides]` (or the `tesla-podd` console script).

Compose -> validate -> freeze -> track -> run the stages in `stages` -> return the eval mean (so
Hydra sweepers can optimise it). User errors print one paragraph and exit 2; HYDRA_FULL_ERROR=1
shows the traceback instead."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import __version__, atomic
from .errors import ConfigError, UserError, check_choice
from .seeding import seed_everything
from .stages import STAGES
from .stages.context import RunContext, resolve_device
from .tracking import Tracker

log = logging.getLogger("tesla_podd")


def validate(cfg: DictConfig) -> None:
    """Checks that need no data, before any expensive work."""
    stages = list(cfg.stages)
    if not stages:
        raise ConfigError(f"`stages` is empty; pick from {list(STAGES)}, e.g. `stages=[buffer,distill,eval]`.")
    for s in stages:
        check_choice("stages", s, STAGES)
    ipc = cfg.ipc
    if isinstance(ipc, bool) or not isinstance(ipc, (int, float)) or ipc <= 0:
        raise ConfigError(
            f"`ipc={ipc}`: images per class must be a positive number (a whole number for pixel sets, "
            "e.g. `ipc=1` or `ipc=10`; a fraction such as `ipc=0.4` for a poster, `method=podd`)."
        )
    if cfg.eval.num_models < 1:
        raise ConfigError(f"`eval.num_models={cfg.eval.num_models}`: must be at least 1 (papers: 5 or 8).")


def _git_sha() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if sha.returncode == 0 else None
    except Exception:
        return None


def write_meta(run_dir: Path, device: torch.device) -> None:
    atomic.write_json({"version": __version__, "git": _git_sha(), "torch": torch.__version__,
                       "cuda": torch.version.cuda, "device": str(device), "host": platform.node(),
                       "python": sys.version.split()[0], "argv": sys.argv}, run_dir / "meta.json")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> float | None:
    """Run the configured stages; `run_dir` defaults to Hydra's run dir (tests pass their own)."""
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    write_meta(run_dir, device)
    tracker = Tracker.start(cfg, run_dir)
    ctx = RunContext(cfg=cfg, run_dir=run_dir, device=device, tracker=tracker)
    try:
        for name in cfg.stages:
            log.info("stage %s", name)
            ctx.results.update(STAGES[name](cfg, ctx))
        tracker.summary({k: v for k, v in ctx.results.items() if isinstance(v, (int, float))})
        atomic.write_text(json.dumps(ctx.results, indent=2, default=str) + "\n", run_dir / "results.json")
    finally:
        tracker.finish()
    return ctx.results.get("eval/acc_mean")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", exc)
        print(f"\nError: {exc}\n(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    main()


if __name__ == "__main__":
    main()
