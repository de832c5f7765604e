#!/usr/bin/env python
"""Ship a finished run's result into docs/results/ with everything needed to read it back and re-run it.

    python scripts/ship_result.py outputs/runs/<run>/<time> tesla_cifar10_ipc1_cpu_seed3

writes docs/results/<name>.json (the run's eval.json), docs/results/<name>.run.json (its preset, overrides,
command, git sha, composed config, and how to re-evaluate the set) and, when the set is small (IPC-1 sets are
kilobytes), docs/results/<name>.synset.pt: `make results TABLE=...` then finds it from the repository alone and
`stages=[eval] eval.synset_path=docs/results/<name>.synset.pt` re-evaluates it."""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tesla_podd import atomic  # noqa: E402
from tesla_podd.synset.file import SynsetFile  # noqa: E402
from tesla_podd.synset.interop import export_synset  # noqa: E402


def _restating_preset(experiment: str | None, overrides: list[str]) -> set[str]:
    """The overrides `key=value` that only restate what the preset composes to (so the result belongs to the
    preset's cell); the preset is composed once."""
    candidates = [o for o in overrides if "." in o.partition("=")[0] and not o.startswith(("+", "~"))]
    if experiment is None or not candidates:
        return set()
    from omegaconf import OmegaConf

    from tesla_podd import api

    preset = api.compose(f"experiment={experiment}")
    same = set()
    for o in candidates:
        key, _, value = o.partition("=")
        current = OmegaConf.select(preset, key, default=None)
        if current is not None and not OmegaConf.is_config(current) and str(current) == value:
            same.add(o)
    return same


def ship(run_dir: Path, name: str, out: Path, max_synset_kb: int) -> dict:
    run_dir = Path(run_dir)
    report_path, over_path = run_dir / "eval.json", run_dir / ".hydra" / "overrides.yaml"
    for need in (report_path, over_path, run_dir / ".hydra" / "config.yaml"):
        if not need.is_file():
            raise SystemExit(f"error: {need} is missing: give the folder of a finished run (eval.json, .hydra/).")
    report = json.loads(report_path.read_text())
    overrides = [str(o) for o in yaml.safe_load(over_path.read_text()) or []]
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    rest = [o for o in overrides if not o.startswith(("experiment=", "paths.", "hydra."))]
    restated = _restating_preset(experiment, rest)
    rest = [o for o in rest if o not in restated]  # `key=<the preset's own value>` changes nothing
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").is_file() else {}
    # Local folders are not part of a result: the command names the data folder generically, the config drops
    # `paths` (this machine's folders).
    command = [o if not o.startswith("paths.data_dir=") else "paths.data_dir=/path/to/data"
               for o in overrides if not o.startswith(("hydra.", "paths.")) or o.startswith("paths.data_dir=")]
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    config.pop("paths", None)
    side = {"format": "tesla-podd/shipped-result", "legacy": False, "experiment": experiment, "overrides": rest,
            "command": "python -m tesla_podd.train " + shlex.join(command), "git": meta.get("git"),
            "config": config, "synset": None}
    synset = Path(report.get("synset_path") or run_dir / "synset.pt")
    if synset.is_file():
        data = synset.read_bytes()
        side["synset_sha1"] = hashlib.sha1(data).hexdigest()
        keep = [o for o in rest if not o.startswith(("stages=", "eval.synset_path=", "eval.synset_format="))]
        again = [f"experiment={experiment}", *keep, "stages=[eval]"]
        if len(data) <= max_synset_kb * 1024:
            atomic.write_bytes(data, out / f"{name}.synset.pt")
            side["synset"] = f"{name}.synset.pt"
            again.append(f"eval.synset_path=docs/results/{name}.synset.pt")
        else:  # e.g. a kornia-ZCA set carries a 38 MB whitening matrix: ship the images alone (MTT layout, the
            # run's model space), which the eval stage reads back with the ZCA refit from the same data
            try:
                syn = SynsetFile.load(synset)
            except Exception:  # not a set this version reads: ship the result without it
                syn = None
            if syn is not None:
                export_synset(syn, out / f"{name}.set", formats=("mtt",))
                side["synset"], side["synset_format"] = f"{name}.set", "mtt"
                again += [f"eval.synset_path=docs/results/{name}.set", "eval.synset_format=mtt"]
        if side["synset"]:
            side["reevaluate"] = "python -m tesla_podd.train " + shlex.join(again)
    report["synset_path"] = side["synset"]  # the shipped set (null: not shipped), not this machine's folder
    atomic.write_json(report, out / f"{name}.json")
    atomic.write_json(side, out / f"{name}.run.json")
    return side


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("name", help="file stem under docs/results/")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    p.add_argument("--max-synset-kb", type=int, default=1024, help="ship the set only up to this size")
    args = p.parse_args(argv)
    side = ship(args.run_dir, args.name, args.out, args.max_synset_kb)
    print(f"shipped {args.name}: set {'kept' if side['synset'] else 'not kept (too large or missing)'}, "
          f"git {side['git']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
