"""DD-Ranking's HLR / IOR / LRS against hand-computed values, its baselines, and the eval=ddranking stage."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tesla_podd.evaluation.ddranking import hlr, ior, lrs, pixel_budget, random_subset, scores
from tesla_podd.train import run


def test_formulas_on_hand_computed_cases():
    assert hlr(84.8, 60.0) == pytest.approx(24.8) and ior(60.0, 45.0) == pytest.approx(15.0)
    # alpha = 0.5 * 0.15 - 0.5 * 0.248 = -0.049; LRS = (e^-0.049 - e^-1) / (e - e^-1)
    #       = (0.952181 - 0.367879) / (2.718282 - 0.367879) = 0.584302 / 2.350402 = 0.248596
    assert lrs(0.248, 0.15) == pytest.approx(0.248596, abs=1e-6)
    assert lrs(0.0, 1.0, weight=1.0) == pytest.approx(1.0)  # alpha = 1: the top of the scale
    assert lrs(1.0, 0.0, weight=0.0) == pytest.approx(0.0)  # alpha = -1: the bottom
    assert lrs(0.0, 0.0) == pytest.approx((1 - math.exp(-1)) / (math.e - math.exp(-1)))  # 0.268941


def test_scores_pair_runs_and_aggregate_like_ddranking():
    acc = {"real_hard": [80.0], "syn_hard": [50.0, 54.0], "syn_any": [60.0, 64.0], "random_any": [40.0, 40.0]}
    s = scores(acc, weight=0.5)
    assert s["hlr"]["runs"] == [30.0, 26.0] and s["ior"]["runs"] == [20.0, 24.0]
    # run 1: alpha = 0.5 * 0.20 - 0.5 * 0.30 = -0.05 -> (e^-0.05 - e^-1)/(e - e^-1) = 0.248192 -> 24.8192
    # run 2: alpha = 0.5 * 0.24 - 0.5 * 0.26 = -0.01 -> 0.264708 -> 26.4708
    assert s["lrs"]["runs"] == pytest.approx([24.8192, 26.4708], abs=1e-4)
    assert s["hlr"]["mean"] == 28.0 and s["hlr"]["std"] == 2.0  # population std, as np.std
    assert s["lrs"]["mean"] == pytest.approx((24.8192 + 26.4708) / 2, abs=1e-4)


def test_budget_counts_poster_pixels_and_random_draw_is_balanced():
    assert pixel_budget(12, {}, (16, 16)) == 12
    assert pixel_budget(15, {"poster_hw": [24, 40]}, (16, 16)) == 3  # 960 / 256 = 3.75 images' worth of pixels
    y = torch.arange(4).repeat_interleave(10)
    idx = random_subset(y, 4, 10, seed=0)  # 2 per class + 2 classes with one more
    counts = torch.bincount(y[idx], minlength=4).tolist()
    assert sum(counts) == 10 and sorted(counts) == [2, 2, 3, 3] and len(set(idx.tolist())) == 10
    assert torch.equal(idx, random_subset(y, 4, 10, seed=0))


@pytest.mark.parametrize("labels", ["hard", "teacher"])
def test_ddranking_stage_writes_scores(smoke_cfg, tmp_path, labels):
    method = "method=random" if labels == "hard" else "method=tesla"
    over = () if labels == "hard" else ("synset.labels=teacher", "algorithm.iterations=1")
    run(smoke_cfg(method, *over, "stages=[buffer,distill]" if labels != "hard" else "stages=[distill]"),
        run_dir=tmp_path / "d")
    run(smoke_cfg(method, "stages=[eval]", "eval=ddranking", f"eval.synset_path={tmp_path / 'd' / 'synset.pt'}",
                  "eval.epochs=2", "eval.eval_at=[]", "eval.ddranking.real_epochs=1"), run_dir=tmp_path / "e")
    r = json.loads((tmp_path / "e" / "eval.json").read_text())["ddranking"]
    acc = r["accuracies"]
    assert len(acc["syn_hard"]) == len(acc["syn_any"]) == len(acc["random_any"]) == 2 and len(acc["real_hard"]) == 1
    assert r["hlr"]["runs"][0] == pytest.approx(acc["real_hard"][0] - acc["syn_hard"][0])
    assert r["ior"]["runs"][1] == pytest.approx(acc["syn_any"][1] - acc["random_any"][1])
    assert 0 <= r["lrs"]["mean"] <= 100 and r["syn_labels"] == ("hard" if labels == "hard" else "soft")
    if labels == "hard":
        assert acc["syn_hard"] == acc["syn_any"] and r["random_labels"] == "hard"
    else:
        assert r["random_labels"] == "teacher soft labels"
