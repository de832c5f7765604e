"""Resume, divergence and file safety of the distill stage (issue 10 defects; each failed before)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from tesla_podd import atomic
from tesla_podd.data.preprocess import Preprocessor
from tesla_podd.errors import ConfigError, DataError
from tesla_podd.stages import checkpoint
from tesla_podd.stages.divergence import DistillDiverged, check_values
from tesla_podd.synset.file import SynsetFile
from tesla_podd.train import run

FAST = ("method=rat_bptt", "stages=[distill]", "distill.eval_every=0", "distill.image_every=0",
        "distill.checkpoint_every=1", "algorithm.iterations=2")


@pytest.fixture
def distilled(smoke_cfg, tmp_path):
    """A RaT-BPTT smoke run (no buffer needed) that saved checkpoints/last.pt at iteration 2."""
    run_dir = tmp_path / "r"
    run(smoke_cfg(*FAST), run_dir=run_dir)
    return run_dir


def _iteration(run_dir) -> int:
    return int(torch.load(checkpoint.checkpoint_path(run_dir), weights_only=False)["iteration"])


class _Set:  # the synset/algorithm part of a checkpoint, for the optimiser test
    def __init__(self, t):
        self.t = t

    def state_dict(self):
        return {"t": self.t.detach().clone()}

    def load_state_dict(self, s):
        with torch.no_grad():
            self.t.copy_(s["t"])


def test_resume_applies_the_new_lr_and_momentum_but_keeps_the_state():
    """Before: the saved optimiser state overwrote lr/momentum given at resume (the divergence hint was void)."""
    t = torch.ones(3, requires_grad=True)
    old = torch.optim.SGD([t], lr=1.0, momentum=0.5)
    t.grad = torch.ones(3)
    old.step()
    state = {"synset": {"t": t.detach().clone()}, "algorithm": {"t": t.detach().clone()}, "iteration": 7,
             "optimizers": [old.state_dict()]}
    t2 = torch.zeros(3, requires_grad=True)
    new = torch.optim.SGD([t2], lr=0.1, momentum=0.9)
    assert checkpoint.apply(state, _Set(t2), _Set(t2), [new]) == 7
    assert new.param_groups[0]["lr"] == 0.1 and new.param_groups[0]["momentum"] == 0.9
    torch.testing.assert_close(new.state[t2]["momentum_buffer"], torch.ones(3))  # the moments carry over


def test_resume_with_lower_lr_img_continues_and_uses_it(distilled, smoke_cfg):
    run(smoke_cfg(*FAST, "algorithm.iterations=3", "algorithm.lr_img=0.005", "resume=true"), run_dir=distilled)
    assert _iteration(distilled) == 3
    saved = torch.load(checkpoint.checkpoint_path(distilled), weights_only=False)
    assert saved["optimizers"][0]["param_groups"][0]["lr"] == 0.005


@pytest.mark.parametrize("override,key", [("seed=1", "seed"), ("ipc=2", "ipc"), ("method=rat_bptt", None)])
def test_checkpoint_of_another_run_is_refused(distilled, smoke_cfg, override, key):
    if key is None:  # another algorithm: a poster/PoDD run resuming a pixel RaT-BPTT checkpoint
        override, key = "method=podd", "synset"
    with pytest.raises(ConfigError, match=rf"belongs to another run \(.*{key}: checkpoint"):
        run(smoke_cfg(*FAST, override, "algorithm.iterations=3", "resume=true"), run_dir=distilled)


def test_truncated_or_foreign_checkpoint_is_refused(distilled, smoke_cfg):
    ckpt = checkpoint.checkpoint_path(distilled)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="unreadable or truncated"):
        run(smoke_cfg(*FAST, "algorithm.iterations=3", "resume=true"), run_dir=distilled)
    torch.save({"iteration": 1}, ckpt)
    with pytest.raises(ConfigError, match="not a tesla-podd distill checkpoint"):
        run(smoke_cfg(*FAST, "algorithm.iterations=3", "resume=auto"), run_dir=distilled)


def test_resume_auto_starts_fresh_without_checkpoint_and_true_needs_one(smoke_cfg, tmp_path, caplog):
    """The README's resume command works when the kill came before the first checkpoint."""
    with pytest.raises(ConfigError, match="no checkpoint.*resume=auto"):
        run(smoke_cfg(*FAST, "resume=true"), run_dir=tmp_path / "a")
    run(smoke_cfg(*FAST, "resume=auto"), run_dir=tmp_path / "a")
    assert _iteration(tmp_path / "a") == 2
    caplog.set_level("INFO", logger="tesla_podd")
    run(smoke_cfg(*FAST, "algorithm.iterations=3", "resume=auto"), run_dir=tmp_path / "a")
    assert "resumed from" in caplog.text and "at iteration 2" in caplog.text
    assert _iteration(tmp_path / "a") == 3


