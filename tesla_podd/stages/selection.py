"""Checkpoint selection (`distill.select_every`): evaluate the set every N distillation iterations with the
run's full evaluation protocol, so a number can be selected over checkpoints as each paper did.

Layout under the run dir, written as the run goes (atomic files):
    selection/it_<N>/synset.pt           the set at iteration N (saved before the distill checkpoint of N)
    selection/it_<N>/eval_units/*.json   one file per trained network (the eval stage's unit format)
    selection/it_<N>/record.json         the checkpoint's record, once every network is trained
A killed run keeps every finished network: on resume the checkpoints at or before the resumed iteration
whose networks are not all on disk are finished first, and nothing finished is trained again. The final
set is evaluated by the eval stage itself; the eval stage then reads the earlier checkpoints back and
writes every record and every rule into eval.json (evaluation/selection.py), and copies the set the
validation rule picked to synset_best.pt; the checkpoint sets are then deleted unless
`distill.select_keep_sets` (their records stay)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import atomic
from ..evaluation.selection import CHECKPOINT_RULES, over_checkpoints
from ..synset.file import SynsetFile

log = logging.getLogger(__name__)

SELECTION_DIR = "selection"
RECORD_FILE = "record.json"  # the checkpoint's record, written once all its networks are trained
_RECORD_KEYS = ("model", "num_models", "final", "best_val", "best_test", "curve", "models")


def schedule(select_every: int | None, total: int) -> list[int]:
    """Iterations whose set is evaluated: every `select_every` and the last (0/None: the last only)."""
    every = int(select_every or 0)
    points = list(range(every, total, every)) if every > 0 else []
    return points + [total]


def checkpoint_dir(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / SELECTION_DIR / f"it_{iteration:06d}"


def checkpoint_record(iteration: int, synset: str, table: dict) -> dict:
    """One checkpoint's entry in eval.json: its iteration, the set's file, and the first architecture's
    table (per-network curves and results, the mean curve, final/best_val/best_test)."""
    return {"iteration": iteration, "synset": synset, **{k: table[k] for k in _RECORD_KEYS if k in table}}


def first_architecture(cfg) -> dict:
    """The architecture whose numbers are reported (the first of `eval.models`, or the distillation's)."""
    from ..evaluation.runner import architectures

    specs = architectures(cfg)
    first = next(iter(specs))
    return {first: specs[first]}


def _evaluate(cfg, ctx, iteration: int, syn: SynsetFile | None = None) -> dict | None:
    """Run (or finish) checkpoint `iteration`'s evaluation; its record, or None without a saved set."""
    from ..evaluation.report import architecture_table
    from .evaluate import run_plan

    folder = checkpoint_dir(ctx.run_dir, iteration)
    if syn is None:
        if not (folder / "synset.pt").is_file():  # pruned after its run (distill.select_keep_sets): the record stays
            stored = folder / RECORD_FILE
            return json.loads(stored.read_text()) if stored.is_file() else None
        syn = SynsetFile.load(folder / "synset.pt")
    specs = first_architecture(cfg)
    proto, _, results = run_plan(cfg, ctx, syn, specs, folder / "eval_units", progress=False)
    arch = next(iter(specs))
    record = checkpoint_record(iteration, f"{SELECTION_DIR}/{folder.name}/synset.pt",
                               architecture_table(arch, specs[arch], results, proto.as_dict()))
    atomic.write_json(record, folder / RECORD_FILE)
    return record


def prune_sets(cfg, report: dict, run_dir: Path) -> None:
    """Unless `distill.select_keep_sets`, delete the checkpoint sets once the rules are written: each holds the
    set's preprocessing (a ZCA matrix is 38 MB at 32 px), the records stay (record.json) and the validation
    rule's pick is synset_best.pt."""
    if cfg.distill.get("select_keep_sets", False):
        return
    for record in report.get("checkpoints", [])[:-1]:
        path = Path(run_dir) / record["synset"] if record.get("synset") else None
        if path is not None and path.is_file() and path.parent.parent.name == SELECTION_DIR:
            path.unlink()
        record["synset"] = None


def save_checkpoint_set(syn: SynsetFile, ctx, iteration: int) -> Path:
    return syn.save(checkpoint_dir(ctx.run_dir, iteration) / "synset.pt")


def evaluate_checkpoint(cfg, ctx, iteration: int, syn: SynsetFile) -> dict:
    record = _evaluate(cfg, ctx, iteration, syn)
    test = record["final"]
    log.info("checkpoint %d: %.2f +- %.2f %% at the final length (%d networks)", iteration, test["mean"], test["std"],
             record["num_models"])
    ctx.tracker.log({"distill/checkpoint_acc": test["mean"]}, step=iteration)
    return record


def finish_pending(cfg, ctx, start: int, total: int) -> None:
    """On resume: finish the evaluations of checkpoints at or before `start` that a killed run left undone."""
    for it in schedule(cfg.distill.get("select_every"), total)[:-1]:
        if it <= start and (checkpoint_dir(ctx.run_dir, it) / "synset.pt").is_file():
            _evaluate(cfg, ctx, it)  # trains only the networks not yet on disk


def finished_checkpoints(cfg, ctx, specs: dict, syn: SynsetFile) -> list[dict]:
    """Records of the run's checkpoints before the final one, read back (finishing any incomplete one)."""
    every = cfg.distill.get("select_every")
    total = int(syn.meta.get("iterations", 0) or 0)
    records = []
    for it in schedule(every, total)[:-1]:
        record = _evaluate(cfg, ctx, it)
        if record is None:
            log.warning("checkpoint %d has no saved set under %s; it is left out of the selection", it,
                        checkpoint_dir(ctx.run_dir, it))
            continue
        records.append(record)
    return records


def add_checkpoint_rules(report: dict, records: list[dict], run_dir: Path | None, final_path: Path) -> None:
    """Write the checkpoint records and the four rules into `report`; copy the validation-selected set to
    synset_best.pt beside the run's synset.pt (own runs only)."""
    rules = over_checkpoints(records)
    report["checkpoints"] = records
    report.update(rules)
    report["selection"] = {**report.get("selection", {}), **CHECKPOINT_RULES}
    chosen = rules["val_selected_checkpoint"]
    if run_dir is None or chosen is None:
        return
    record = next(r for r in records if r["iteration"] == chosen["iteration"])
    source = final_path if record is records[-1] else Path(run_dir) / record["synset"]
    target = Path(run_dir) / "synset_best.pt"
    if Path(source).is_file():
        atomic.write_bytes(Path(source).read_bytes(), target)
    elif not target.is_file():  # pruned before this re-evaluation and never copied: nothing to keep
        log.warning("the set of checkpoint %d is no longer on disk; synset_best.pt not written", chosen["iteration"])
        return
    report["synset_best"] = {"path": target.name, "iteration": chosen["iteration"], "length": chosen["length"]}
