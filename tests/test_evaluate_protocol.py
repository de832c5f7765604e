"""Evaluation protocols pinned to the references (FIDELITY.md F7, F13), model selection, the validation split."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tesla_podd.data.real import RealData
from tesla_podd.data.split import split_validation
from tesla_podd.errors import ConfigError
from tesla_podd.evaluation import trainer as trainer_mod
from tesla_podd.evaluation.protocol import resolve_protocol, schedule_lengths
from tesla_podd.evaluation.selection import aggregate, per_model
from tesla_podd.evaluation.trainer import SingleLearner, train_networks


def _ecfg(**kw):
    base = dict(length_unit="epoch", epochs=1000, steps=3000, eval_at=[], schedule="mtt", batch_size=256,
                optimizer="sgd", lr=0.01, fallback_lr=0.01, momentum=0.9, weight_decay=5e-4, augment=False)
    return OmegaConf.create({**base, **kw})


def _no_aug(x, g):
    return x


# --------------------------------------------------------------------------- SGD protocol (MTT evaluate_synset)
def test_mtt_schedule_is_epoch_plus_one_with_decay_after_the_half():
    # MTT: for ep in range(Epoch+1) ... if ep == Epoch//2+1: lr *= 0.1, new SGD  (Epoch = 1000)
    assert schedule_lengths("mtt", 1000) == (1001, 502, True)
    assert schedule_lengths("half", 1000) == (1000, 500, False)
    assert schedule_lengths("constant", 300) == (300, None, False)
    p = resolve_protocol(_ecfg(lr="learned"), 0.02, num_items=10, augment_name="dsa")
    assert (p.length, p.decay_after, p.recreate_optimizer, p.batch_size, p.lr) == (1001, 502, True, 10, 0.02)
    assert p.eval_at == (1001,)


def test_default_eval_config_is_mtt_protocol(smoke_cfg):
    e = smoke_cfg("method=tesla", "eval.epochs=1000").eval
    assert (e.schedule, e.optimizer, e.momentum, e.weight_decay, e.batch_size, e.length_unit) == \
        ("mtt", "sgd", 0.9, 0.0005, 256, "epoch")
    assert e.augment and e.lr == "learned"


def _mtt_reference_loop(model, x, y, epochs, lr, batch, gen):
    """MTT utils.py evaluate_synset, written out: Epoch+1 passes, x0.1 and a NEW optimiser after pass Epoch//2+1."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    for ep in range(epochs + 1):
        perm = torch.randperm(x.shape[0], generator=gen)
        for idx in perm.split(batch):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if ep == epochs // 2 + 1:
            lr *= 0.1
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    return model


def test_sgd_protocol_equals_mtt_loop_bit_for_bit():
    torch.manual_seed(0)
    x, y = torch.randn(10, 6), torch.arange(10) % 3
    ref = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ours = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ours.load_state_dict(ref.state_dict())
    _mtt_reference_loop(ref, x, y, epochs=9, lr=0.1, batch=4, gen=torch.Generator().manual_seed(3))
    proto = resolve_protocol(_ecfg(epochs=9, batch_size=4, lr=0.1), None, 10, "none")
    train_networks(SingleLearner(ours), x, y, proto, _no_aug, [torch.Generator().manual_seed(3)],
                   {}, torch.device("cpu"))
    for a, b in zip(ref.parameters(), ours.parameters()):
        assert torch.equal(a, b)


def test_decay_recreates_the_optimiser_and_batches_are_256(monkeypatch):
    made, sizes = [], []
    real_make = trainer_mod.make_optimizer

    def spy(proto, params, lr):
        made.append(lr)
        return real_make(proto, params, lr)

    monkeypatch.setattr(trainer_mod, "make_optimizer", spy)
    model = nn.Linear(4, 2)
    model.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    x, y = torch.randn(600, 4), torch.arange(600) % 2
    proto = resolve_protocol(_ecfg(epochs=4), None, 600, "none")  # 5 passes, decay after pass 4
    train_networks(SingleLearner(model), x, y, proto, _no_aug, [torch.Generator().manual_seed(0)], {},
                   torch.device("cpu"))
    assert made == pytest.approx([0.01, 0.001])
    assert sizes == [256, 256, 88] * 5


# --------------------------------------------------------------------------- Adam protocol (RaT-BPTT / PoDD test())
def test_adam_protocol_steps_on_inner_batches_and_measures_at_reference_lengths():
    sizes = []
    model = nn.Linear(4, 2)
    model.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]) if m.training else None)
    x, y = torch.randn(96, 4), torch.arange(96) % 2
    proto = resolve_protocol(_ecfg(length_unit="step", steps=40, eval_at=[3, 6, 10, 20], schedule="constant",
                                   optimizer="adam", batch_size=16, weight_decay=0.0), None, 96, "none")
    assert (proto.length, proto.eval_at, proto.decay_after) == (40, (3, 6, 10, 20, 40), None)
    test = (torch.randn(8, 4), torch.arange(8) % 2)
    curves = train_networks(SingleLearner(model), x, y, proto, _no_aug, [torch.Generator().manual_seed(0)],
                            {"test": test, "val": None}, torch.device("cpu"))
    assert sizes == [16] * 40, "one inner-sized batch per Adam step, no epochs"
    assert [p["length"] for p in curves[0]] == [3, 6, 10, 20, 40] and curves[0][0]["val"] is None


