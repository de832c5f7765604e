"""Inputs that used to end in a traceback: each now ends in one paragraph naming the file, key or shapes,
exit code 2 at the command line, and nothing written half."""

from __future__ import annotations

import errno
import logging
import os

import pytest
from conftest import compose_cfg, run_cli
from PIL import Image

from tesla_podd import devices, expert_store, tracking
from tesla_podd.data.real import load_real
from tesla_podd.errors import BufferError_, ConfigError, DataError
from tesla_podd.output_dirs import CreateOutputDir, make_output_dir
from tesla_podd.train import run


def _fails(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stderr[-1500:])
    assert "Traceback" not in out.stderr, out.stderr[-1500:]
    for n in needles:
        assert n in out.stderr, (n, out.stderr[-1500:])


def test_corrupt_image_in_an_image_folder_is_named_and_nothing_cached(tmp_path):
    root = tmp_path / "cifar10"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(root / split / cls / "ok.png")
    bad = root / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    cfg = compose_cfg("dataset=cifar10", f"dataset.root={root}", "dataset.download=false", tmp=tmp_path)
    with pytest.raises(DataError, match=rf"Image {bad} could not be read.*corrupt.*class `dog`"):
        load_real(cfg.dataset, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))


def test_eval_of_a_set_of_another_image_size_names_both_shapes(smoke_cfg, tmp_path):
    run(smoke_cfg("method=random", "stages=[distill]"), run_dir=tmp_path / "a")
    with pytest.raises(DataError, match=r"synset.pt holds images of shape \(3, 16, 16\).*`fake` gives \(3, 8, 8\)"
                                        r".*dataset.image_size=16"):
        run(smoke_cfg("method=random", "stages=[eval]", f"eval.synset_path={tmp_path}/a/synset.pt",
                      "dataset.image_size=8"), run_dir=tmp_path / "b")
    assert not (tmp_path / "b" / "eval.json").exists() and not (tmp_path / "b" / "eval_units").exists()


def test_wandb_online_without_an_api_key_logs_offline_with_a_warning(tmp_path, monkeypatch, caplog):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setattr(tracking, "_host_reachable", lambda url, timeout=2.0: True)
    with caplog.at_level(logging.WARNING):
        assert tracking.resolve_mode("online") == "offline"
    assert "no W&B API key" in caplog.text and "WANDB_API_KEY" in caplog.text and "wandb sync" in caplog.text
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert tracking.resolve_mode("online") == "online", "a key from `wandb login` counts"


def test_wandb_init_failing_online_falls_back_to_offline(caplog):
    calls = []

    class FakeWandb:
        @staticmethod
        def init(mode, **kwargs):
            calls.append(mode)
            if mode == "online":
                raise RuntimeError("api_key not configured (no-tty)")
            return "run"

    with caplog.at_level(logging.WARNING):
        assert tracking._init_online_or_offline(FakeWandb, "online", project="p") == ("run", "offline")
    assert calls == ["online", "offline"] and "api_key not configured" in caplog.text


def test_run_folder_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "a_file" / "run"
    out = run_cli("debug=smoke", "method=random", f"paths.output_root={tmp_path}/o", f"hydra.run.dir={target}")
    _fails(out, "`hydra.run.dir`", str(target), f"{tmp_path / 'a_file'} is a file, not a folder")
    assert not (tmp_path / "o").exists(), "nothing written"


def test_multirun_folder_under_a_file_is_a_clear_error(tmp_path, capsys):
    """The same callback on a multirun's folder (what `-m ... hydra.sweep.dir=<file>/x` calls first)."""
    (tmp_path / "a_file").write_text("x")
    cfg = compose_cfg("debug=smoke", f"hydra.sweep.dir={tmp_path}/a_file/sweep", tmp=tmp_path)
    with pytest.raises(SystemExit) as stop:
        CreateOutputDir().on_multirun_start(cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/a_file/sweep (`hydra.sweep.dir`): {tmp_path}/a_file is a file, not a folder" in err


def test_output_folder_in_a_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:  # root writes anywhere: the denial is simulated there
        locked.chmod(0o555)
    else:
        def denied(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))

        monkeypatch.setattr(type(locked), "mkdir", denied)
    with pytest.raises(ConfigError, match=rf"Cannot create the output folder {locked}/run \(`hydra.run.dir`\): "
                                          rf"{locked} is not writable.*paths.output_root="):
        make_output_dir(locked / "run", "hydra.run.dir")
    locked.chmod(0o755)


def test_buffer_on_a_file_system_without_locks_is_a_clear_error(smoke_cfg, tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(expert_store.fcntl, "flock", no_locks)
    cfg = smoke_cfg("stages=[buffer]")
    with pytest.raises(BufferError_, match=r"File locks do not work in .*\(No locks available\).*paths.buffer_root="):
        run(cfg, run_dir=tmp_path / "r")
    assert not list(expert_store.open_store(cfg).dir.glob("expert_*")), "no expert written"


def test_gpu_lease_without_locks_falls_back_to_job_number(monkeypatch, caplog):
    def no_locks(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(devices.fcntl, "flock", no_locks)
    monkeypatch.setattr(devices, "_held_lease", None)
    with caplog.at_level(logging.WARNING):
        assert devices._lease_gpu(3, 2) == 1
    assert "Function not implemented" in caplog.text
