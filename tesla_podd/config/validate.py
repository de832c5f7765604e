"""`validate_config(cfg)`: everything that can be refused before any stage runs, in well under a second.

1. the schema (schema.py): unknown keys with the nearest valid one, types, choices, ranges;
2. recipe consistency across groups (expert epochs vs the buffer, ipc vs the synthetic set, windows, labels);
3. the environment: memory for the synthetic set, writable output folders, a resume source."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .checks import check_node, unknown_key
from .schema import BY_NAME, RunConfig

TRAJECTORY_ALGORITHMS = ("mtt", "tesla")


def plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python values, without Hydra's own node."""
    keys = [k for k in cfg if k != "hydra"]
    try:
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True, throw_on_missing=True)
    except Exception as exc:  # an interpolation that cannot resolve, a `???` left unset
        raise ConfigError(f"The config does not resolve: {exc}. Set the key it names on the command line.") from None


def _schema_for(path: str, node: dict):
    """Sub-nodes whose schema is picked by their `name` (algorithm, synset)."""
    table = BY_NAME[path]
    name = node.get("name")
    if name not in table:
        raise ConfigError(f"Config key `{path}.name` is {name!r}, which is not allowed; choose one of: "
                          + ", ".join(repr(n) for n in table) + f" (e.g. `{path}={next(iter(table))}`).")
    return table[name]


def check_schema(c: dict) -> None:
    check_node(c, RunConfig, "", _schema_for)


def check_recipe(c: dict) -> None:
    a, s, b, d = c["algorithm"], c["synset"], c["buffer"], c["dataset"]
    if not c["stages"]:
        raise ConfigError("Config key `stages` is [], but at least one stage must run; choose from "
                          "'buffer', 'distill', 'eval', e.g. `stages=[buffer,distill,eval]`.")
    ipc = c["ipc"]
    if s["name"] == "pixels" and float(ipc) != int(ipc):
        raise ConfigError(f"Config key `ipc` is {ipc!r}: a pixel synthetic set needs a whole number of images per "
                          "class. Fractional IPC needs a poster: `method=podd` (or `synset=poster`).")
    if a["name"] in TRAJECTORY_ALGORITHMS:
        need = int(a["max_start_epoch"]) - 1 + int(a["expert_epochs"])  # the latest target epoch drawn
        have = int(b["train_epochs"]) if b["keep_epochs"] is None else min(b["keep_epochs"], b["train_epochs"])
        if need > have:
            raise ConfigError(
                f"`algorithm.expert_epochs={a['expert_epochs']}` with `algorithm.max_start_epoch="
                f"{a['max_start_epoch']}` matches up to expert epoch {need} (start < max_start_epoch, target = "
                f"start + expert_epochs), but the buffer stores {have} epochs (`buffer.train_epochs="
                f"{b['train_epochs']}`, `buffer.keep_epochs={b['keep_epochs']}`); need expert_epochs + max_start_epoch "
                f"<= stored epochs + 1: raise `buffer.train_epochs` (and keep_epochs) to {need} or lower "
                "`algorithm.max_start_epoch`.")
    elif s["labels"] in ("teacher", "teacher_last"):
        raise ConfigError(f"Config key `synset.labels` is {s['labels']!r}: soft labels from an expert need a "
                          f"trajectory-matching algorithm (`algorithm=tesla` or `mtt`), not `{a['name']}`; use "
                          "`synset.labels=hard` or `learned`.")
    if a["name"] == "rat_bptt":
        lo = a["window"] if a["min_window"] is None else a["min_window"]
        if not a["window"] <= a["total_window"] or not lo <= a["total_window"]:
            raise ConfigError(f"RaT-BPTT needs `algorithm.window` ({a['window']}) and `algorithm.min_window` ({lo}) "
                              f"<= `algorithm.total_window` ({a['total_window']}); raise total_window.")
    if len(d["mean"]) != d["channels"] or len(d["std"]) != d["channels"]:
        raise ConfigError(f"`dataset.mean`/`dataset.std` need one value per channel ({d['channels']}); got "
                          f"{d['mean']} and {d['std']}.")
    if any(v <= 0 for v in d["std"]):
        raise ConfigError(f"Config key `dataset.std` is {d['std']}, but every value must be > 0.")
    if c["resume"] is True and "distill" not in c["stages"]:
        raise ConfigError("Config key `resume` is true but `stages` has no distill stage to resume; "
                          "add `distill` to `stages`, or use `resume=auto`.")


def synset_bytes(c: dict) -> int:
    """Memory of the learnable synthetic set with its gradient and optimiser state (float32)."""
    d = c["dataset"]
    pixels = float(c["ipc"]) * d["num_classes"] * d["channels"] * d["image_size"] ** 2
    if c["synset"]["name"] == "poster" and c["synset"]["poster_height"] is not None:
        pixels = d["channels"] * c["synset"]["poster_height"] * c["synset"]["poster_width"]
    return int(pixels * 4 * 4)  # values, gradient, two optimiser moments


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 50


def check_environment(c: dict) -> None:
    need, have = synset_bytes(c), total_memory()
    if need > have:
        raise ConfigError(f"Config key `ipc` is {c['ipc']!r}: a synthetic set of that size for {c['dataset']['name']} "
                          f"needs about {need / 2**30:.1f} GiB with its gradient and optimiser state, more than this "
                          f"machine's {have / 2**30:.1f} GiB; lower `ipc`.")
    for key in ("output_root", "buffer_root", "cache_dir"):
        _check_writable(f"paths.{key}", Path(c["paths"][key]))
    if c["buffer"]["dir"] is not None and "buffer" in c["stages"]:
        _check_writable("buffer.dir", Path(c["buffer"]["dir"]))


def _check_writable(key: str, path: Path) -> None:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"Config key `{key}` is {str(path)!r}, but {str(probe)!r} is not a writable folder; "
                          f"point `{key}` at a folder you can write to.")


def validate_config(cfg: DictConfig) -> dict:
    """Refuse a config that would fail later; returns the resolved plain config."""
    c = plain(cfg)
    check_schema(c)
    check_recipe(c)
    check_environment(c)
    return c


__all__ = ["validate_config", "check_schema", "check_recipe", "check_environment", "plain", "unknown_key"]


def _fields_at(path: list[str]) -> set[str] | None:
    """Keys the schema allows under `path` (None: not a node the schema describes field by field)."""
    import dataclasses
    import typing

    from .checks import hints

    classes = [RunConfig]
    for part in path:
        nxt = []
        for cls in classes:
            tp = hints(cls).get(part)
            if tp is None:
                continue
            if dataclasses.is_dataclass(tp):
                nxt.append(tp)
            elif tp is typing.Any and part in BY_NAME:
                nxt.extend(dict.fromkeys(BY_NAME[part].values()))
        if not nxt:
            return None
        classes = nxt
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def suggest_override_keys(args: list[str]) -> list[str]:
    """For command-line overrides Hydra refused (`key=value` on a key no option has): the nearest valid key."""
    notes = []
    for arg in args:
        if "=" not in arg or arg.startswith(("-", "hydra", "~")):
            continue
        key = arg.split("=", 1)[0].lstrip("+")
        parts = key.split(".")
        for i, part in enumerate(parts):
            allowed = _fields_at(parts[:i])
            if allowed is None:
                break
            if part not in allowed:
                if i == 0 and len(parts) == 1:
                    break  # a group choice (`dataset=mnist`): Hydra lists the options itself
                notes.append(str(unknown_key(".".join(parts[:i]), part, allowed)))
                break
    return notes
