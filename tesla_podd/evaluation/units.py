"""Evaluation units (issue 8): one unit = (architecture, model index), numbered architecture-major
(architecture a, network i -> a * num_models + i). Each unit's result is written atomically to
`eval_units/<arch>_<i>.json` with the plan it belongs to, so parallel jobs can each run a slice
(`eval.units=[start,stop)`) and any job can merge once every unit is on disk. A unit's result depends only
on (seed, architecture, index, synthetic set, protocol), never on which job or slice ran it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..errors import ConfigError, DataError

UNITS_DIR = "eval_units"


@dataclass(frozen=True)
class Unit:
    arch: str
    index: int  # network index within the architecture (seeds its init, data order and augmentation)
    number: int  # position in the plan

    @property
    def file_name(self) -> str:
        return f"{self.arch}_{self.index}.json"


def plan_units(archs: list[str], num_models: int) -> list[Unit]:
    return [Unit(a, i, n * num_models + i) for n, a in enumerate(archs) for i in range(num_models)]


def select_units(units: list[Unit], spec) -> list[Unit]:
    """`eval.units`: null (all) or [start, stop) over unit numbers."""
    if spec is None:
        return list(units)
    bounds = list(spec)
    if len(bounds) != 2 or not all(isinstance(b, int) for b in bounds) or not 0 <= bounds[0] < bounds[1]:
        raise ConfigError(f"`eval.units` is {bounds}: give [start, stop) with 0 <= start < stop, e.g. "
                          f"`eval.units=[0,4]`; there are {len(units)} units (architectures x eval.num_models).")
    start, stop = bounds
    if start >= len(units):
        raise ConfigError(f"`eval.units` is [{start}, {stop}) but there are only {len(units)} units "
                          "(architectures x eval.num_models), numbered from 0.")
    return units[start : min(stop, len(units))]


def write_unit(folder: Path, unit: Unit, plan: dict, result: dict) -> Path:
    return atomic.write_json({"plan": plan, "unit": {"arch": unit.arch, "index": unit.index,
                                                     "number": unit.number}, **result}, folder / unit.file_name)


def read_unit(folder: Path, unit: Unit, plan: dict) -> dict | None:
    """The unit's stored result if it exists and belongs to this plan; None otherwise."""
    path = folder / unit.file_name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a torn file cannot exist (atomic writes); an unreadable one is redone
    return data if data.get("plan") == plan else None


def missing_units(folder: Path, units: list[Unit], plan: dict) -> list[Unit]:
    return [u for u in units if read_unit(folder, u, plan) is None]


def require_all(folder: Path, units: list[Unit], plan: dict) -> list[dict]:
    missing = missing_units(folder, units, plan)
    if missing:
        names = ", ".join(f"{u.number} ({u.file_name})" for u in missing[:10])
        raise DataError(f"`eval.merge=true` but {len(missing)} of {len(units)} evaluation units are missing or were "
                        f"made with other settings in {folder}: {names}{' ...' if len(missing) > 10 else ''}. "
                        "Run them with `eval.units=[start,stop)` (same config and eval.output_dir) first.")
    return [read_unit(folder, u, plan) for u in units]
