"""Packaging metadata lives in pyproject.toml; this file only ships the top-level `conf/` inside the wheel.

The configs stay at the top of the checkout (where users read and edit them) and are copied into the built
package as `tesla_podd/conf`, where `tesla_podd.conf_dir` finds them after a plain `pip install .` or a wheel
install. An editable install needs no copy: it reads `conf/` of the checkout."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        for src in sorted(Path("conf").rglob("*.yaml")):
            if src.parts[1] == "local":  # machine-specific settings, git-ignored
                continue
            dst = Path(self.build_lib, "tesla_podd", src)
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithConf})
