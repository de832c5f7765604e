"""Every config group option and every experiment preset composes, resolves and passes the typed schema
(so a YAML key missing from tesla_podd/config/schema.py, or a preset's typo, fails here)."""

from __future__ import annotations

import pytest
from conftest import CONF, compose_cfg
from omegaconf import OmegaConf

from tesla_podd.config.validate import check_recipe, check_schema, plain

GROUPS = ["dataset", "model", "augment", "synset", "algorithm", "method", "buffer", "distill", "eval", "wandb", "paths",
          "debug"]


def resolve_all(cfg) -> dict:
    """Resolve every key except Hydra's own node (its sweep keys only exist in a multirun)."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def schema_valid(cfg) -> None:
    """The schema and recipe checks of validate_config (not the machine's memory or folders)."""
    c = plain(cfg)
    check_schema(c)
    check_recipe(c)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_required_options_exist():
    assert set(options("dataset")) >= {"cifar10", "cifar100", "cub200", "tinyimagenet", "imagenet64", "fake"}
    assert set(options("augment")) >= {"dsa", "none"}
    assert "random" in options("method")
    assert "smoke" in options("debug")


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_group_option_composes(group, option, tmp_path):
    cfg = compose_cfg(f"{group}={option}", tmp=tmp_path)
    resolved = resolve_all(cfg)
    assert resolved["run_name"]
    schema_valid(cfg)
    if group in ("dataset", "model", "augment", "synset", "algorithm"):
        assert cfg[group].name == option, "option file name must equal its `name:` key (registry key)"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_preset_composes(experiment, tmp_path):
    cfg = compose_cfg(f"experiment={experiment}", tmp=tmp_path)
    resolve_all(cfg)
    schema_valid(cfg)
    header = (CONF / "experiment" / f"{experiment}.yaml").read_text().splitlines()
    assert header[0].strip() == "# @package _global_"
    comments = header[: next((i for i, line in enumerate(header) if not line.startswith("#")), len(header))]
    assert any("python -m tesla_podd.train" in line or "make demo" in line for line in comments), \
        "each preset is headed (in its leading comment block) by its launch command"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_preset_with_smoke_composes(experiment, tmp_path):
    cfg = compose_cfg(f"experiment={experiment}", "debug=smoke", tmp=tmp_path)
    assert cfg.dataset.name == "fake"  # debug wins over the preset's dataset
    resolve_all(cfg)
    schema_valid(cfg)


def test_every_yaml_key_is_commented():
    """Each leaf key line in a group option carries a comment (or its file header explains it)."""
    missing = []
    for path in CONF.rglob("*.yaml"):
        rel = path.relative_to(CONF)
        if rel.parts[0] in ("experiment", "hydra", "debug", "debug_algorithm", "method"):
            continue  # presets explain themselves in their headers; hydra/ holds Hydra's own keys
        for line in path.read_text().splitlines():
            s = line.strip()
            if not s or s.startswith("#") or s.startswith("-") or s.startswith("defaults"):
                continue
            if s.endswith(":"):  # a mapping header (e.g. `buffer:` in a preset)
                continue
            if "#" not in s:
                missing.append(f"{path.relative_to(CONF)}: {s}")
    assert not missing, "uncommented keys:\n" + "\n".join(missing)


def test_cli_overrides_beat_presets(tmp_path):
    cfg = compose_cfg("experiment=random_cifar10_ipc10", "ipc=3", "eval.num_models=8", tmp=tmp_path)
    assert cfg.ipc == 3 and "ipc" not in cfg.synset and cfg.eval.num_models == 8


@pytest.mark.parametrize("algorithm", options("algorithm"))
@pytest.mark.parametrize("synset", options("synset"))
def test_every_algorithm_with_every_synset_passes_the_schema(algorithm, synset, tmp_path):
    """Method cells not spelled out as presets (and the debug_* overlays) are in the schema too."""
    for extra in ((), ("debug=smoke",)):
        schema_valid(compose_cfg(f"algorithm={algorithm}", f"synset={synset}", "ipc=1", *extra, tmp=tmp_path))
