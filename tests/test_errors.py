"""Bad input gets a one-paragraph message naming the key, the value and what is allowed (exit 2)."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli

from tesla_podd import atomic
from tesla_podd.errors import BufferError_, ConfigError
from tesla_podd.expert_store import open_store
from tesla_podd.train import run


def _fails(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stderr[-1500:])
    assert "Traceback" not in out.stderr, "user errors print no traceback"
    for n in needles:
        assert n in out.stderr, (n, out.stderr[-1500:])


@pytest.mark.parametrize("ipc", ["0", pytest.param("-1", marks=pytest.mark.slow)])
def test_bad_ipc_cli(ipc, tmp_path):
    """The CLI smoke check of user errors: exit 2, one paragraph, no traceback (the rest run in-process)."""
    out = run_cli("debug=smoke", f"ipc={ipc}", f"paths.output_root={tmp_path}", f"hydra.run.dir={tmp_path}/r")
    _fails(out, "`ipc` is", "> 0")


def test_fractional_ipc_for_pixels_points_to_poster(smoke_cfg, tmp_path):
    with pytest.raises(ConfigError, match="Fractional IPC needs a poster"):
        run(smoke_cfg("ipc=0.5", "stages=[distill]"), run_dir=tmp_path / "r")


def test_unknown_stage(smoke_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"`stages\[0\]` is 'bufer'.*'buffer', 'distill', 'eval'.*mean 'buffer'"):
        run(smoke_cfg("stages=[bufer]"), run_dir=tmp_path / "r")


def test_bad_choice_values_name_key_and_allowed(smoke_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"`dataset.zca` is 'pca'.*'none', 'kornia', 'kip'"):
        run(smoke_cfg("dataset.zca=pca", "stages=[buffer]"), run_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"`buffer.amp` is 'fp8'.*'none', 'bf16'"):
        run(smoke_cfg("buffer.amp=fp8", "stages=[buffer]"), run_dir=tmp_path / "r2")


def test_compiled_steps_refuse_the_unrolled_mode(smoke_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"`algorithm.compile=true`.*grad_mode` tesla or exact, not unrolled"):
        run(smoke_cfg("method=mtt", "algorithm.compile=true", "stages=[buffer,distill]"), run_dir=tmp_path / "r")


@pytest.mark.slow
def test_missing_data_root_says_what_was_expected(tmp_path):
    out = run_cli("dataset=cifar10", "dataset.download=false", f"dataset.root={tmp_path}/nowhere",
                  "stages=[distill]", f"paths.output_root={tmp_path}", f"hydra.run.dir={tmp_path}/r")
    _fails(out, "cifar10", "train/<class>", "`dataset.download` is off", str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_missing_synset_for_eval(tmp_path):
    out = run_cli("debug=smoke", "stages=[eval]", f"eval.synset_path={tmp_path}/none.pt",
                  f"paths.output_root={tmp_path}", f"hydra.run.dir={tmp_path}/r")
    _fails(out, "none.pt", "does not exist", "stages=[distill]")


def test_buffer_missing_short_truncated_foreign(smoke_cfg, tmp_path):
    cfg = smoke_cfg("buffer.num_experts=1")
    store = open_store(cfg)
    with pytest.raises(BufferError_, match=r"incomplete: no expert.*stages=\[buffer\]"):
        store.load_trajectories(2, cfg)
    run(smoke_cfg("stages=[buffer]", "buffer.num_experts=1"), run_dir=tmp_path / "r")
    with pytest.raises(BufferError_, match=r"holds 4 epochs.*needs 9.*buffer.train_epochs=9"):
        store.load_trajectories(9, cfg)
    shard = store.dir / "expert_0.pt"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(BufferError_, match="unreadable or truncated"):
        store.load_trajectories(2, cfg)
    atomic.save_torch({"some": torch.zeros(3)}, shard)  # foreign
    with pytest.raises(BufferError_, match="not a tesla-podd expert file.*buffer.repair=true"):
        store.load_trajectories(2, cfg)


def test_buffer_folder_from_other_settings_is_refused(smoke_cfg, tmp_path):
    run(smoke_cfg("stages=[buffer]", "buffer.num_experts=1", f"buffer.dir={tmp_path}/buf"),
        run_dir=tmp_path / "r")
    with pytest.raises(BufferError_, match="different settings.*lr_teacher"):
        run(smoke_cfg("stages=[buffer]", "buffer.lr_teacher=0.5", f"buffer.dir={tmp_path}/buf"),
            run_dir=tmp_path / "r2")


@pytest.mark.slow
def test_full_error_shows_traceback(tmp_path):
    out = run_cli("debug=smoke", "ipc=0", f"paths.output_root={tmp_path}", f"hydra.run.dir={tmp_path}/r",
                  env_extra={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr
