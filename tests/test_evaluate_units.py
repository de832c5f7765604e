"""eval.json format, parallel evaluation units merged = serial, cross-architecture tables, quick-eval caching."""

from __future__ import annotations

import json

import pytest

from tesla_podd.errors import DataError
from tesla_podd.train import run


@pytest.fixture
def saved_set(smoke_cfg, tmp_path):
    run(smoke_cfg("method=random", "stages=[distill]"), run_dir=tmp_path / "distill")
    return tmp_path / "distill" / "synset.pt"


def _eval(smoke_cfg, tmp_path, saved_set, name, *overrides):
    cfg = smoke_cfg("method=random", "stages=[eval]", f"eval.synset_path={saved_set}", "eval.epochs=6",
                    "eval.eval_at=[2,4]", *overrides)
    run(cfg, run_dir=tmp_path / name)


def test_eval_json_reports_final_best_val_best_test_and_curve(smoke_cfg, tmp_path, saved_set):
    _eval(smoke_cfg, tmp_path, saved_set, "a")
    r = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert r["accs"] == r["final"]["accs"] and r["mean"] == r["final"]["mean"] and r["num_models"] == 2
    assert [p["length"] for p in r["curve"]] == [2, 4, 7] and r["protocol"]["length"] == 7
    assert r["best_test"]["mean"] >= r["final"]["mean"] and r["best_test"]["mean"] >= r["best_val"]["mean"]
    assert r["validation"] == {"size": 8} and r["curve"][0]["val"] is not None
    assert set(r["models"][0]) >= {"index", "final", "best_val", "best_test", "curve"}
    assert list(r["architectures"]) == ["convnet"] and "test-selected" in r["selection"]["best_test"]
    assert sorted(p.name for p in (tmp_path / "a" / "eval_units").iterdir()) == ["convnet_0.json", "convnet_1.json"]


def test_parallel_units_merge_to_the_serial_eval_json(smoke_cfg, tmp_path, saved_set):
    common = ("eval.models=[convnet,convnet_ln]", "eval.batched=false")
    _eval(smoke_cfg, tmp_path, saved_set, "serial", *common)
    shared = tmp_path / "shared"
    for i, units in enumerate(("[2,4]", "[0,2]")):  # two jobs, own run dirs, one output folder
        _eval(smoke_cfg, tmp_path, saved_set, f"job{i}", *common, f"eval.units={units}", f"eval.output_dir={shared}")
        assert (shared / "eval.json").exists() == (i == 1), "eval.json appears once every unit is on disk"
    serial = json.loads((tmp_path / "serial" / "eval.json").read_text())
    merged = json.loads((shared / "eval.json").read_text())
    assert merged == serial
    assert list(merged["architectures"]) == ["convnet", "convnet_ln"]
    assert merged["architectures"]["convnet_ln"]["num_models"] == 2


def test_merge_names_missing_units(smoke_cfg, tmp_path, saved_set):
    shared = tmp_path / "shared"
    _eval(smoke_cfg, tmp_path, saved_set, "job", "eval.units=[0,1]", f"eval.output_dir={shared}")
    with pytest.raises(DataError, match=r"1 of 2 evaluation units are missing.*convnet_1\.json"):
        _eval(smoke_cfg, tmp_path, saved_set, "merge", "eval.merge=true", f"eval.output_dir={shared}")


def test_stacked_and_sequential_runs_agree(smoke_cfg, tmp_path, saved_set):
    _eval(smoke_cfg, tmp_path, saved_set, "seq", "eval.batched=false")
    _eval(smoke_cfg, tmp_path, saved_set, "stk", "eval.batched=true")
    seq = json.loads((tmp_path / "seq" / "eval.json").read_text())
    stk = json.loads((tmp_path / "stk" / "eval.json").read_text())
    assert [m["trained"] for m in stk["models"]] == ["stacked", "stacked"]
    assert [m["trained"] for m in seq["models"]] == ["alone", "alone"]
    assert [p["length"] for p in stk["curve"]] == [p["length"] for p in seq["curve"]]
    for a, b in zip(seq["models"], stk["models"]):
        assert abs(a["final"] - b["final"]) <= 100.0 / 32 + 1e-9  # at most one of 32 test images flips


def test_networks_side_by_side_give_the_results_of_one_after_another(smoke_cfg, tmp_path, saved_set):
    """eval.lanes: networks trained on CPU threads side by side, one intra-op thread each, equal to training
    them one after another at one thread, bit for bit (same kernels, own generators, no global RNG)."""
    import torch

    _eval(smoke_cfg, tmp_path, saved_set, "one", "eval.batched=false", "eval.lanes=1", "eval.num_models=3")
    _eval(smoke_cfg, tmp_path, saved_set, "two", "eval.batched=false", "eval.lanes=2", "eval.num_models=3")
    one, two = (json.loads((tmp_path / n / "eval.json").read_text()) for n in ("one", "two"))
    assert [m["trained"] for m in one["models"]] == ["alone"] * 3
    assert [m["trained"] for m in two["models"]] == ["side by side"] * 3
    assert [m["curve"] for m in two["models"]] == [m["curve"] for m in one["models"]]
    assert two["final"] == one["final"] and two["best_val"] == one["best_val"]
    assert torch.get_num_threads() == 1, "the caller's thread count is restored"


def test_cross_arch_table_and_batchnorm_fallback(smoke_cfg, tmp_path, saved_set):
    _eval(smoke_cfg, tmp_path, saved_set, "x", "eval.models=[convnet,convnet_bn]", "eval.batched=true",
          "eval.num_models=2")
    r = json.loads((tmp_path / "x" / "eval.json").read_text())
    t = r["architectures"]
    assert list(t) == ["convnet", "convnet_bn"] and "batchnorm" in t["convnet_bn"]["model"]
    assert [m["trained"] for m in t["convnet_bn"]["models"]] == ["alone", "alone"]
    assert t["convnet_bn"]["protocol"]["schedule"] == "mtt" and "ConvNetBN" in t["convnet_bn"]["reference"]
    assert r["mean"] == t["convnet"]["final"]["mean"], "top-level keys: the first architecture"


def test_quick_evaluations_reuse_the_preprocessed_test_set(smoke_cfg, tmp_path, saved_set, monkeypatch):
    from tesla_podd.stages.context import RunContext
    from tesla_podd.stages.evaluate import evaluate_synset
    from tesla_podd.synset.file import SynsetFile
    from tesla_podd.tracking import Tracker

    cfg = smoke_cfg("method=random")
    ctx = RunContext(cfg=cfg, run_dir=tmp_path, device=__import__("torch").device("cpu"), tracker=Tracker(None))
    syn = SynsetFile.load(saved_set)
    calls = []
    original = type(syn.preprocess).__call__
    monkeypatch.setattr(type(syn.preprocess), "__call__", lambda self, x: calls.append(x.shape[0]) or original(self, x))
    first = evaluate_synset(syn, cfg, ctx, 2, 3, stream="quick-1", progress=False)
    evaluate_synset(syn, cfg, ctx, 2, 3, stream="quick-2", progress=False)
    assert calls == [32], "the test set is preprocessed once per run, not once per quick evaluation"
    assert len(first) == 2 and all(0 <= a <= 100 for a in first)


def test_eval_at_start_measures_the_initial_set_once_before_the_first_step(smoke_cfg, tmp_path, monkeypatch):
    import torch

    from tesla_podd.stages import distill as distill_stage

    events, seen = [], []
    evaluate, check = distill_stage.evaluate_synset, distill_stage.check_values

    def record_eval(syn, cfg, ctx, *args, stream, **kwargs):
        events.append(stream)
        seen.append(syn.images.clone())
        return evaluate(syn, cfg, ctx, *args, stream=stream, **kwargs)

    monkeypatch.setattr(distill_stage, "evaluate_synset", record_eval)
    monkeypatch.setattr(distill_stage, "check_values", lambda *a, **k: events.append(f"step-{a[3]}") or check(*a, **k))
    overrides = ("method=rat_bptt", "stages=[distill]", "algorithm.iterations=3", "distill.eval_every=2",
                 "distill.eval_models=1", "distill.eval_epochs=2", "distill.image_every=0")
    run(smoke_cfg(*overrides, "distill.eval_at_start=true"), run_dir=tmp_path / "a")
    assert events == ["quick-eval-0", "step-0", "step-1", "quick-eval-2", "step-2"]
    run(smoke_cfg(*overrides, "algorithm.iterations=1", "algorithm.lr_img=1e-30"), run_dir=tmp_path / "b")
    initial = torch.load(tmp_path / "b" / "synset.pt", weights_only=False)
    assert torch.allclose(seen[0], initial["images"]), "iteration 0 is the set as initialised"


def test_a_job_killed_mid_evaluation_keeps_the_units_it_finished(smoke_cfg, tmp_path, saved_set, monkeypatch):
    import tesla_podd.evaluation.runner as runner

    class Killed(Exception):
        pass

    real, calls = runner.train_networks, []

    def dies_on_the_second_network(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train_networks", dies_on_the_second_network)
    common = ("eval.batched=false", "eval.lanes=1")
    with pytest.raises(Killed):
        _eval(smoke_cfg, tmp_path, saved_set, "job", *common)
    assert [p.name for p in (tmp_path / "job" / "eval_units").iterdir()] == ["convnet_0.json"]
    calls.clear()
    _eval(smoke_cfg, tmp_path, saved_set, "job", *common)  # the rerun trains only the unit that was lost
    assert len(calls) == 1
    monkeypatch.setattr(runner, "train_networks", real)
    _eval(smoke_cfg, tmp_path, saved_set, "whole", *common)
    job, whole = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("job", "whole"))
    assert job["accs"] == whole["accs"]
