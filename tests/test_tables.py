"""Paper tables: the table files, run_table.py's commands, and collect_results.py reading runs back (seeds
aggregated, the paper's rule beside the paper's figure, the README block rebuilt) from files alone."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tesla_podd import tables

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf" / "table").glob("*.yaml")))
def test_every_table_loads_and_names_existing_presets(name):
    table = tables.load_table(name)
    assert table.cells
    for cell in table.cells:
        assert cell.experiment is None or (REPO / "conf" / "experiment" / f"{cell.experiment}.yaml").is_file(), cell
        assert cell.paper_rule in tables.RULE_WORDS


def test_paper_rules_by_method():
    rule = {c.experiment: c.paper_rule for c in tables.load_table("tesla_table1").cells}
    assert rule["tesla_cifar10_ipc1"] == rule["mtt_cifar10_ipc1"] == "max_over_checkpoints"
    assert rule["random_cifar10_ipc1"] == "final"
    assert {c.paper_rule for c in tables.load_table("podd_table1").cells} == {"train_selected"}
    assert {c.paper_rule for c in tables.load_table("rat_bptt_cifar").cells} == {"max_over_checkpoints_and_lengths"}


def test_run_table_dry_run_prints_one_multirun_per_setting():
    out = subprocess.run([sys.executable, "scripts/run_table.py", "tesla_table2", "--dry-run", "paths.data_dir=/d"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6  # 3 datasets x (TESLA, Random): the architectures of a row share one run
    assert lines[0] == ("python -m tesla_podd.train -m experiment=tesla_cifar10_ipc10_crossarch seed=0 "
                        "hydra.sweep.dir=outputs/tables/tesla_table2/tesla_cifar10_ipc10_crossarch paths.data_dir=/d")
    launched = subprocess.run([sys.executable, "scripts/run_table.py", "cpu", "--dry-run", "--launcher", "joblib"],
                              cwd=REPO, capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert len(launched) == 10 and all(" -m hydra/launcher=joblib experiment=" in line for line in launched)
    bad = subprocess.run([sys.executable, "scripts/run_table.py", "no_such_table", "--dry-run"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Known tables: cpu" in bad.stderr


def _report(final, val=None, rules=None, accs=(1.0, 2.0)):
    block = {"mean": final, "std": 0.5, "accs": list(accs)}
    report = {"final": block, "best_val": None if val is None else {**block, "mean": val},
              "best_test": {**block, "mean": final + 1}, "architectures": {"convnet": {}}}
    report["architectures"]["convnet"] = {k: report[k] for k in ("final", "best_val", "best_test")}
    if rules:
        for k, v in rules.items():
            report[k] = {**block, "mean": v}
            report["architectures"]["convnet"][k] = report[k]
    return report


def _ship(folder: Path, name: str, experiment: str, overrides: list[str], report: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps(report))
    (folder / f"{name}.run.json").write_text(json.dumps({"experiment": experiment, "overrides": overrides,
                                                         "command": "python -m tesla_podd.train ...", "git": "abc"}))


def test_results_rebuild_the_readme_table_from_files_alone(tmp_path):
    """A fresh clone has only docs/results and the table files: the README block is rebuilt from them."""
    shipped, tdir = tmp_path / "results", tmp_path / "tables"
    shipped.mkdir()
    tdir.mkdir()
    (tdir / "mini.yaml").write_text(
        "title: mini   # t\nrow_label: run   # r\nlayout: list   # l\nreadme: true   # r\ncells:\n"
        "  - {row: TESLA, column: ours, experiment: tesla_x, paper: '48.5 ± 0.8', reference: '39.0'}\n"
        "  - {row: RaT, column: ours, experiment: rat_bptt_x, paper: '53.2'}\n"
        "  - {row: PoDD, column: ours, experiment: podd_x, paper: '47.1'}\n")
    # two seeds of the TESLA cell (one written by the new evaluator, one legacy), and a variant that must not match
    _ship(shipped, "t0", "tesla_x", ["num_threads=1"], _report(30.0, 29.0, {"max_over_checkpoints": 34.0,
                                                                           "val_selected_checkpoint": 33.0}))
    _ship(shipped, "t1", "tesla_x", ["seed=1", "paths.data_dir=/x"], _report(32.0, 31.0))
    _ship(shipped, "t_var", "tesla_x", ["algorithm.iterations=400"], _report(10.0, 10.0))
    # a run folder (outputs/) of the RaT cell
    run = tmp_path / "outputs" / "r"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=rat_bptt_x\n- seed=0\n")
    (run / "eval.json").write_text(json.dumps(_report(40.0, 41.0, {"max_over_checkpoints_and_lengths": 42.5})))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:begin -->\nold table\n<!-- results:end -->\noutro\n")
    md = tmp_path / "docs" / "results_table.md"
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import collect_results
    finally:
        sys.path.pop(0)
    rc = collect_results.main([str(shipped), str(tmp_path / "outputs"), "--table", "mini", "--tables-dir", str(tdir),
                               "--md", str(md), "--readme", str(readme)])
    assert rc == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:begin -->\n| run |") and text.endswith("<!-- results:end -->\noutro\n")
    assert "old table" not in text and md.read_text().strip() in text
    rows = {r["row"]: r for r in csv.DictReader(md.with_suffix(".csv").open())}
    # TESLA: the paper's rule over two seeds: 34.0 (measured) and 32.0 (legacy: final set only) -> 33.0 ± 1.0, n=2
    assert float(rows["TESLA"]["ours_mean"]) == pytest.approx(33.0) and float(rows["TESLA"]["ours_std"]) == 1.0
    assert rows["TESLA"]["n"] == "2" and rows["TESLA"]["rule"] == "max_over_checkpoints"
    assert "| TESLA | 31.00 ± 1.00 (n=2) | 32.00 ± 1.00 (n=2)ᶠ | max over checkpoints" in text
    assert float(rows["RaT"]["ours_mean"]) == 42.5 and rows["RaT"]["n"] == "1"
    assert rows["PoDD"]["n"] == "0" and "| PoDD | – | – | selected on real train accuracy (PoDD) | not run |" in text
    # no markers: the README is left alone
    readme.write_text("no markers\n")
    assert collect_results.main([str(shipped), "--table", "mini", "--tables-dir", str(tdir), "--md", str(md),
                                 "--readme", str(readme)]) == 0
    assert readme.read_text() == "no markers\n"


def test_listing_makes_a_sweeps_keys_columns(tmp_path):
    _ship(tmp_path, "a", "exp", ["ipc=0.3"], _report(20.0))
    _ship(tmp_path, "b", "exp", ["ipc=0.4"], _report(25.0))
    _ship(tmp_path, "c", "exp", ["ipc=0.4", "seed=1"], _report(27.0))
    text = tables.listing(tables.read_records([tmp_path]))
    assert "| experiment | ipc | seeds | final |" in text
    assert "| exp | 0.3 | 0 | 20.00 ± 0.50 |" in text and "| exp | 0.4 | 0,1 | 26.00 ± 1.00 (n=2) |" in text


def test_the_shipped_cpu_table_reads_back_from_the_repository():
    results = tables.collect(tables.load_table("cpu"), tables.read_records([REPO / "docs" / "results"]))
    by_row = {(r.cell.experiment, tuple(r.cell.overrides)): r for r in results}
    assert all(r.runs for r in results), [r.cell.row for r in results if not r.runs]
    tesla = by_row[("tesla_cifar10_ipc1_cpu", ("algorithm.synset_grad_scale=1.0",))]  # the images' full gradient
    assert len(tesla.runs) == 3 and tesla.values["final"]["n"] == 3  # seeds 0, 1, 2; buffer variants excluded
    assert tesla.values["final"]["mean"] == pytest.approx((35.508 + 36.67 + 37.38) / 3, abs=0.01)
    halved = by_row[("tesla_cifar10_ipc1_cpu", ())]  # the preset as it is: seeds 0, 1, 2 (cycle variant excluded)
    assert halved.values["final"]["n"] == 3
    assert halved.values["final"]["mean"] == pytest.approx((37.634 + 36.724 + 37.59) / 3, abs=0.01)
    ramp = by_row[("tesla_cifar10_ipc1_cpu", ("algorithm.synset_grad_warmup=10", "distill.select_every=0"))]
    assert ramp.values["final"]["n"] == 5  # seeds 0-4 with the image step ramped over 10 iterations
    assert ramp.values["final"]["mean"] == pytest.approx((39.17 + 36.45 + 37.52 + 39.06 + 38.53) / 5, abs=0.01)
    rat = by_row[("rat_bptt_cifar10_ipc1_cpu", ("dataset.val_mode=within_train",))]  # selection over meta-steps 350/700
    assert rat.values["max_over_checkpoints_and_lengths"]["mean"] == pytest.approx(34.50, abs=0.01)


def _finished_run(tmp_path, overrides_yaml: str, config_yaml: str):
    """A run folder as Hydra leaves it (overrides and composed config), and an empty results folder."""
    run, out = tmp_path / "run", tmp_path / "results"
    (run / ".hydra").mkdir(parents=True)
    out.mkdir()
    (run / ".hydra" / "overrides.yaml").write_text(overrides_yaml)
    (run / ".hydra" / "config.yaml").write_text(config_yaml)
    return run, out


def _ship_result_module():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import ship_result
    finally:
        sys.path.pop(0)
    return ship_result


def test_ship_result_carries_config_command_sha_and_a_small_set(tmp_path):
    run, out = _finished_run(tmp_path, "- experiment=tesla_x\n- seed=3\n- paths.data_dir=/d\n- hydra.run.dir=/tmp/x\n",
                             "ipc: 1\nseed: 3\npaths: {data_dir: /d}\n")
    (run / "meta.json").write_text(json.dumps({"git": "0123abc", "argv": ["x"]}))
    (run / "synset.pt").write_bytes(b"0" * 2048)
    (run / "eval.json").write_text(json.dumps({**_report(30.0), "synset_path": str(run / "synset.pt")}))
    ship_result = _ship_result_module()
    side = ship_result.ship(run, "t", out, max_synset_kb=4)
    assert side["git"] == "0123abc" and side["config"] == {"ipc": 1, "seed": 3}
    assert side["command"] == "python -m tesla_podd.train experiment=tesla_x seed=3 paths.data_dir=/path/to/data"
    assert (out / "t.synset.pt").read_bytes() == b"0" * 2048 and side["synset"] == "t.synset.pt"
    assert side["reevaluate"].endswith("experiment=tesla_x seed=3 'stages=[eval]' "
                                       "eval.synset_path=docs/results/t.synset.pt")
    assert json.loads((out / "t.json").read_text())["synset_path"] == "t.synset.pt"
    (record,) = tables.read_records([out])
    assert record.experiment == "tesla_x" and record.seed == "3" and record.report["final"]["mean"] == 30.0
    assert ship_result.ship(run, "big", out, max_synset_kb=1)["synset"] is None  # too large: not shipped


def test_ship_result_ships_a_large_set_as_its_images_and_drops_restated_overrides(tmp_path):
    """A set too large to ship whole (a ZCA set carries its whitening matrix) travels as its images in the MTT
    layout, which the eval stage reads back; an override restating the preset's own value is not part of the cell."""
    from tesla_podd.data.preprocess import Preprocessor
    from tesla_podd.synset.file import SynsetFile

    run, out = _finished_run(tmp_path, "- experiment=tesla_cifar10_ipc1_cpu\n- seed=1\n"
                             "- algorithm.expert_order=uniform\n- algorithm.expert_order=cycle\n", "ipc: 1\n")
    syn = SynsetFile(images=torch.randn(10, 3, 8, 8), labels=torch.arange(10), lr=0.01,
                     preprocess=Preprocessor([0.5] * 3, [0.25] * 3), class_names=list("abcdefghij"), dataset="fake")
    syn.save(run / "synset.pt")
    (run / "eval.json").write_text(json.dumps({**_report(30.0), "synset_path": str(run / "synset.pt")}))
    ship_result = _ship_result_module()
    side = ship_result.ship(run, "t", out, max_synset_kb=0)
    assert side["overrides"] == ["seed=1", "algorithm.expert_order=cycle"]
    assert side["synset"] == "t.set" and side["synset_format"] == "mtt"
    assert torch.equal(torch.load(out / "t.set" / "images.pt"), syn.images)
    assert side["reevaluate"].endswith("eval.synset_path=docs/results/t.set eval.synset_format=mtt")