def test_adam_preset_composes_reference_protocol(smoke_cfg):
    e = smoke_cfg("method=rat_bptt", "eval.steps=3000", "eval.eval_at=[300,600,1000]", "algorithm.batch_syn=100").eval
    assert (e.optimizer, e.length_unit, e.steps, e.schedule, e.batch_size, list(e.eval_at)) == \
        ("adam", "step", 3000, "constant", 100, [300, 600, 1000])
    assert e.num_models == 2  # smoke; eval/adam.yaml itself says 8


def test_eval_at_beyond_length_is_dropped_and_bad_values_rejected():
    assert resolve_protocol(_ecfg(epochs=9, eval_at=[5, 300]), None, 4, "none").eval_at == (5, 10)
    with pytest.raises(ConfigError, match="eval.eval_at"):
        resolve_protocol(_ecfg(eval_at=[0]), None, 4, "none")


# --------------------------------------------------------------------------- selection
def test_per_model_and_aggregate_selection_rules():
    a = [{"length": 1, "test": 40.0, "val": 50.0}, {"length": 2, "test": 45.0, "val": 48.0},
         {"length": 3, "test": 42.0, "val": 49.0}]
    b = [{"length": 1, "test": 30.0, "val": 30.0}, {"length": 2, "test": 39.0, "val": 41.0},
         {"length": 3, "test": 41.0, "val": 40.0}]
    assert per_model(a) == {"final": 42.0, "best_test": 45.0, "best_test_length": 2, "best_val": 40.0,
                            "best_val_length": 1}
    agg = aggregate([a, b])
    assert agg["final"]["accs"] == [42.0, 41.0] and agg["final"]["length"] == 3
    assert agg["best_test"]["length"] == 2 and agg["best_test"]["mean"] == pytest.approx(42.0)  # mean curve max
    assert agg["best_val"]["length"] == 2 and agg["best_val"]["val_mean"] == pytest.approx(44.5)
    assert agg["best_val"]["std"] == pytest.approx(3.0)
    no_val = [[{**p, "val": None} for p in a]]
    assert aggregate(no_val)["best_val"] is None and per_model(no_val[0])["best_val"] is None


# --------------------------------------------------------------------------- validation split
def _real(n_per_class=10, classes=3):
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.arange(y.numel(), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone()
    return RealData("toy", x, y, x[:3], y[:3], [f"c{i}" for i in range(classes)], (0.5,) * 3, (0.25,) * 3)


def test_validation_split_is_class_balanced_disjoint_and_seeded():
    data = _real()
    s = split_validation(data, 6, seed=0)
    assert torch.bincount(s.val_y).tolist() == [2, 2, 2] and torch.bincount(s.train_y).tolist() == [8, 8, 8]
    ids_train, ids_val = set(s.train_x[:, 0, 0, 0].tolist()), set(s.val_x[:, 0, 0, 0].tolist())
    assert not ids_train & ids_val and len(ids_train | ids_val) == 30
    assert torch.equal(split_validation(data, 6, seed=0).val_x, s.val_x)
    assert not torch.equal(split_validation(data, 6, seed=1).val_x, s.val_x)
    assert split_validation(data, 0.1, seed=0).val_x.shape[0] == 3  # a fraction of the train set
    assert split_validation(data, 0).val_x is None
    with pytest.raises(ConfigError, match="dataset.val_size"):
        split_validation(data, 33)


def test_pipeline_data_excludes_validation(smoke_cfg, tmp_path):
    from tesla_podd.data.real import load_real

    cfg = smoke_cfg()
    real = load_real(cfg.dataset, tmp_path)
    assert real.val_x.shape[0] == int(cfg.dataset.val_size) == 8 and real.train_x.shape[0] == 64 - 8
    train = {bytes(t.numpy()) for t in real.train_x}
    assert not any(bytes(v.numpy()) in train for v in real.val_x)


@pytest.mark.parametrize("preset,batch,steps,eval_at", [
    ("rat_bptt_cifar10_ipc10", 100, 3000, [300, 600, 1000]),
    ("rat_bptt_cifar100_ipc10", 100, 3000, [300, 600, 1000]),
    ("rat_bptt_tinyimagenet_ipc10", 50, 3000, [300, 600, 1000]),
    ("podd_cifar10_ipc0.9", 96, 2000, [300, 600, 1000]),
    ("podd_cifar100_ipc0.9", 50, 2000, [300, 600, 1000]),
    ("podd_tinyimagenet_ipc0.9", 30, 2000, [100, 300, 600, 1000]),
])
def test_adam_presets_train_inner_sized_batches_for_reference_steps(tmp_path, preset, batch, steps, eval_at):
    from conftest import compose_cfg

    e = compose_cfg(f"experiment={preset}", tmp=tmp_path).eval
    assert (e.optimizer, e.length_unit, e.schedule, e.num_models) == ("adam", "step", "constant", 8)
    assert (e.batch_size, e.steps, list(e.eval_at)) == (batch, steps, eval_at)
