"""scripts/gpu_check.py cannot rot: its dry run walks every step on the CPU at tiny sizes, reruns of chosen steps
merge into the report, the deadline skips what it cannot fit, and a machine without CUDA stops at the gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402


def check_cli(out, *args, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_STEPS"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(out), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_dry_run_walks_every_step_and_a_rerun_merges(tmp_path, monkeypatch):
    done = check_cli(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["steps"]) == list(gpu_check.STEPS)
    bad = {k: (s["status"], s.get("summary")) for k, s in report["steps"].items() if s["status"] != "pass"}
    assert not bad, bad
    assert report["meta"]["dry_run"] is True
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# GPU check") and "DRY RUN" in md
    for name in gpu_check.STEPS:
        assert f"| {name} | pass |" in md
    assert (tmp_path / "bench_speed.json").exists() and (tmp_path / "bench_memory_cifar100.json").exists()
    # GPU_CHECK_STEPS reruns one step into the same report; the others stay as they were (in this process: one
    # Python start-up fewer)
    monkeypatch.setenv("GPU_CHECK_STEPS", "eval")
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--dry-run", "--out", str(tmp_path)])
    environ = dict(os.environ)
    try:
        assert gpu_check.main() == 0
    finally:  # main sets variables for its own process (threads, cuBLAS): not for the tests after this one
        os.environ.clear()
        os.environ.update(environ)
    merged = json.loads((tmp_path / "gpu_check.json").read_text())
    assert merged["meta"]["steps_run"] == ["eval"] and merged["meta"]["merged_into_previous"]
    assert list(merged["steps"]) == list(gpu_check.STEPS)
    assert merged["steps"]["bench"] == report["steps"]["bench"]


def test_unknown_step_is_refused_with_the_list(tmp_path):
    done = check_cli(tmp_path, "--steps", "env,warp")
    assert done.returncode == 2
    assert "warp" in done.stderr and "numerics" in done.stderr
    assert not (tmp_path / "gpu_check.json").exists()


def test_deadline_skips_a_step_and_names_the_rerun(tmp_path):
    check = gpu_check.Check(out=tmp_path, dry=True, deadline=0, steps=["bench"], tmp=tmp_path / "runs")
    res = gpu_check.run_step(check, "bench")
    assert res["status"] == "skip" and "GPU_CHECK_STEPS=bench" in res["summary"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the gate passes where CUDA exists")
def test_without_cuda_the_gate_stops_with_one_paragraph(tmp_path):
    res = gpu_check.step_env(gpu_check.Check(out=tmp_path, dry=False, deadline=60, steps=["env"], tmp=tmp_path / "r"))
    assert res["status"] == "fail" and res["stop"]
    assert "No usable CUDA device" in res["summary"] and "torch.cuda.is_available() = False" in res["summary"]


def test_busy_time_is_the_union_of_the_kernel_intervals():
    """Overlapping kernels (two streams) count once, gaps not at all, CPU events never."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(start_us, end_us, device=DeviceType.CUDA):
        return SimpleNamespace(device_type=device, time_range=SimpleNamespace(start=start_us, end=end_us))

    prof = SimpleNamespace(events=lambda: [event(0, 100), event(50, 150), event(300, 400), event(120, 130),
                                           event(0, 10_000, DeviceType.CPU)])
    assert gpu_check.kernel_seconds(prof) == (150 + 100) / 1e6
    assert gpu_check.kernel_seconds(SimpleNamespace(events=lambda: [event(0, 5, DeviceType.CPU)])) is None
