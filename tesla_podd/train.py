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
from .algorithms import ALGORITHMS
from .conf_dir import config_dir
from .config import validate_config
from .config.validate import suggest_override_keys
from .curves import plot_stage
from .errors import ConfigError, UserError
from .logs import bars_stay_whole
from .numerics import apply_numerics, device_info
from .seeding import seed_everything
from .stages import STAGES
from .stages.context import RunContext, resolve_device
from .stages.divergence import DistillDiverged
from .tracking import Tracker

log = logging.getLogger("tesla_podd")


def stages_to_run(cfg: DictConfig) -> list[str]:
    """`stages` minus the buffer stage when the algorithm needs no expert buffer (RaT-BPTT, random), so
    `method=podd algorithm=tesla` builds its buffer and `method=podd` does not, with the same `stages`.
    A buffer-only run (`stages=[buffer]`) always builds it."""
    stages = list(cfg.stages)
    if stages != ["buffer"] and not ALGORITHMS[cfg.algorithm.name].needs_buffer:
        stages = [s for s in stages if s != "buffer"]
    return stages


def _git_sha() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if sha.returncode == 0 else None
    except Exception:
        return None


def write_meta(run_dir: Path, device: torch.device, numerics: dict | None = None,
               cfg: DictConfig | None = None) -> None:
    """meta.json: versions, host, argv, and the device and numerics this run ran with (GPU, driver, CUDA, cuDNN,
    TF32 / cuDNN autotuning / deterministic kernels, torch.compile switches)."""
    compiled = None
    if cfg is not None:
        a = cfg.algorithm
        compiled = {"algorithm": bool(a.get("compile", False)), "algorithm_mode": a.get("compile_mode"),
                    "buffer": bool(cfg.buffer.get("compile", False))}
    atomic.write_json({"version": __version__, "git": _git_sha(), "torch": torch.__version__,
                       "device": str(device), **device_info(device), "numerics": numerics, "compile": compiled,
                       "host": platform.node(), "python": sys.version.split()[0], "argv": sys.argv},
                      run_dir / "meta.json")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> float | None:
    """Run the configured stages; `run_dir` defaults to Hydra's run dir (tests pass their own)."""
    validate_config(cfg)
    OmegaConf.set_readonly(cfg, True)
    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.clean_orphans(run_dir)  # temp files a killed run left beside its outputs
    device = resolve_device(cfg.device)
    numerics = apply_numerics(cfg.get("precision", "tf32"), bool(cfg.get("deterministic", False)), device)
    seed_everything(cfg.seed)
    if cfg.num_threads is not None:
        torch.set_num_threads(int(cfg.num_threads))
    write_meta(run_dir, device, numerics, cfg)
    tracker = Tracker.start(cfg, run_dir, stages_to_run(cfg))
    ctx = RunContext(cfg=cfg, run_dir=run_dir, device=device, tracker=tracker)
    try:
        for name in stages_to_run(cfg):
            log.info("stage %s", name)
            ctx.results.update(STAGES[name](cfg, ctx))
            tracker.record_stage(name, cfg, run_dir)  # W&B lineage: buffer -> synset -> eval table
            plot_stage(name, cfg, run_dir)  # PNG curves from metrics.csv / eval.json, in plots/
        tracker.summary({k: v for k, v in ctx.results.items() if isinstance(v, (int, float))})
        atomic.write_text(json.dumps(ctx.results, indent=2, default=str) + "\n", run_dir / "results.json")
    finally:
        tracker.finish()
    return objective_value(cfg, ctx.results)


def objective_value(cfg, results: dict) -> float | None:
    """The number `main` returns to a Hydra sweeper (`objective`): the test mean, or the validation mean so a
    search never selects on test accuracy. None when no evaluation ran."""
    key = cfg.get("objective") or "eval/acc_mean"
    if "eval/acc_mean" in results and key not in results:
        raise ConfigError(f"`objective` is {key!r}, which this run did not measure (it measured: "
                          f"{', '.join(sorted(k for k in results if k.startswith('eval/')))}). `eval/val_mean` needs "
                          "a validation split (`dataset.val_size` > 0).")
    return results.get(key)


def _in_optuna_search() -> bool:
    """A trial of `hparams_search=...`: a diverged trial is a bad sample there, not the end of the search."""
    hc = HydraConfig.get()
    return str(hc.mode) == "RunMode.MULTIRUN" and "optuna" in str(hc.sweeper.get("_target_", ""))


_task_started = False  # set once Hydra composed the config and called main (see cli)


# An absolute folder: the packaged configs of a wheel install or conf/ of the checkout (see conf_dir.py).
@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    global _task_started
    _task_started = True
    try:
        with bars_stay_whole():  # console log lines leave the progress bars whole (logs.py)
            return run(cfg)
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", exc)
        if isinstance(exc, DistillDiverged) and _in_optuna_search():
            # The search goes on; the trial scores 0 (a nan return crashes hydra-optuna-sweeper 1.3 / optuna 2.10).
            log.warning("this trial diverged: it scores 0.0 and the search goes on")
            return 0.0
        print(f"\nError: {exc}\n(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    """Run `main`; a config error Hydra reports itself (unknown override key, missing group option) exits 2
    like the runner's own errors. Hydra exits 1 for those before it calls `main`; once `main` runs, exit 1 is
    a bug with its traceback, and stays 1."""
    try:
        main()
    except SystemExit as exc:
        if exc.code == 1 and not _task_started:
            for note in suggest_override_keys(sys.argv[1:]):
                print(f"\nError: {note}", file=sys.stderr)
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    cli()
