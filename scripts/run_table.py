#!/usr/bin/env python
"""Run every cell of a paper table (conf/table/<name>.yaml): one Hydra multirun per run setting, its seeds
swept, on any Hydra launcher. Expert buffers are keyed by what trains them (tesla_podd/expert_store.py), so
cells that need the same experts (MTT and TESLA on one dataset, a setting's seeds) train them once.

    python scripts/run_table.py tesla_table1 --dry-run                    # print the commands
    python scripts/run_table.py cpu paths.data_dir=/data                  # run them one after another
    python scripts/run_table.py tesla_table1 --launcher submitit_slurm    # each multirun on SLURM

Read the results back with `make results TABLE=<name>`."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tesla_podd.errors import UserError  # noqa: E402
from tesla_podd.tables import cell_commands, load_table  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="conf/table/<name>.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides added to every command (e.g. paths.data_dir=...)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--launcher", help="a hydra/launcher option (e.g. submitit_slurm, joblib)")
    p.add_argument("--tables-dir", type=Path)
    args = p.parse_intermixed_args(argv)
    try:
        table = load_table(args.table, args.tables_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    commands = cell_commands(table, python=sys.executable if not args.dry_run else "python",
                             extra=args.overrides, launcher=args.launcher)
    skipped = [c for c in table.cells if not c.experiment]
    for cmd in commands:
        print(shlex.join(cmd), flush=True)
        if not args.dry_run:
            rc = subprocess.call(cmd, cwd=REPO)
            if rc != 0:
                print(f"command failed with exit code {rc}; the remaining cells were not started", file=sys.stderr)
                return rc
    for c in skipped:
        print(f"# {c.row} / {c.column}: no preset (paper {c.paper})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
