"""The typed schema refuses every wrong value at start: one paragraph naming the key, the value and what is
allowed (exit 2 from the CLI), unknown keys with the nearest valid one, and inconsistent recipes."""

from __future__ import annotations

import copy
import math
import shutil

import pytest
from conftest import CONF, compose_cfg, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tesla_podd.config import validate_config
from tesla_podd.config.validate import check_environment, check_recipe, check_schema, plain
from tesla_podd.errors import ConfigError
from tesla_podd.train import stages_to_run


@pytest.fixture(scope="module")
def base():
    """Plain smoke configs (composed once): the trajectory one and the PoDD/RaT-BPTT one."""
    out = {"tesla": plain(compose_cfg("debug=smoke", "method=tesla")),
           "podd": plain(compose_cfg("debug=smoke", "method=podd"))}
    GlobalHydra.instance().clear()
    return out


def _with(c: dict, key: str, value) -> dict:
    c = copy.deepcopy(c)
    *parents, last = key.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[last] = value
    return c


def _refused(c: dict, *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        check_schema(c)
        check_recipe(c)
    msg = str(info.value)
    assert "\n" not in msg.strip(), "one paragraph"
    for n in needles:
        assert n in msg, (n, msg)
    return msg


BAD = [  # (preset, key, wrong value, a fragment of "what is allowed")
    ("tesla", "seed", 1.5, "whole number"), ("tesla", "seed", "abc", "whole number"), ("tesla", "seed", -1, ">= 0"),
    ("tesla", "seed", True, "whole number"),
    ("tesla", "num_threads", "abc", "whole number"), ("tesla", "num_threads", 0, "> 0"),
    ("tesla", "num_threads", 1.5, "whole number"),
    ("tesla", "ipc", 0, "> 0"), ("tesla", "ipc", -1, "> 0"), ("tesla", "ipc", "ten", "a number"),
    ("tesla", "ipc", math.nan, "> 0"), ("tesla", "resume", "maybe", "'auto'"),
    ("tesla", "stages", ["bufer"], "'buffer'"),
    ("tesla", "stages", "buffer", "a list"), ("tesla", "stages", [], "at least one stage"),
    ("tesla", "algorithm.lr_img", 0, "> 0"), ("tesla", "algorithm.lr_img", -1.0, "> 0"),
    ("tesla", "algorithm.lr_img", math.inf, "> 0"), ("tesla", "algorithm.lr_img", "big", "a number"),
    ("tesla", "algorithm.lr_lr", 0, "> 0"), ("tesla", "algorithm.lr_label", -1, "> 0"),
    ("tesla", "algorithm.lr_teacher", 0, "> 0"), ("tesla", "algorithm.momentum", 1, "< 1"),
    ("tesla", "algorithm.momentum", -0.1, ">= 0"), ("tesla", "algorithm.iterations", 0, "> 0"),
    ("tesla", "algorithm.iterations", 2.5, "whole number"), ("tesla", "algorithm.syn_steps", 0, "> 0"),
    ("tesla", "algorithm.expert_epochs", 0, "> 0"), ("tesla", "algorithm.max_start_epoch", 0, "> 0"),
    ("tesla", "algorithm.batch_syn", 0, "> 0"), ("tesla", "algorithm.grad_mode", "fast", "'unrolled'"),
    ("tesla", "algorithm.learn_lr", "yes", "true or false"), ("tesla", "algorithm.exact_keep_every", -1, ">= 0"),
    ("tesla", "algorithm.synset_grad_warmup", -1, ">= 0"),
    ("tesla", "algorithm.synset_grad_warmup", 2.5, "whole number"),
    ("tesla", "buffer.num_experts", 0, "> 0"), ("tesla", "buffer.train_epochs", 0, "> 0"),
    ("tesla", "buffer.lr_teacher", 0, "> 0"), ("tesla", "buffer.momentum", 1.0, "< 1"),
    ("tesla", "buffer.batch_size", 0, "> 0"), ("tesla", "buffer.amp", "fp8", "'bf16'"),
    ("tesla", "buffer.weight_decay", -1, ">= 0"), ("tesla", "buffer.seed", 0.5, "whole number"),
    ("tesla", "distill.log_every", 0, "> 0"), ("tesla", "distill.checkpoint_every", -1, "0 switches it off"),
    ("tesla", "distill.image_every", -1, ">= 0"), ("tesla", "distill.eval_every", -5, ">= 0"),
    ("tesla", "distill.eval_models", 0, "> 0"), ("tesla", "distill.eval_epochs", 0, "> 0"),
    ("tesla", "eval.num_models", 0, "> 0"), ("tesla", "eval.epochs", 0, "> 0"), ("tesla", "eval.batch_size", 0, "> 0"),
    ("tesla", "eval.optimizer", "rmsprop", "'sgd'"), ("tesla", "eval.lr", -1, "> 0"),
    ("tesla", "eval.lr", "learn", "'learned'"), ("tesla", "eval.momentum", 1, "< 1"),
    ("tesla", "eval.weight_decay", -1, ">= 0"), ("tesla", "eval.lanes", 0, "> 0"),
    ("tesla", "eval.lanes", "all", "auto"), ("tesla", "algorithm.lanes", 0, "> 0"),
    ("tesla", "algorithm.lanes", "many", "auto"), ("tesla", "model.width", 0, "> 0"),
    ("tesla", "model.depth", 0, "> 0"),
    ("tesla", "model.name", "resnet", "'convnet'"), ("tesla", "dataset.zca", "pca", "'kornia'"),
    ("tesla", "dataset.num_classes", 1, ">= 2"), ("tesla", "dataset.image_size", 0, ">= 8"),
    ("tesla", "dataset.zca_eps", 0, "> 0"), ("tesla", "dataset.name", "mnist", "'cifar10'"),
    ("tesla", "dataset.zca_fit", "pool", "'subset'"),
    ("tesla", "augment.name", "cutmix", "'dsa'"), ("tesla", "augment.flip", 2, "<= 1"),
    ("tesla", "augment.mode", "some", "'one'"), ("tesla", "synset.init", "zeros", "'real'"),
    ("tesla", "synset.labels", "soft", "'hard'"), ("tesla", "wandb.mode", "sometimes", "'offline'"),
    ("podd", "algorithm.window", 0, "> 0"), ("podd", "algorithm.inner_lr", 0, "> 0"),
    ("podd", "algorithm.inner_optim", "rmsprop", "'adam'"), ("podd", "algorithm.batch_real", 0, "> 0"),
    ("podd", "algorithm.clip_coef", 0, "> 0"), ("podd", "algorithm.ema_decay", 1, "< 1"),
    ("podd", "algorithm.syn_augment.name", "cutmix", "'dsa'"), ("podd", "synset.class_order", "random", "'poco'"),
    ("podd", "synset.labels", "teacher", "'poddl_fixed'"), ("podd", "synset.poster_height", 0, "> 0"),
]


@pytest.mark.parametrize("preset,key,value,allowed", BAD, ids=[f"{k}={v!r}" for _, k, v, _ in BAD])
def test_wrong_value_is_refused_naming_key_value_and_allowed(base, preset, key, value, allowed):
    msg = _refused(_with(base[preset], key, value), allowed)
    assert f"`{key}" in msg or key.split(".")[-1] in msg


@pytest.mark.parametrize("preset", ["tesla", "podd"])
def test_shipped_smoke_configs_pass(base, preset):
    check_schema(base[preset])
    check_recipe(base[preset])


@pytest.mark.parametrize("key,typo,near", [("", "sed", "seed"), ("algorithm", "lr_imgg", "algorithm.lr_img"),
                                           ("buffer", "num_expert", "buffer.num_experts"),
                                           ("distill", "checkpoint_evry", "distill.checkpoint_every")])
def test_unknown_key_names_the_nearest(base, key, typo, near):
    c = copy.deepcopy(base["tesla"])
    (c[key] if key else c)[typo] = 1
    _refused(c, f"`{(key + '.') if key else ''}{typo}` is not a known key", f"Did you mean `{near}`?")


def test_typo_in_a_preset_file_is_refused(tmp_path):
    """A preset's misspelled key used to be silently ignored."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\nbuffer:\n  num_expert: 3   # typo\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose("train", overrides=["experiment=typo", "debug=smoke"], return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    with pytest.raises(ConfigError, match=r"`buffer.num_expert` is not a known key.*`buffer.num_experts`"):
        validate_config(cfg)


def test_expert_epoch_bound_is_exact(base):
    """start ~ U{0..max_start_epoch-1}, target = start + expert_epochs <= train_epochs (smoke: 4 epochs)."""
    c = _with(_with(base["tesla"], "algorithm.expert_epochs", 2), "buffer.train_epochs", 4)
    check_recipe(_with(c, "algorithm.max_start_epoch", 3))  # latest target 2 + 2 = 4: fits (was refused)
    _refused(_with(c, "algorithm.max_start_epoch", 4), "expert_epochs + max_start_epoch <= stored epochs + 1",
             "`buffer.train_epochs`")


def test_recipe_inconsistencies(base):
    _refused(_with(base["tesla"], "ipc", 0.5), "Fractional IPC needs a poster")
    _refused(_with(base["podd"], "algorithm.window", 99), "total_window")
    c = _with(_with(base["podd"], "synset.name", "pixels"), "synset.labels", "teacher")
    c["synset"] = {"name": "pixels", "init": "real", "labels": "teacher"}
    _refused(c, "`synset.labels` is 'teacher'", "algorithm=tesla")


def test_too_big_a_synthetic_set_and_unwritable_outputs(base, tmp_path):
    with pytest.raises(ConfigError, match=r"`ipc` is 1000000000.*GiB.*lower `ipc`"):
        check_environment(_with(base["tesla"], "ipc", 10**9))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as root")
        with pytest.raises(ConfigError, match=r"`paths.output_root`.*not a writable folder"):
            check_environment(_with(base["tesla"], "paths.output_root", str(locked / "out")))
    finally:
        locked.chmod(0o700)


def test_buffer_stage_follows_the_algorithm(tmp_path):
    """`method=podd algorithm=tesla` builds its buffer without spelling out `stages`; RaT-BPTT skips it."""
    assert stages_to_run(compose_cfg("method=podd", tmp=tmp_path)) == ["distill", "eval"]
    assert stages_to_run(compose_cfg("method=podd", "algorithm=tesla", tmp=tmp_path)) == ["buffer", "distill", "eval"]
    assert stages_to_run(compose_cfg("method=random", tmp=tmp_path)) == ["distill", "eval"]
    assert stages_to_run(compose_cfg("method=rat_bptt", "stages=[buffer]", tmp=tmp_path)) == ["buffer"]


@pytest.mark.slow
def test_seed_float_on_the_cli_exits_2(tmp_path):
    """The one CLI smoke check: a type error is refused before any stage, exit 2, no traceback."""
    out = run_cli("debug=smoke", "seed=1.5", f"paths.output_root={tmp_path}", f"hydra.run.dir={tmp_path}/r")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "`seed` is 1.5" in out.stderr and "whole number" in out.stderr
    assert not (tmp_path / "r" / "meta.json").exists(), "refused before anything ran"


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [(["algorithm.lr_imgg=3"], "Did you mean `algorithm.lr_img`?"),
                                         (["dataset=mnist"], "mnist"),
                                         (["+algorithm.lr_imgg=3"], "Did you mean `algorithm.lr_img`?"),
                                         (["num_threads=abc"], "`num_threads` is 'abc'")])
def test_hydra_and_schema_errors_exit_2(tmp_path, args, needle):
    out = run_cli("debug=smoke", *args, f"paths.output_root={tmp_path}", f"hydra.run.dir={tmp_path}/r")
    assert out.returncode == 2, (out.returncode, out.stderr[-1500:])
    assert needle in out.stderr


def test_hydra_refused_override_gets_the_nearest_key():
    """Hydra's own 'not in struct' error is followed by the nearest valid key (cli prints these)."""
    from tesla_podd.config.validate import suggest_override_keys

    notes = suggest_override_keys(["algorithm.lr_imgg=3", "dataset=mnist", "seed=1", "hydra.run.dir=x",
                                   "algorithm.syn_augment.strat=1"])
    assert len(notes) == 2
    assert "Did you mean `algorithm.lr_img`?" in notes[0]
    assert "Did you mean `algorithm.syn_augment.strategy`?" in notes[1]
