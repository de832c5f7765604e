"""Curves without W&B: metrics.csv holds every logged value, runs draw PNG curves, plot_runs.py overlays runs,
and console log lines leave progress bars whole."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO, compose_cfg

from tesla_podd import curves, metrics_file, tracking
from tesla_podd.logs import TqdmHandler, bars_stay_whole
from tesla_podd.train import run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two TESLA smoke runs (seeds 0 and 1, one shared expert buffer), with every Tracker.log call recorded."""
    pytest.importorskip("matplotlib")
    tmp = tmp_path_factory.mktemp("curves")
    logged: dict[Path, list] = {}
    original = tracking.Tracker.log

    def spy(self, metrics, step=None):
        logged.setdefault(self.metrics.path.parent, []).append((dict(metrics), step))
        return original(self, metrics, step)

    tracking.Tracker.log = spy
    try:
        dirs = []
        for seed in (0, 1):
            cfg = compose_cfg("debug=smoke", "num_threads=1", "method=tesla", "distill.log_every=1",
                              f"seed={seed}", tmp=tmp)
            dirs.append(tmp / f"seed{seed}")
            run(cfg, run_dir=dirs[-1])
    finally:
        tracking.Tracker.log = original
    return dirs, logged


def test_metrics_csv_holds_every_logged_value(two_runs):
    dirs, logged = two_runs
    run_dir = dirs[0]
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "key", "value", "time"]
    expected = [(("" if step is None else str(step)), k, float(v))
                for metrics, step in logged[run_dir] for k, v in metrics.items()]
    got = [(r[0], r[1], float(r[2])) for r in rows[1:]]
    assert got == expected, "one row per logged value, in order, values exact"
    keys = {k for _, k, _ in got}
    assert {"distill/loss", "distill/syn_lr", "distill/quick_acc", "eval/acc_mean"} <= keys
    losses = metrics_file.read(run_dir / "metrics.csv")["distill/loss"]
    assert [s for s, _ in losses] == [1, 2, 3, 4], "distill.log_every=1 over the smoke run's 4 iterations"


def test_runs_draw_png_curves(two_runs):
    plots = two_runs[0][0] / "plots"
    names = {p.name for p in plots.glob("*.png")}
    assert {"distill_loss.png", "distill_syn_lr.png", "distill_quick_acc.png", "eval_curve.png"} <= names
    for p in plots.glob("*.png"):
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000


