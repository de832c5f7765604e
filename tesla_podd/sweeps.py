"""What a multirun job knows about its sweep: which keys were swept, and the W&B group that names them.

`-m algorithm.lr_img=100,1000` gives two jobs; with the default `wandb.group` (`${run_name}`) both would land
in one W&B group and mix two settings. Each job's group gets the swept keys and its own values appended
(`tesla-pixels-cifar10-ipc1 algorithm.lr_img=100`), so the seeds of one setting aggregate and the settings
do not (a swept `seed` stays out of the group, as do the keys run_name already names). Swept keys: the comma
lists / range() / choice() / interval() of the command line (Hydra saves it in <sweep dir>/multirun.yaml before
the jobs start) and the keys of `hydra.sweeper.params` (presets, Optuna)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

MAX_GROUP = 128  # W&B's limit on a group name
# Not appended: seeds are what a group aggregates; the others are in the default group (run_name) already.
NOT_IN_GROUP = {"seed", "ipc", "method", "algorithm", "synset", "dataset"}


def swept_keys(sweep_overrides: list[str], sweeper_params: dict | None) -> list[str]:
    """Keys varied by the sweep: sweep-syntax overrides of the command line, then the sweeper's own params."""
    parsed = OverridesParser.create().parse_overrides(list(sweep_overrides))
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    keys += [str(k) for k in (sweeper_params or {})]
    return list(dict.fromkeys(keys))


def job_values(job_overrides: list[str], keys: list[str]) -> list[str]:
    """`key=value` of this job for each swept key, in the order of `keys`."""
    by_key = {o.key_or_group: o.get_value_element_as_str() for o in OverridesParser.create().parse_overrides(
        list(job_overrides))}
    return [f"{k}={by_key[k]}" for k in keys if k in by_key and k not in NOT_IN_GROUP]


def group_with_values(group: str, values: list[str]) -> str:
    name = " ".join([group, *values]) if values else group
    if len(name) > MAX_GROUP:  # keep it unique: a digest of the full name replaces the tail
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name[: MAX_GROUP - 9] + "~" + digest
    return name


def wandb_group(cfg) -> str | None:
    """`wandb.group`, plus this job's swept `key=value`s when it is the default group of a multirun job."""
    group = cfg.wandb.group
    if group is None or group != cfg.get("run_name") or not HydraConfig.initialized():
        return group  # a group the user set is kept as set
    hc = HydraConfig.get()
    if str(hc.mode) != "RunMode.MULTIRUN":
        return group
    saved = Path(hc.sweep.dir) / "multirun.yaml"
    sweep_overrides = list(OmegaConf.load(saved).hydra.overrides.task) if saved.is_file() else []
    params = hc.sweeper.get("params")
    keys = swept_keys(sweep_overrides, OmegaConf.to_container(params) if OmegaConf.is_config(params) else params)
    return group_with_values(group, job_values(list(hc.overrides.task), keys))
