"""Parallel, exact buffer builds: one file per expert, concurrent writers, selection, repair, NaN guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from tesla_podd.errors import BufferError_, ConfigError
from tesla_podd.expert_store import BufferStore, open_store, select_experts
from tesla_podd.train import run

SMALL = ("buffer.num_experts=4", "buffer.train_epochs=3")


def _buffer_cli(tmp_path, name, *extra):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    args = ["debug=smoke", "num_threads=1", "stages=[buffer]", *SMALL, *extra,
            f"paths.output_root={tmp_path}/o", f"hydra.run.dir={tmp_path}/{name}"]
    return subprocess.Popen([sys.executable, "-m", "tesla_podd.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _built(tmp_path, name) -> int:
    return json.loads((tmp_path / name / "results.json").read_text())["buffer/built"]


def _files(store) -> dict[int, torch.Tensor]:
    return {k: torch.load(p, weights_only=False)["trajectory"] for k, p in store.expert_files().items()}


def test_selection_splits_ranges_and_workers():
    assert select_experts(10, None, 0, 1) == list(range(10))
    assert select_experts(10, [2, 6], 0, 1) == [2, 3, 4, 5]
    assert select_experts(10, None, 1, 3) == [1, 4, 7]
    assert sorted(select_experts(10, [3, 9], 0, 2) + select_experts(10, [3, 9], 1, 2)) == list(range(3, 9))
    with pytest.raises(ConfigError, match=r"`buffer.experts=\[5, 11\]`.*0 <= start < stop <= buffer.num_experts"):
        select_experts(10, [5, 11], 0, 1)
    with pytest.raises(ConfigError, match="`buffer.worker=2` with `buffer.num_workers=2`"):
        select_experts(10, None, 2, 2)


def _store_under(root) -> BufferStore:
    """The one buffer a CLI run made under `root` (found on disk: robust to config edits between runs)."""
    (manifest,) = root.glob("*/*/manifest.json")
    return BufferStore(manifest.parent, json.loads(manifest.read_text())["key"])


def test_workers_split_a_build_that_equals_one_job(smoke_cfg, tmp_path):
    """In-process: worker 0 then worker 1 of 2 give exactly the files a single job gives."""
    for w in (0, 1):
        run(smoke_cfg("stages=[buffer]", *SMALL, "buffer.num_workers=2", f"buffer.worker={w}",
                      f"paths.buffer_root={tmp_path}/split"), run_dir=tmp_path / f"w{w}")
        assert json.loads((tmp_path / f"w{w}" / "results.json").read_text())["buffer/built"] == 2
    run(smoke_cfg("stages=[buffer]", *SMALL, f"paths.buffer_root={tmp_path}/one"), run_dir=tmp_path / "one")
    a, b = _files(_store_under(tmp_path / "split")), _files(_store_under(tmp_path / "one"))
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_concurrent_jobs_equal_one_job_bit_exact(tmp_path, smoke_cfg):
    """Two CLI jobs at the same time, as a multirun launcher starts them: the buffer equals a one-job build."""
    procs = {f"w{w}": _buffer_cli(tmp_path, f"w{w}", "buffer.num_workers=2", f"buffer.worker={w}") for w in (0, 1)}
    for name, p in procs.items():
        assert p.wait(timeout=300) == 0, f"{name}: {p.stderr.read()[-2000:]}"
    assert sum(_built(tmp_path, n) for n in procs) == 4, "each expert trained by exactly one job"
    parallel = _store_under(tmp_path / "o" / "buffers")
    run(smoke_cfg("stages=[buffer]", *SMALL), run_dir=tmp_path / "serial")
    serial = open_store(smoke_cfg(*SMALL))
    a, b = _files(parallel), _files(serial)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for k in a:
        assert torch.equal(a[k], b[k]), f"expert {k} differs"
    m = parallel.read_manifest()
    assert m["num_experts"] == 4 and sorted(m["experts"]) == ["0", "1", "2", "3"]
    assert not list(parallel.dir.glob("partial_*")) and not list(parallel.dir.glob(".*.tmp"))


@pytest.mark.slow
def test_two_processes_racing_on_one_expert_leave_one_valid_file(tmp_path):
    procs = {n: _buffer_cli(tmp_path, n, "buffer.experts=[0,1]") for n in ("a", "b")}
    for name, p in procs.items():
        assert p.wait(timeout=300) == 0, f"{name}: {p.stderr.read()[-2000:]}"
    assert _built(tmp_path, "a") + _built(tmp_path, "b") == 1
    store = _store_under(tmp_path / "o" / "buffers")
    assert sorted(p.name for p in store.dir.iterdir() if p.is_file()) == ["expert_0.pt", "manifest.json"]
    assert store.validate_expert(0)["trajectory"].shape[0] == 4
    assert store.read_manifest()["num_experts"] == 1


def test_distill_names_missing_experts_and_the_command(smoke_cfg, tmp_path):
    run(smoke_cfg("stages=[buffer]", *SMALL, "buffer.experts=[0,1]"), run_dir=tmp_path / "r")
    cfg = smoke_cfg(*SMALL)
    with pytest.raises(BufferError_, match=r"experts 1-3 of 4 are missing.*stages=\[buffer\] buffer.experts=\[1,4\]"):
        open_store(cfg).load_trajectories(3, cfg)
    trajs = open_store(cfg).load_trajectories(3, cfg, num_experts=1)
    assert len(trajs) == 1 and trajs[0].shape[0] == 4 and trajs[-1] is trajs[0]
    # a killed writer's temp files go when the next writer of the same file holds its lock
    orphans = [open_store(cfg).dir / f".{n}.x1y2.tmp" for n in ("expert_1.pt", "partial_expert_1.pt", "manifest.json")]
    for p in orphans:
        p.write_bytes(b"half a file")
    run(smoke_cfg("stages=[buffer]", *SMALL, "buffer.experts=[1,2]"), run_dir=tmp_path / "r2")
    assert not any(p.exists() for p in orphans)
    assert len(open_store(cfg).load_trajectories(3, cfg, num_experts=2)) == 2


def test_inconsistent_or_corrupt_buffer_is_repaired_by_the_named_command(smoke_cfg, tmp_path):
    cfg = smoke_cfg("stages=[buffer]", "buffer.num_experts=2")
    run(cfg, run_dir=tmp_path / "r")
    store = open_store(cfg)
    before = _files(store)
    data = (store.dir / "expert_0.pt").read_bytes()
    (store.dir / "expert_0.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BufferError_, match=r"unreadable or truncated.*buffer.repair=true"):
        store.load_trajectories(4, num_experts=1)
    (store.dir / "expert_1.pt").unlink()  # the manifest still lists it
    with pytest.raises(BufferError_, match=r"inconsistent.*lists experts 1 that are not on disk.*buffer.repair=true"):
        store.load_trajectories(4, num_experts=1)
    run(smoke_cfg("stages=[buffer]", "buffer.num_experts=2", "buffer.repair=true"), run_dir=tmp_path / "r2")
    assert (store.dir / "quarantine" / "expert_0.pt").exists()
    after = _files(store)
    assert all(torch.equal(before[k], after[k]) for k in (0, 1)), "rebuilt experts equal the lost ones"
    assert store.read_manifest()["num_experts"] == 2


def test_diverged_expert_is_not_saved_and_names_lr_teacher(smoke_cfg, tmp_path):
    cfg = smoke_cfg("stages=[buffer]", "buffer.num_experts=1", "buffer.lr_teacher=1e12")
    with pytest.raises(BufferError_, match=r"Expert 0 diverged.*`buffer.lr_teacher=1e\+12`.*Lower `buffer.lr_teacher`"):
        run(cfg, run_dir=tmp_path / "r")
    assert not open_store(cfg).expert_files()


def test_keep_epochs_and_float16_store_a_prefix_of_the_full_trajectory(smoke_cfg, tmp_path):
    run(smoke_cfg("stages=[buffer]", "buffer.num_experts=1"), run_dir=tmp_path / "full")
    full = open_store(smoke_cfg("buffer.num_experts=1")).load_trajectories(4, num_experts=1)[0]
    cfg = smoke_cfg("stages=[buffer]", "buffer.num_experts=1", "buffer.keep_epochs=2", "buffer.dtype=float16",
                    "algorithm.max_start_epoch=1", "algorithm.expert_epochs=1")
    run(cfg, run_dir=tmp_path / "short")
    store = open_store(cfg)
    short = store.load_trajectories(2, num_experts=1)[0]
    assert short.dtype == torch.float16 and short.shape == (3, full.shape[1])
    assert torch.equal(short, full[:3].half()), "stopping early stores exactly the first epochs"
    assert (store.dir / "expert_0.pt").stat().st_size < full.numel() * 4 * 3 / 4 * 0.6
    with pytest.raises(BufferError_, match=r"holds 2 epochs for expert 0.*needs 3.*buffer.keep_epochs"):
        store.load_trajectories(3, num_experts=1)


def test_old_sharded_buffer_is_refused_then_converted_by_repair(smoke_cfg, tmp_path):
    cfg = smoke_cfg("buffer.num_experts=2")
    store = open_store(cfg)
    store.dir.mkdir(parents=True)
    shard = torch.randn(2, 5, 7)
    torch.save({"format": "tesla-podd/buffer-shard", "param_count": 7, "train_epochs": 4, "trajectories": shard},
               store.dir / "replay_buffer_0.pt")
    (store.dir / "manifest.json").write_text(json.dumps(
        {"format": "tesla-podd/buffer", "version": 1, "key": store.key, "param_count": 7, "train_epochs": 4,
         "num_experts": 2, "shards": [{"file": "replay_buffer_0.pt", "experts": 2}], "expert_test_acc": [50.0, 60.0]}))
    with pytest.raises(BufferError_, match=r"old one-writer format.*buffer.repair=true"):
        store.load_trajectories(4, cfg)
    m = store.repair()
    assert m["num_experts"] == 2 and m["experts"]["1"]["test_acc"] == 60.0
    trajs = store.load_trajectories(4, cfg)
    assert torch.equal(trajs[0], shard[0]) and torch.equal(trajs[1], shard[1])
    assert (store.dir / "quarantine" / "replay_buffer_0.pt").exists()
