"""metrics.csv: every metric a run logs, in its run folder, readable without W&B.

Long format, one row per metric value: `step,key,value,time` (`time`: Unix seconds). Why long and not one
column per metric: metrics appear at different moments (the distillation loss every `distill.log_every`
iterations, the quick-eval accuracy every `distill.eval_every`, evaluation metrics once at the end, buffer
metrics in another stage), so a wide table would need its header rewritten whenever a new key shows up, that
is, the whole file rewritten while the run is still writing it. Long rows are only ever appended.

Each `append` is one `write` of whole rows, flushed at once: a run killed at any moment keeps every row it
logged, at worst a cut last line, which `read` skips. `step` is empty for metrics logged without one (buffer
and evaluation metrics); rows of one log call share their `time`. A resumed run appends to the same file and
logs again the iterations after its last checkpoint: `read` keeps the later row of a repeated (key, step)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from . import atomic

FILENAME = "metrics.csv"
HEADER = ("step", "key", "value", "time")


def _number(value):
    """A float for numbers, bools and one-element tensors; None for what cannot be a metric value."""
    if value is None:
        return None
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, (bool, int, float)):
        return float(value)
    return None


class MetricsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, metrics: dict, step: int | None = None) -> None:
        """Append one row per numeric metric (other values, e.g. tables, are W&B's alone)."""
        rows = [(k, v) for k, v in ((k, _number(v)) for k, v in metrics.items()) if v is not None]
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if new:
            writer.writerow(HEADER)
        now = f"{time.time():.3f}"
        for key, value in rows:
            writer.writerow(("" if step is None else int(step), key, repr(value), now))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:  # append mode: one write, whole rows
            f.write(buf.getvalue())
            f.flush()


def carry_over(src_dir: str | Path, dst_dir: str | Path) -> bool:
    """A run resumed from another folder (`resume_dir`) starts its metrics.csv with the rows logged there, so
    its curves begin at iteration 0. Only into a run folder that has no metrics.csv yet."""
    src, dst = Path(src_dir) / FILENAME, Path(dst_dir) / FILENAME
    if not src.is_file() or dst.exists() or src.resolve() == dst.resolve():
        return False
    data = src.read_bytes()
    if data and not data.endswith(b"\n"):  # a line cut by a kill: keep the whole rows
        data = data[: data.rfind(b"\n") + 1]
    atomic.write_bytes(data, dst)
    return True


def read(path: str | Path) -> dict[str, list[tuple[int | None, float]]]:
    """{key: [(step, value), ...]}: stepped values sorted by step (a repeated step keeps its later row),
    then the values logged without a step, in the order they were logged. A cut last line is skipped."""
    stepped: dict[str, dict[int, float]] = {}
    unstepped: dict[str, list[float]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            try:
                value = float(row["value"])
                step = int(row["step"]) if row["step"] else None
            except (TypeError, ValueError):  # a line cut by a kill
                continue
            if not row.get("time"):  # the last field missing: the line was cut
                continue
            key = row["key"]
            if step is None:
                unstepped.setdefault(key, []).append(value)
            else:
                stepped.setdefault(key, {})[step] = value
    out: dict[str, list[tuple[int | None, float]]] = {}
    for key in dict.fromkeys([*stepped, *unstepped]):
        points: list[tuple[int | None, float]] = sorted(stepped.get(key, {}).items())
        points += [(None, v) for v in unstepped.get(key, [])]
        out[key] = points
    return out
