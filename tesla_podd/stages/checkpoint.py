"""Distill checkpoints (checkpoints/last.pt): what is saved, which run may resume from it, and how.

A checkpoint carries the identity of the run that wrote it (algorithm, synthetic set and its tensor shapes,
ipc, dataset, seed); a resume with another identity, or from a truncated/corrupt file, is refused with one
paragraph. Optimiser state (momentum, Adam moments) is restored, but the learning rates and momentum are
this run's: a user told to lower `algorithm.lr_img` and resume gets the lower lr."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .. import atomic
from ..errors import ConfigError

log = logging.getLogger(__name__)
FORMAT = "tesla-podd/distill-checkpoint"
HYPER_KEYS = ("lr", "momentum", "betas", "eps", "weight_decay", "dampening", "nesterov")  # this run's settings


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def identity(cfg, synset) -> dict:
    """What must agree between the run that saved a checkpoint and the run resuming it."""
    shapes = {k: list(v.shape) for k, v in synset.state_dict().items() if torch.is_tensor(v)}
    return {"algorithm": str(cfg.algorithm.name), "synset": str(cfg.synset.name), "ipc": cfg.ipc,
            "dataset": str(cfg.dataset.name), "seed": int(cfg.seed), "shapes": shapes}


def save(path: Path, done: int, cfg, synset, algo, opts, average=None) -> Path:
    return atomic.save_torch({"format": FORMAT, "iteration": done, "identity": identity(cfg, synset),
                              "synset": synset.state_dict(), "algorithm": algo.state_dict(),
                              "optimizers": [o.state_dict() for o in opts],
                              "average": None if average is None else average.state_dict(),
                              "config": OmegaConf.to_container(cfg, resolve=False)}, path)


def resume_source(cfg, run_dir: Path) -> Path | None:
    """The checkpoint to continue from: `resume=true` needs one, `resume=auto` takes one if it is there."""
    if cfg.resume is False:
        return None
    src = checkpoint_path(Path(cfg.resume_dir) if cfg.resume_dir is not None else run_dir)
    if src.is_file():
        return src
    if cfg.resume == "auto":
        log.info("resume=auto: no checkpoint at %s, starting from iteration 0", src)
        return None
    raise ConfigError(f"`resume=true` but there is no checkpoint at {src}; set `resume_dir` to the run dir of the "
                      "run to continue, or use `resume=auto` to start fresh when there is none.")


def load(src: Path, cfg, synset, device) -> dict:
    """Read and vet a checkpoint; the caller applies it with `apply`."""
    try:
        state = torch.load(src, map_location=device, weights_only=False)
    except Exception as exc:
        raise ConfigError(f"Checkpoint {src} is unreadable or truncated ({type(exc).__name__}); delete it to start "
                          "over, or point `resume_dir` at another run.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{src} is not a tesla-podd distill checkpoint (written by another version or program); "
                          "delete it or point `resume_dir` at another run.")
    saved, now = state["identity"], identity(cfg, synset)
    diff = [k for k in now if saved.get(k) != now[k]]
    if diff:
        what = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, this run {now[k]!r}" for k in diff)
        raise ConfigError(f"Checkpoint {src} belongs to another run ({what}); resume with the settings it was made "
                          "with, or start fresh with `resume=false` in a new run dir.")
    return state


def apply(state: dict, synset, algo, opts, average=None) -> int:
    """Load the vetted state; keep this run's lrs/momentum in every optimiser. Returns the next iteration.
    `average` (distill.average_decay > 0) continues from the saved average, or starts at the resumed set when
    the checkpoint was written without one."""
    if len(state["optimizers"]) != len(opts):
        raise ConfigError(f"The checkpoint has {len(state['optimizers'])} optimisers but this run has {len(opts)} "
                          "(was `algorithm.learn_lr` or `synset.labels` changed?); resume with the settings it was "
                          "made with.")
    synset.load_state_dict(state["synset"])
    algo.load_state_dict(state["algorithm"])
    for o, s in zip(opts, state["optimizers"], strict=True):
        fresh = [{k: g[k] for k in HYPER_KEYS if k in g} for g in o.param_groups]
        o.load_state_dict(s)
        for g, hyper in zip(o.param_groups, fresh, strict=True):
            g.update(hyper)
    if average is not None:
        if state.get("average") is not None:
            average.load_state_dict(state["average"])
        else:
            log.warning("the checkpoint has no averaged set (distill.average_decay was 0); the average starts here")
            average.reset(synset)
    return int(state["iteration"])
