"""Selection over distillation checkpoints: the papers' rules on hand-made curves, and a smoke run that
evaluates checkpoints, survives a kill, and writes the records, the rules and synset_best.pt."""

from __future__ import annotations

import json

import pytest

from tesla_podd.evaluation.selection import aggregate, over_checkpoints
from tesla_podd.stages import selection as stage


def _record(iteration, tests, vals=None, trains=None):
    """A checkpoint record from per-length mean accuracies (two networks at mean +- 1)."""
    curves = [[], []]
    for j, t in enumerate(tests):
        for k, d in enumerate((-1.0, 1.0)):
            point = {"length": 100 * (j + 1), "test": t + d, "val": None if vals is None else vals[j] + d}
            if trains is not None:
                point["train"] = trains[j] + d
            curves[k].append(point)
    return {"iteration": iteration, "curve": aggregate(curves)["curve"]}


def test_rules_pick_their_own_points():
    records = [
        _record(100, tests=[40.0, 45.0, 44.0], vals=[39.0, 41.0, 43.0], trains=[60.0, 70.0, 65.0]),
        _record(200, tests=[47.0, 46.0, 43.0], vals=[42.0, 40.0, 41.0], trains=[71.0, 69.0, 68.0]),
        _record(300, tests=[41.0, 42.0, 45.5], vals=[38.0, 39.0, 40.0], trains=[50.0, 50.0, 50.0]),
    ]
    rules = over_checkpoints(records)
    # MTT/TESLA: best mean test at the final length -> checkpoint 300 (45.5 > 44 > 43)
    assert (rules["max_over_checkpoints"]["iteration"], rules["max_over_checkpoints"]["length"]) == (300, 300)
    assert rules["max_over_checkpoints"]["mean"] == pytest.approx(45.5)
    assert rules["max_over_checkpoints"]["std"] == pytest.approx(1.0)
    assert rules["max_over_checkpoints"]["accs"] == pytest.approx([44.5, 46.5])
    # RaT-BPTT: over checkpoints x lengths -> 47 at (200, 100)
    best = rules["max_over_checkpoints_and_lengths"]
    assert (best["iteration"], best["length"], best["mean"]) == (200, 100, pytest.approx(47.0))
    # PoDD: highest train accuracy 71 at (200, 100); its test is 47
    tr = rules["train_selected"]
    assert (tr["iteration"], tr["length"], tr["mean"], tr["train_mean"]) == (200, 100, pytest.approx(47.0),
                                                                              pytest.approx(71.0))
    # honest: best validation 43 at (100, 300); its test is 44, not the best test
    vs = rules["val_selected_checkpoint"]
    assert (vs["iteration"], vs["length"], vs["mean"], vs["val_mean"]) == (100, 300, pytest.approx(44.0),
                                                                            pytest.approx(43.0))


def test_ties_go_to_the_earliest_checkpoint_and_missing_measurements_give_none():
    records = [_record(100, tests=[50.0, 50.0]), _record(200, tests=[50.0, 50.0])]
    rules = over_checkpoints(records)
    assert rules["max_over_checkpoints"]["iteration"] == 100
    assert (rules["max_over_checkpoints_and_lengths"]["iteration"],
            rules["max_over_checkpoints_and_lengths"]["length"]) == (100, 100)
    assert rules["train_selected"] is None and rules["val_selected_checkpoint"] is None
    assert all(v is None for v in over_checkpoints([]).values())


def test_schedule():
    assert stage.schedule(100, 200) == [100, 200]
    assert stage.schedule(100, 250) == [100, 200, 250]
    assert stage.schedule(0, 200) == [200] and stage.schedule(None, 5) == [5]


SMOKE = ("method=rat_bptt", "stages=[distill,eval]", "distill.eval_every=0", "distill.image_every=0",
         "distill.checkpoint_every=1", "algorithm.iterations=3", "distill.select_every=1", "eval.num_models=2",
         "eval.train_measure=20")


