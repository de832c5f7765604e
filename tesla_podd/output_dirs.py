"""The run folder (`hydra.run.dir`) or a multirun's folder (`hydra.sweep.dir`), created before anything else.

Hydra creates these itself and, when it cannot (a read-only disk, a folder the user may not write, a path
through a file), stops with a Python traceback. This Hydra callback (conf/hydra/default.yaml) creates the
folder first and turns that failure into one paragraph naming the key and the path, exit code 2; nothing else
has been written by then."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from .errors import ConfigError


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def make_output_dir(path: str | Path, key: str) -> Path:
    """Create `path` (and its parents) or raise a ConfigError that names `key`, the path and the reason."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError as exc:
        blocker = _first_existing(path.parent if not path.exists() else path)
        if blocker.exists() and not blocker.is_dir():
            why = f"{blocker} is a file, not a folder"
        elif isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
            why = f"{blocker} is not writable for this user"
        elif exc.errno == errno.EROFS:
            why = f"{blocker} is on a read-only file system"
        else:
            why = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"Cannot create the output folder {path} (`{key}`): {why}. Point it at a folder you can write to, "
            f"e.g. `{key}=/scratch/$USER/tesla-podd/run` on the command line, or move every output with "
            "`paths.output_root=/scratch/$USER/tesla-podd/outputs`. Nothing was written."
        ) from None


class CreateOutputDir(Callback):
    """Create the run folder (single run) or the sweep folder (multirun) before Hydra does."""

    def on_run_start(self, config, **kwargs) -> None:
        self._create(config, "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        self._create(config, "hydra.sweep.dir")

    @staticmethod
    def _create(config, key: str) -> None:
        HydraConfig.instance().set_config(config)  # `${hydra:...}` in the folder name (run_name) resolves
        try:
            make_output_dir(OmegaConf.select(config, key), key)
        except ConfigError as exc:  # Hydra turns exceptions from callbacks into warnings: exit here
            print(f"\nError: {exc}", file=sys.stderr)
            sys.exit(2)
