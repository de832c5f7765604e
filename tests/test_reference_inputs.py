"""Running on another code's inputs: `dataset.train_indices` (exactly its train images) and
`buffer.import_from` (its MTT/TESLA replay_buffer_<n>.pt expert files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tesla_podd.data.real import load_real
from tesla_podd.errors import ConfigError
from tesla_podd.expert_store import buffer_key, open_store
from tesla_podd.models import FlatModel, build_model
from tesla_podd.train import run


def _fake(**extra):
    node = dict(name="fake", root=None, download=False, num_classes=4, image_size=16, channels=3, mean=[0.5] * 3,
                std=[0.25] * 3, train_subset=None, subset_seed=0, val_size=0, val_seed=0, zca="none", zca_eps=0.1)
    return OmegaConf.create(node | extra)


def test_train_indices_select_exactly_those_images_in_file_order(tmp_path):
    full = load_real(_fake(), tmp_path)
    idx = np.array([5, 0, 63, 17], dtype=np.int32)  # int32 as the reference's file
    np.save(tmp_path / "idx.npy", idx)
    data = load_real(_fake(train_indices=str(tmp_path / "idx.npy")), tmp_path)
    assert torch.equal(data.train_x, full.train_x[[5, 0, 63, 17]])
    assert torch.equal(data.train_y, full.train_y[[5, 0, 63, 17]])
    assert torch.equal(data.test_x, full.test_x)


def test_train_indices_validation_comes_from_the_other_images(tmp_path):
    full = load_real(_fake(), tmp_path)
    np.save(tmp_path / "idx.npy", np.arange(0, 64, 2))  # the even images train
    data = load_real(_fake(train_indices=str(tmp_path / "idx.npy"), val_size=8), tmp_path)
    assert data.train_x.shape[0] == 32 and data.val_x.shape[0] == 8
    odd = full.train_x[1::2].flatten(1)
    for v in data.val_x.flatten(1):  # every validation image is one of the odd (left-out) images
        assert (odd == v).all(dim=1).any()


@pytest.mark.parametrize("content, message", [
    (None, "there is no such file"),
    (np.array([0, 64]), r"1 of its 2 indices are out of range \(e.g. 64\)"),
    (np.array([-1, 3]), r"out of range \(e.g. -1\)"),
    (np.array([3, 3]), "1 of its indices are repeated"),
    (np.array([0.5, 1.0]), "holds a float64 array"),
    (np.zeros((2, 2), dtype=np.int64), r"shape \(2, 2\)"),
])
def test_train_indices_bad_files_name_the_key(tmp_path, content, message):
    path = tmp_path / "idx.npy"
    if content is not None:
        np.save(path, content)
    with pytest.raises(ConfigError, match=r"`dataset.train_indices=.*idx.npy` must name a .npy file") as exc:
        load_real(_fake(train_indices=str(path)), tmp_path)
    assert exc.match(message)


def test_train_indices_exclude_train_subset(tmp_path):
    np.save(tmp_path / "idx.npy", np.arange(8))
    with pytest.raises(ConfigError, match="`dataset.train_indices` and `dataset.train_subset` both"):
        load_real(_fake(train_indices=str(tmp_path / "idx.npy"), train_subset=8), tmp_path)


def test_train_indices_content_keys_the_buffer(smoke_cfg, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, np.arange(8))
    np.save(b, np.arange(1, 9))
    keys = [buffer_key(smoke_cfg(f"dataset.train_indices={p}")) for p in (a, b)]
    assert keys[0]["train_indices"] != keys[1]["train_indices"]
    assert "train_indices" not in buffer_key(smoke_cfg())  # buffers without the option keep their names


def _reference_layout(cfg, n_traj: int, epochs: int, seed: int) -> list[list[list[torch.Tensor]]]:
    """Trajectories as MTT/TESLA buffer.py saves them: snapshot = [p for p in net.parameters()]."""
    torch.manual_seed(seed)
    net = build_model(cfg.model, 3, 4, 16)
    out = []
    for _ in range(n_traj):
        snaps = []
        for _ in range(epochs + 1):
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            snaps.append([p.detach().clone() for p in net.parameters()])
        out.append(snaps)
    return out


def test_import_replay_buffers_then_distill(smoke_cfg, tmp_path):
    """Two files of the reference layout (2 + 1 trajectories) become experts 0..2, flattened in
    named_parameters order, and a distillation of the same command line reads them."""
    src = tmp_path / "ref"
    src.mkdir()
    cfg = smoke_cfg()
    trajs = _reference_layout(cfg, 3, 4, seed=0)
    torch.save(trajs[:2], src / "replay_buffer_0.pt")
    torch.save(trajs[2:], src / "replay_buffer_1.pt")
    torch.save(trajs[:1], src / "replay_buffer_10.pt")  # numeric order: 0, 1, 10 (10 is a 4th trajectory)
    args = ("buffer.num_experts=3", f"buffer.import_from={src}", f"paths.buffer_root={tmp_path}/b")
    run(smoke_cfg("stages=[buffer]", *args), run_dir=tmp_path / "import")
    store = open_store(smoke_cfg(*args))
    assert sorted(store.expert_files()) == [0, 1, 2, 3]
    for k, traj in enumerate(trajs + trajs[:1]):
        got = torch.load(store.expert_path(k), weights_only=False)["trajectory"]
        want = torch.stack([torch.cat([p.reshape(-1) for p in snap]) for snap in traj])
        assert torch.equal(got, want)
    # the first conv weight of snapshot 2 of trajectory 1, read back through our model's names
    flat = FlatModel(build_model(cfg.model, 3, 4, 16))
    first = flat.unflatten(torch.load(store.expert_path(1), weights_only=False)["trajectory"][2])
    assert torch.equal(first[flat.names[0]], trajs[1][2][0])
    # an import never shares a folder with trained experts
    assert "imported" in store.key and open_store(smoke_cfg()).dir != store.dir
    run(smoke_cfg("stages=[distill]", "method=tesla", "algorithm.iterations=2", "algorithm.syn_steps=2",
                  "algorithm.expert_epochs=2", "algorithm.max_start_epoch=2", *args), run_dir=tmp_path / "distill")
    assert (tmp_path / "distill" / "synset.pt").exists()


def test_import_refuses_a_foreign_model(smoke_cfg, tmp_path):
    src = tmp_path / "ref"
    src.mkdir()
    torch.save(_reference_layout(smoke_cfg("model.width=4"), 1, 4, seed=0), src / "replay_buffer_0.pt")
    args = ("stages=[buffer]", "buffer.num_experts=1", f"buffer.import_from={src}", f"paths.buffer_root={tmp_path}/b")
    with pytest.raises(ConfigError, match=r"`buffer.import_from`: snapshot 0 of trajectory replay_buffer_0.pt\[0\] "
                                          r"has parameter shapes .* but `model` expects"):
        run(smoke_cfg(*args), run_dir=tmp_path / "r")
    assert not list((tmp_path / "b").rglob("expert_*.pt"))  # nothing half-written


def test_import_needs_as_many_trajectories_as_experts(smoke_cfg, tmp_path):
    src = tmp_path / "ref"
    src.mkdir()
    torch.save(_reference_layout(smoke_cfg(), 1, 4, seed=0), src / "replay_buffer_0.pt")
    args = ("stages=[buffer]", "buffer.num_experts=2", f"buffer.import_from={src}", f"paths.buffer_root={tmp_path}/b")
    with pytest.raises(ConfigError, match=r"holds 1 trajectories but `buffer.num_experts` is 2: set "
                                          r"`buffer.num_experts=1`"):
        run(smoke_cfg(*args), run_dir=tmp_path / "r")
    assert not list((tmp_path / "b").rglob("expert_*.pt"))
