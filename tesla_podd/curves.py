"""PNG curves of a run, drawn from the files it leaves (metrics.csv, eval.json), and overlays of several runs
(`scripts/plot_runs.py`, `make plots`). So the curves are readable without W&B.

After the distill stage: `plots/distill_<metric>.png` (distillation loss, learned student lr, quick-eval
accuracy, ...: whichever the run logged). After the eval stage: `plots/eval_curve.png`, test accuracy (mean ±
std over networks; validation dashed) against training length, one line per architecture.

matplotlib is optional (the `dev` extra): without it no curves are drawn, with one log line; a run never fails
because of a plot (a failure to draw one is logged as a warning)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from . import metrics_file
from .pictures import save_figure

log = logging.getLogger(__name__)
PLOTS_DIR = "plots"

# metric key -> (file stem, y-axis label); the order is the order of the pictures
DISTILL_CURVES = {
    "distill/loss": ("distill_loss", "distillation loss"),
    "distill/syn_lr": ("distill_syn_lr", "learned student lr"),
    "distill/quick_acc": ("distill_quick_acc", "quick-eval test accuracy (%)"),
    "distill/checkpoint_acc": ("distill_checkpoint_acc", "checkpoint test accuracy (%)"),
    "distill/meta_acc": ("distill_meta_acc", "meta-batch accuracy"),
    "distill/inner_loss": ("distill_inner_loss", "inner training loss"),
}
_warned = False


def _figure_class():
    """matplotlib's Figure (no pyplot: no global state, no display), or None without matplotlib."""
    global _warned
    try:
        from matplotlib.figure import Figure
    except ImportError:
        if not _warned:
            log.info("matplotlib is not installed: no PNG curves (pip install matplotlib); metrics.csv has the values")
            _warned = True
        return None
    return Figure


def line_plot(lines: dict, path: Path, xlabel: str, ylabel: str, title: str = "") -> Path | None:
    """`lines`: {label: (xs, ys)} or {label: (xs, ys, stds, style)}; one PNG."""
    Figure = _figure_class()
    if Figure is None:
        return None
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for label, line in lines.items():
        xs, ys = line[0], line[1]
        stds = line[2] if len(line) > 2 else None
        style = line[3] if len(line) > 3 else "-"
        drawn = ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        if stds is not None:
            lo = [y - s for y, s in zip(ys, stds)]
            hi = [y + s for y, s in zip(ys, stds)]
            ax.fill_between(xs, lo, hi, alpha=0.15, color=drawn[0].get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(lines) > 1 or any(label for label in lines):
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _stepped(points) -> tuple[list, list]:
    pts = [(s, v) for s, v in points if s is not None]
    return [s for s, _ in pts], [v for _, v in pts]


def distill_lines(metrics_csv: Path) -> dict[str, tuple[list, list]]:
    """{metric key: (iterations, values)} of the plotted distill metrics a run logged."""
    if not Path(metrics_csv).is_file():
        return {}
    data = metrics_file.read(metrics_csv)
    return {k: _stepped(data[k]) for k in DISTILL_CURVES if k in data and _stepped(data[k])[0]}


def eval_lines(eval_json: Path) -> dict[str, dict]:
    """{architecture: {"length", "test", "test_std", "val"}} from an eval.json (val None without a split)."""
    report = json.loads(Path(eval_json).read_text())
    archs = report.get("architectures") or {report.get("model", "model"): report}
    out = {}
    for arch, table in archs.items():
        curve = table.get("curve") or []
        if not curve:
            continue
        vals = [p.get("val") for p in curve]
        out[arch] = {"length": [p["length"] for p in curve], "test": [p["test"]["mean"] for p in curve],
                     "test_std": [p["test"]["std"] for p in curve],
                     "val": [v["mean"] for v in vals] if all(v is not None for v in vals) else None}
    return out


def plot_distill(metrics_csv: Path, out_dir: Path, title: str = "") -> list[Path]:
    written = []
    for key, (xs, ys) in distill_lines(metrics_csv).items():
        stem, ylabel = DISTILL_CURVES[key]
        path = line_plot({"": (xs, ys)}, Path(out_dir) / f"{stem}.png", "iteration", ylabel, title)
        if path is None:
            return []
        written.append(path)
    return written


def plot_eval(eval_json: Path, out_dir: Path, title: str = "") -> list[Path]:
    if not Path(eval_json).is_file():
        return []
    lines = {}
    for arch, c in eval_lines(eval_json).items():
        lines[f"{arch} test"] = (c["length"], c["test"], c["test_std"], "-")
        if c["val"] is not None:
            lines[f"{arch} validation"] = (c["length"], c["val"], None, "--")
    if not lines:
        return []
    path = line_plot(lines, Path(out_dir) / "eval_curve.png", "training length (epochs or steps)",
                     "accuracy (%)", title)
    return [path] if path is not None else []


def plot_stage(stage: str, cfg, run_dir: Path) -> list[Path]:
    """The curves a finished stage can draw, into `<folder>/plots/`; never raises."""
    run_dir = Path(run_dir)
    try:
        if stage == "distill":
            return plot_distill(run_dir / metrics_file.FILENAME, run_dir / PLOTS_DIR, cfg.run_name)
        if stage == "eval":
            folder = Path(cfg.eval.output_dir) if cfg.eval.get("output_dir") else run_dir
            return plot_eval(folder / "eval.json", folder / PLOTS_DIR, cfg.run_name)
    except Exception as exc:  # a plot is a convenience: the run's results are already on disk
        log.warning("could not draw the %s curves (%s: %s); metrics.csv and eval.json have the values",
                    stage, type(exc).__name__, exc)
    return []


def overlay(runs: dict[str, Path], out_dir: Path) -> list[Path]:
    """One PNG per distill metric with a line per run, and one per architecture with each run's eval curve.
    `runs`: {label: run folder}."""
    out_dir = Path(out_dir)
    written = []
    per_metric: dict[str, dict] = {}
    per_arch: dict[str, dict] = {}
    for label, folder in runs.items():
        for key, xy in distill_lines(Path(folder) / metrics_file.FILENAME).items():
            per_metric.setdefault(key, {})[label] = xy
        if (Path(folder) / "eval.json").is_file():
            for arch, c in eval_lines(Path(folder) / "eval.json").items():
                per_arch.setdefault(arch, {})[label] = (c["length"], c["test"], c["test_std"], "-")
    for key, lines in per_metric.items():
        stem, ylabel = DISTILL_CURVES[key]
        written.append(line_plot(lines, out_dir / f"{stem}.png", "iteration", ylabel))
    for arch, lines in per_arch.items():
        written.append(line_plot(lines, out_dir / f"eval_curve_{arch}.png", "training length (epochs or steps)",
                                 f"{arch} test accuracy (%)"))
    return [p for p in written if p is not None]
