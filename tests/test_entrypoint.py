"""The installed entry points as a user runs them: from any directory, configs found, help that lists every
config group (launchers included), user presets from `--config-dir`. (`make wheel-check` runs the same from a
built wheel in a fresh venv.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF

from tesla_podd import conf_dir

SCRIPT = Path(sys.executable).parent / "tesla-podd"
# Groups picked by other groups or holding site settings: not options a user picks on the command line.
INTERNAL_GROUPS = {"hydra", "debug_algorithm", "debug_synset", "local.example"}


def _run(cmd, cwd, *args, timeout=120):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _groups_section(help_text: str) -> str:
    return help_text.split("== Config groups")[1].split("== Frequent keys")[0]


@pytest.fixture(scope="module")
def console_help(tmp_path_factory):
    if not SCRIPT.exists():
        pytest.skip(f"no console script at {SCRIPT} (install the package: make install)")
    out = _run([str(SCRIPT)], tmp_path_factory.mktemp("elsewhere"), "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_console_script_help_lists_every_group_and_the_launchers(console_help):
    section = _groups_section(console_help)
    described = {line.split()[0] for line in section.splitlines() if line.startswith("  ") and line[2] != " "}
    groups = {p.name for p in CONF.iterdir() if p.is_dir()} - INTERNAL_GROUPS
    assert groups <= described, f"groups without a help line: {sorted(groups - described)}"
    for launcher in ("hydra/launcher", "basic", "local", "slurm", "submitit_local"):
        assert launcher in section, launcher
    assert "README" in console_help and "--config-dir" in console_help


def test_module_entrypoint_runs_from_another_directory(tmp_path):
    out = _run([sys.executable, "-m", "tesla_podd.train"], tmp_path, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "== Config groups" in out.stdout


def test_user_presets_from_config_dir(tmp_path):
    """A preset of one's own, next to the packaged ones: `--config-dir <folder>` with <folder>/experiment/*.yaml."""
    presets = tmp_path / "my-presets" / "experiment"
    presets.mkdir(parents=True)
    (presets / "my_run.yaml").write_text("# @package _global_\ndefaults:\n  - override /method: random\nipc: 3\n")
    out = _run([sys.executable, "-m", "tesla_podd.train"], tmp_path, "--config-dir", "my-presets",
               "experiment=my_run", "debug=smoke", "--cfg", "job")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ipc: 3\n" in out.stdout and "name: random" in out.stdout


def test_packaged_configs_win_over_the_checkout(tmp_path, monkeypatch):
    """A wheel install has tesla_podd/conf; a checkout has only ../conf; neither is a clear error."""
    pkg = tmp_path / "site" / "tesla_podd"
    (pkg / "conf").mkdir(parents=True)
    monkeypatch.setattr(conf_dir, "_PACKAGE", pkg)
    with pytest.raises(FileNotFoundError, match="found no configs.*pip install"):
        conf_dir.config_dir()
    (tmp_path / "site" / "conf").mkdir()
    (tmp_path / "site" / "conf" / "train.yaml").write_text("{}\n")
    assert conf_dir.config_dir() == tmp_path / "site" / "conf"
    (pkg / "conf" / "train.yaml").write_text("{}\n")
    assert conf_dir.config_dir() == pkg / "conf"
