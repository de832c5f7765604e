"""Plans reach the device once: the transfer helpers, AugParams.to and the expert-buffer preload (CPU checks)."""

from __future__ import annotations

import pytest
import torch

from tesla_podd import expert_store
from tesla_podd.algorithms.matching import StepPlan, plans_to_device
from tesla_podd.data.augment import DSA
from tesla_podd.errors import ConfigError
from tesla_podd.expert_store import ExpertTrajectories
from tesla_podd.transfer import to_device_all


def test_cpu_targets_copy_nothing_and_plans_keep_their_draws():
    a, b = torch.arange(5), torch.rand(3, dtype=torch.float64)
    out = to_device_all([a, b], torch.device("cpu"))
    assert out[0] is a and out[1] is b, "on the CPU the same tensors come back (bit-identical runs)"
    dsa = DSA(mode="all")
    g = torch.Generator().manual_seed(0)
    aug = dsa.sample(4, (8, 8), g)
    plans = plans_to_device([StepPlan(torch.tensor([3, 1, 2, 0]), aug)], torch.device("cpu"))
    assert plans[0].aug.ops == aug.ops
    assert all(torch.equal(x, y) for x, y in zip(plans[0].aug.tensors(), aug.tensors()))
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(dsa(x, g2), dsa.apply(x, aug)), "DSA.__call__ = sample, move once, apply"


def test_other_targets_keep_shapes_and_order():
    """Off CUDA (here the 'meta' device) tensors go over one by one, in order, with their shapes."""
    ts = [torch.arange(3), torch.rand(2, 2), torch.arange(4).view(2, 2), torch.rand(1)]
    out = to_device_all(ts, torch.device("meta"))
    assert [t.device.type for t in out] == ["meta"] * 4 and [t.shape for t in out] == [t.shape for t in ts]


def test_each_expert_file_is_read_once_and_preload_keeps_the_reached_epochs(monkeypatch, tmp_path):
    reads = []
    trajs = {f"e{i}": torch.arange(12, dtype=torch.float32).view(4, 3) + 100 * i for i in range(2)}

    def fake_read(path, mmap=True):
        reads.append(path.name)
        return {"trajectory": trajs[path.name]}

    monkeypatch.setattr(expert_store, "_read_expert", fake_read)
    experts = ExpertTrajectories([tmp_path / "e0", tmp_path / "e1"])
    for k in (0, 1, 0, 1, 1, 0):
        assert torch.equal(experts[k], trajs[f"e{k}"])
    assert reads == ["e0", "e1"], "a random expert per iteration no longer re-reads its file"
    assert experts.preload("auto", torch.device("cpu"), 2) is experts and experts[0].shape == (4, 3), \
        "auto on the CPU: the memory-mapped files"
    experts.preload("device", torch.device("cpu"), 2)
    assert experts[1].shape == (2, 3) and torch.equal(experts[1], trajs["e1"][:2]), "only the epochs reached"
    with pytest.raises(ConfigError, match="`buffer.preload`"):
        experts.preload("gpu", torch.device("cpu"), 2)


def test_lanes_are_cpu_only_and_forced_to_one_on_cuda_with_a_message(caplog):
    from tesla_podd.lanes import resolve_lanes

    assert resolve_lanes(3, torch.device("cpu"), "eval.lanes") == 3
    assert resolve_lanes("auto", torch.device("cuda", 0)) == 1
    with caplog.at_level("WARNING", logger="tesla_podd.lanes"):
        assert resolve_lanes(4, torch.device("cuda", 0), "algorithm.lanes") == 1
    assert "`algorithm.lanes=4`" in caplog.text and "CPU threads only" in caplog.text


def test_saved_files_hold_cpu_tensors_only(monkeypatch, tmp_path):
    """A CUDA run's checkpoint (optimiser state and all) loads on a CPU-only machine: save_torch moves every tensor
    to the CPU. 'meta' tensors stand in for CUDA ones; their `.cpu()` is faked to record the move."""
    from tesla_podd import atomic

    moved = []

    def fake_cpu(t):
        moved.append(tuple(t.shape))
        return torch.zeros(t.shape)

    monkeypatch.setattr(torch.Tensor, "cpu", fake_cpu)
    dev = torch.empty(2, 3, device="meta")
    state = {"optimizers": [{"state": {0: {"momentum_buffer": dev}}, "param_groups": [{"lr": 0.1}]}],
             "pair": (dev[:1], 7), "keep": torch.ones(1)}
    atomic.save_torch(state, tmp_path / "ck.pt")
    loaded = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert moved == [(2, 3), (1, 3)]
    assert loaded["optimizers"][0]["state"][0]["momentum_buffer"].device.type == "cpu"
    assert loaded["pair"][1] == 7 and torch.equal(loaded["keep"], torch.ones(1))
    assert state["optimizers"][0]["state"][0]["momentum_buffer"] is dev, "the caller's object is left as it was"


@pytest.mark.parametrize("mode", ["unrolled", "tesla", "exact"])
def test_matchers_read_no_tensor_values_per_step(mode):
    """No host read (a GPU sync on CUDA) inside the student steps: the count is the same for 2 and 6 steps."""
    from tesla_podd.algorithms.base import PositiveScalar
    from tesla_podd.algorithms.matching import MATCHERS, Student
    from tesla_podd.models import ConvNet, FlatModel
    from tesla_podd.synset.pixels import PixelSet
    from tesla_podd.transfer import HostReads

    def reads(steps: int) -> int:
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        flat = FlatModel(ConvNet(3, 2, 8, width=4, depth=1))
        theta0 = flat.flatten()
        synset = PixelSet(torch.randn(4, 3, 8, 8, generator=g), torch.tensor([0, 0, 1, 1]), 2)
        aug = DSA()
        plans = plans_to_device([StepPlan(torch.randperm(4, generator=g)[:2], aug.sample(2, (8, 8), g))
                                 for _ in range(steps)], torch.device("cpu"))
        with HostReads() as counter:
            MATCHERS[mode](Student(flat, synset, aug), plans, theta0, theta0 + 0.01, PositiveScalar(0.01))
        return counter.count

    assert reads(2) == reads(6) <= 2, "one read per iteration at most (the returned loss)"