def test_divergence_names_a_good_existing_checkpoint_and_saves_nothing_after(distilled, smoke_cfg):
    """Images blown up by a huge lr are reported (not saved); the checkpoint named is the last good one."""
    with pytest.raises(DistillDiverged) as info:
        run(smoke_cfg(*FAST, "algorithm.iterations=4", "algorithm.lr_img=1e30", "resume=true"), run_dir=distilled)
    msg = str(info.value)
    ckpt = checkpoint.checkpoint_path(distilled)
    assert "synthetic images grew" in msg and "`algorithm.lr_img`" in msg and str(ckpt) in msg
    assert _iteration(distilled) == 2, "nothing saved after the step that exploded"
    state = torch.load(ckpt, weights_only=False)
    assert all(torch.isfinite(v).all() and v.abs().max() < 100 for v in state["synset"].values())


def _roles(images=None, labels=None, lr=None):
    roles = {"images": [torch.zeros(2) if images is None else images]}
    if labels is not None:
        roles["labels"] = [labels]
    if lr is not None:
        roles["lr"] = [lr]
    return roles


@pytest.mark.parametrize("roles,lr,needle,key", [
    (_roles(labels=torch.tensor([float("nan")])), 0.01, "labels became NaN/Inf", "algorithm.lr_label"),
    (_roles(images=torch.tensor([float("inf")])), 0.01, "images became NaN/Inf", "algorithm.lr_img"),
    (_roles(lr=torch.tensor(100.0)), float("inf"), "lr blew up", "algorithm.lr_lr"),
    (_roles(lr=torch.tensor(-40.0)), 1e-15, "vanished", "algorithm.lr_lr"),
    (_roles(images=torch.tensor([1e6])), 0.01, "images grew", "algorithm.lr_img"),
])
def test_divergence_message_names_the_key(roles, lr, needle, key, tmp_path):
    with pytest.raises(DistillDiverged, match=needle) as info:
        check_values(roles, lr, 1000.0, 5, tmp_path / "checkpoints" / "last.pt", tmp_path)
    assert f"`{key}`" in str(info.value) and "No checkpoint was saved" in str(info.value)
    if needle == "lr blew up":
        assert "vanished" not in str(info.value)


def test_non_finite_synthetic_set_is_never_saved_nor_evaluated(tmp_path):
    pre = Preprocessor((0.5,) * 3, (0.25,) * 3)
    good = SynsetFile(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), 0.01, pre, ["a", "b"], "fake")
    path = good.save(tmp_path / "synset.pt")
    for field, value in [("images", torch.full((2, 3, 4, 4), float("nan"))), ("lr", float("inf")),
                         ("labels", torch.tensor([[float("nan"), 1.0], [0.0, 1.0]]))]:
        bad = SynsetFile(**{**good.__dict__, field: value})
        with pytest.raises(DataError, match=f"non-finite {field}"):
            bad.save(tmp_path / "bad.pt")
        d = torch.load(path, weights_only=False)
        d[field] = value
        torch.save(d, tmp_path / "forged.pt")
        with pytest.raises(DataError, match=f"non-finite {field}.*cannot be evaluated"):
            SynsetFile.load(tmp_path / "forged.pt")


def test_outputs_follow_the_umask_not_0600(tmp_path):
    old = os.umask(0o002)
    try:
        p = atomic.write_json({"a": 1}, tmp_path / "eval.json")
        assert p.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
    p = atomic.save_torch({"a": 1}, tmp_path / "x.pt")
    assert p.stat().st_mode & 0o777 == 0o666 & ~old


def test_orphaned_temp_files_are_cleaned_but_live_ones_kept(tmp_path):
    orphan, live, other = tmp_path / ".synset.pt.abc123.tmp", tmp_path / ".last.pt.xyz.tmp", tmp_path / "keep.tmp"
    for p in (orphan, live, other):
        p.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    os.utime(other, (old, old))
    assert atomic.clean_orphans(tmp_path) == [orphan]
    assert not orphan.exists() and live.exists() and other.exists()