def test_smoke_run_selects_over_checkpoints_and_survives_a_kill(smoke_cfg, tmp_path, monkeypatch):
    from tesla_podd.stages import distill as distill_stage
    from tesla_podd.stages import evaluate as evaluate_stage
    from tesla_podd.train import run

    trained = []
    real_run_units = evaluate_stage.run_units

    def counting(units, *args, **kwargs):
        trained.extend(u.file_name for u in units)
        return real_run_units(units, *args, **kwargs)

    monkeypatch.setattr(evaluate_stage, "run_units", counting)
    run_dir = tmp_path / "r"
    checked = distill_stage.check_values

    def killed_after_iteration_2(*args, **kwargs):
        if args[3] == 2:
            raise KeyboardInterrupt
        return checked(*args, **kwargs)

    with monkeypatch.context() as m:  # killed after iteration 2 (checkpoints 1 and 2 evaluated), then resumed
        m.setattr(distill_stage, "check_values", killed_after_iteration_2)
        with pytest.raises(KeyboardInterrupt):
            run(smoke_cfg(*SMOKE), run_dir=run_dir)
    assert len(trained) == 4
    run(smoke_cfg(*SMOKE, "resume=true"), run_dir=run_dir)
    report = json.loads((run_dir / "eval.json").read_text())
    assert [r["iteration"] for r in report["checkpoints"]] == [1, 2, 3]
    for rec in report["checkpoints"]:
        assert len(rec["models"]) == 2 and all("train" in p for p in rec["curve"])
    for rule in ("max_over_checkpoints", "max_over_checkpoints_and_lengths", "train_selected",
                 "val_selected_checkpoint"):
        assert report[rule] is not None and report[rule]["iteration"] in (1, 2, 3), rule
    tests = [r["curve"][-1]["test"]["mean"] for r in report["checkpoints"]]
    assert report["max_over_checkpoints"]["mean"] == pytest.approx(max(tests))
    assert report["checkpoints"][-1]["final"]["mean"] == pytest.approx(report["final"]["mean"])
    assert (run_dir / "synset_best.pt").is_file()
    # the checkpoint sets are pruned once eval.json is written; their records stay and read back alone
    assert not list((run_dir / "selection").glob("it_*/synset.pt"))
    assert [r["synset"] for r in report["checkpoints"]] == [None, None, "synset.pt"]
    assert report["synset_best"]["iteration"] == report["val_selected_checkpoint"]["iteration"]
    # every network of every checkpoint trained exactly once (2 per checkpoint; the resume redid nothing)
    assert len(trained) == 6, trained
    trained.clear()  # re-evaluating the run (stages=[eval]) trains nothing: every record is on disk
    run(smoke_cfg(*SMOKE, "stages=[eval]"), run_dir=run_dir)
    again = json.loads((run_dir / "eval.json").read_text())
    assert trained == [] and [r["iteration"] for r in again["checkpoints"]] == [1, 2, 3]
    assert again["max_over_checkpoints"] == report["max_over_checkpoints"]
    assert again["synset_best"] == report["synset_best"]


def test_a_run_killed_inside_a_checkpoint_evaluation_finishes_only_the_missing_network(smoke_cfg, tmp_path,
                                                                                        monkeypatch):
    from tesla_podd.stages import evaluate as evaluate_stage
    from tesla_podd.train import run

    writes, killed = [], []
    real_write = evaluate_stage.write_unit

    def write(folder, unit, plan, result):
        if "it_000002" in str(folder) and unit.index == 1 and not killed:  # the second network of checkpoint 2
            killed.append(unit)
            raise KeyboardInterrupt
        writes.append(f"{folder.parent.name}/{unit.file_name}")
        return real_write(folder, unit, plan, result)

    monkeypatch.setattr(evaluate_stage, "write_unit", write)
    run_dir = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run(smoke_cfg(*SMOKE), run_dir=run_dir)
    run(smoke_cfg(*SMOKE, "resume=true"), run_dir=run_dir)
    assert writes == ["it_000001/convnet_0.json", "it_000001/convnet_1.json", "it_000002/convnet_0.json",
                      "it_000002/convnet_1.json", "r/convnet_0.json", "r/convnet_1.json"]
    assert [r["iteration"] for r in json.loads((run_dir / "eval.json").read_text())["checkpoints"]] == [1, 2, 3]


def test_val_mode_within_train_keeps_the_train_set_whole_and_shares_the_whole_train_buffers(smoke_cfg):
    import torch

    from tesla_podd.data.real import RealData
    from tesla_podd.data.split import split_validation
    from tesla_podd.errors import ConfigError
    from tesla_podd.expert_store import buffer_key

    y = torch.arange(4).repeat(5)
    data = RealData(name="d", train_x=torch.arange(20).view(20, 1, 1, 1).to(torch.uint8), train_y=y,
                    test_x=torch.zeros(1, 1, 1, 1, dtype=torch.uint8), test_y=torch.zeros(1, dtype=torch.long),
                    class_names=list("abcd"), mean=(0.5,), std=(0.5,))
    held = split_validation(data, 8, seed=0)
    within = split_validation(data, 8, seed=0, mode="within_train")
    assert held.train_x.shape[0] == 12 and within.train_x.shape[0] == 20
    assert torch.equal(held.val_x, within.val_x)  # the same validation images either way
    assert set(within.val_x.flatten().tolist()) <= set(within.train_x.flatten().tolist())
    assert not set(held.val_x.flatten().tolist()) & set(held.train_x.flatten().tolist())
    with pytest.raises(ConfigError, match="dataset.val_mode"):
        split_validation(data, 8, mode="carve")
    whole = buffer_key(smoke_cfg("method=tesla", "dataset.val_size=0"))
    assert buffer_key(smoke_cfg("method=tesla", "dataset.val_mode=within_train")) == whole
    assert buffer_key(smoke_cfg("method=tesla")) != whole