def test_plot_runs_overlays_two_runs(two_runs, tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import plot_runs
    finally:
        sys.path.remove(str(REPO / "scripts"))
    dirs, _ = two_runs
    for seed, d in enumerate(dirs):  # what a multirun job folder holds: its overrides
        (d / ".hydra").mkdir(exist_ok=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- method=tesla\n- seed={seed}\n")
    assert set(plot_runs.labels(plot_runs.find_runs([str(d.parent)]))) == {"seed=0", "seed=1"}, \
        "lines are named by the overrides that differ (the swept keys)"
    assert plot_runs.main([str(d) for d in dirs] + ["--out", str(tmp_path / "overlay")]) == 0
    names = {p.name for p in (tmp_path / "overlay").glob("*.png")}
    assert {"distill_loss.png", "distill_syn_lr.png", "distill_quick_acc.png", "eval_curve_convnet.png"} <= names
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in (tmp_path / "overlay").glob("*.png"))
    assert plot_runs.main([str(tmp_path / "nothing")]) == 2, "no run found: a clear error, exit code 2"


def test_metrics_reader_keeps_the_later_row_and_skips_a_cut_line(tmp_path):
    f = metrics_file.MetricsFile(tmp_path / "metrics.csv")
    f.append({"distill/loss": 3.0, "distill/table": "not a number", "distill/none": None}, step=1)
    f.append({"distill/loss": 2.0}, step=2)
    f.append({"distill/loss": 2.5}, step=2)  # a resumed run logs iteration 2 again
    f.append({"eval/acc_mean": 51.5})
    with open(f.path, "a") as out:
        out.write("3,distill/loss,1.")  # killed in the middle of a line
    assert metrics_file.read(f.path) == {"distill/loss": [(1, 3.0), (2, 2.5)], "eval/acc_mean": [(None, 51.5)]}


def test_without_matplotlib_no_curves_and_one_log_line(two_runs, monkeypatch, caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    monkeypatch.setattr(curves, "_warned", False)
    src = two_runs[0][0] / "metrics.csv"
    (tmp_path / "metrics.csv").write_bytes(src.read_bytes())
    cfg = compose_cfg("debug=smoke", tmp=tmp_path)
    with caplog.at_level(logging.INFO, logger="tesla_podd.curves"):
        assert curves.plot_stage("distill", cfg, tmp_path) == []
        assert curves.plot_stage("distill", cfg, tmp_path) == []
    assert not (tmp_path / "plots").exists()
    assert [r.message for r in caplog.records].count(
        "matplotlib is not installed: no PNG curves (pip install matplotlib); metrics.csv has the values") == 1


def test_console_log_lines_leave_the_bar_whole(monkeypatch):
    from tqdm import tqdm

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    logger = logging.getLogger("test_curves_bars")
    logger.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    console.setLevel(logging.INFO)
    logger.handlers = [console, logging.FileHandler(os.devnull)]
    logger.setLevel(logging.INFO)

    def segments():
        return [s for s in re.split(r"[\r\n]", err.getvalue()) if s.strip()]

    with bars_stay_whole(logger):
        assert isinstance(logger.handlers[0], TqdmHandler) and logger.handlers[0].level == logging.INFO
        assert type(logger.handlers[1]) is logging.FileHandler, "file handlers (train.log) are left alone"
        bar = tqdm(total=10, desc="distill", file=sys.stderr, mininterval=0)
        bar.update(3)
        logger.info("quick eval 42.00%")
        bar.update(3)
        bar.close()
    assert logger.handlers[0] is console, "the original handlers come back"
    assert "[test_curves_bars] quick eval 42.00%" in segments(), "the log line stands on its own line"
    assert not any("distill" in s and "quick eval" in s for s in segments()), "no bar and message on one line"

    err.seek(0)
    err.truncate()
    bar = tqdm(total=10, desc="distill", file=sys.stderr, mininterval=0)  # without it: the bar is broken
    bar.update(3)
    logger.info("quick eval 42.00%")
    bar.close()
    assert any("distill" in s and "quick eval" in s for s in segments())
    for h in logger.handlers:
        h.close()
    logger.handlers = []


def test_a_run_resumed_from_another_folder_starts_with_its_rows(tmp_path):
    from omegaconf import OmegaConf

    old = metrics_file.MetricsFile(tmp_path / "old" / "metrics.csv")
    old.append({"distill/loss": 3.0}, step=1)
    with open(old.path, "a") as out:
        out.write("2,distill/lo")  # the old run was killed mid-line

    def cfg(resume):
        return OmegaConf.create({"wandb": {"mode": "disabled"}, "seed": 0, "stages": ["distill"],
                                 "resume": resume, "resume_dir": str(tmp_path / "old")})

    tracker = tracking.Tracker.start(cfg(True), tmp_path / "new")
    tracker.log({"distill/loss": 2.0}, step=2)
    assert metrics_file.read(tmp_path / "new" / "metrics.csv") == {"distill/loss": [(1, 3.0), (2, 2.0)]}
    tracking.Tracker.start(cfg(False), tmp_path / "fresh").log({"distill/loss": 9.0}, step=1)
    assert metrics_file.read(tmp_path / "fresh" / "metrics.csv") == {"distill/loss": [(1, 9.0)]}


def test_a_killed_run_keeps_what_it_logged(smoke_cfg, tmp_path, monkeypatch):
    from conftest import run_killed_then_resumed

    run_dir = tmp_path / "run"
    overrides = ("method=tesla", "stages=[buffer,distill]", "distill.log_every=1", "distill.checkpoint_every=1")
    run_killed_then_resumed(smoke_cfg, overrides, run_dir, monkeypatch, at=2)
    with open(run_dir / "metrics.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["key"] == "distill/loss"]
    assert steps[:2] == [1, 2] and steps[2:] == [3, 4], "rows logged before the kill are kept, the rest appended"
    assert [s for s, _ in metrics_file.read(run_dir / "metrics.csv")["distill/loss"]] == [1, 2, 3, 4]
