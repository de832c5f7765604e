"""Where the Hydra configs live, for an installed wheel and for a checkout alike.

A wheel ships the top-level `conf/` as package data under `tesla_podd/conf` (setup.py copies it at build
time); a checkout or an editable install (`pip install -e .`) has it beside the package. The entrypoint passes
the absolute folder to Hydra, so `tesla-podd` and `python -m tesla_podd.train` work from any directory.
User presets go in a folder of their own: `tesla-podd --config-dir ~/my-presets experiment=my_run`."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The folder holding `train.yaml`: the packaged copy when installed from a wheel, else the checkout's."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"tesla-podd found no configs: neither {_PACKAGE / 'conf'} (a wheel install) nor {_PACKAGE.parent / 'conf'}"
        " (a checkout) holds train.yaml. Reinstall the package (`pip install .` from the checkout)."
    )
