"""Paper tables: which runs a table needs (conf/table/<name>.yaml), and reading finished runs back into it.

A table lists cells; a cell is one run setting (an experiment preset plus overrides) and the paper's figure.
Results come from two places, read the same way:
- run folders (outputs/): eval.json beside .hydra/overrides.yaml (and meta.json: git sha, command);
- shipped results (docs/results/): <name>.json beside <name>.run.json, which names the preset, the overrides,
  the command, the git sha and the composed config (and <name>.synset.pt when the set is shipped too).
A run belongs to a cell when its preset is the cell's, it has every override of the cell, and its other
overrides only change how it runs, not what it computes (IGNORED). Runs of one cell that differ in `seed`
aggregate: mean ± std over the runs' means, with n."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError

# Overrides that do not change what a run computes (where and how fast it runs, what it logs).
IGNORED_PREFIXES = ("paths.", "hydra.", "wandb.", "seed", "stages", "num_threads", "device", "resume", "run_name",
                    "sweep_name", "eval.lanes", "eval.batched", "eval.units", "eval.output_dir", "eval.merge",
                    "algorithm.compile", "algorithm.lanes", "buffer.compile", "buffer.experts", "distill.log_every",
                    "distill.image_every", "distill.snapshot_every", "distill.checkpoint_every", "precision",
                    "deterministic")

# The number each paper reports, by the method that made the set (eval.json key).
PAPER_RULE = {"random": "final", "mtt": "max_over_checkpoints", "tesla": "max_over_checkpoints",
              "rat_bptt": "max_over_checkpoints_and_lengths", "podd": "train_selected"}
RULE_WORDS = {
    "final": "final length",
    "max_over_checkpoints": "max over checkpoints (test-selected, MTT/TESLA)",
    "max_over_checkpoints_and_lengths": "max over checkpoints x lengths (test-selected, RaT-BPTT)",
    "train_selected": "selected on real train accuracy (PoDD)",
    "val_selected_checkpoint": "selected on validation (honest)",
}


@dataclass
class Cell:
    row: str
    column: str
    experiment: str | None
    overrides: list[str] = field(default_factory=list)
    paper: str = "–"
    reference: str = "–"
    rule: str | None = None
    arch: str | None = None

    @property
    def paper_rule(self) -> str:
        if self.rule:
            return self.rule
        name = self.experiment or ""
        for prefix in ("podd", "rat_bptt", "tesla", "mtt", "random"):
            if name.startswith(prefix):
                return PAPER_RULE[prefix]
        return "final"


@dataclass
class Table:
    name: str
    title: str
    row_label: str
    cells: list[Cell]
    layout: str = "grid"
    readme: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])


def table_dir() -> Path:
    from .conf_dir import config_dir

    return Path(config_dir()) / "table"


def load_table(name: str, folder: Path | None = None) -> Table:
    folder = folder or table_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"Table `{name}` does not exist: there is no {path}. Known tables: {', '.join(known)}.")
    raw = yaml.safe_load(path.read_text()) or {}
    cells = []
    for i, c in enumerate(raw.get("cells") or []):
        unknown = set(c) - set(Cell.__dataclass_fields__)
        if unknown or "row" not in c or "column" not in c:
            raise ConfigError(f"{path}, cell {i}: every cell needs `row` and `column` and may set "
                              f"experiment, overrides, paper, reference, rule, arch (got {sorted(c)}).")
        if c.get("rule") and c["rule"] not in RULE_WORDS:
            raise ConfigError(f"{path}, cell {i}: `rule` is {c['rule']!r}; use one of {', '.join(RULE_WORDS)}.")
        cells.append(Cell(**{k: (str(v) if k in ("row", "column", "paper", "reference") else v) for k, v in c.items()}))
    return Table(name=name, title=raw.get("title", name), row_label=raw.get("row_label", "setting"), cells=cells,
                 layout=raw.get("layout", "grid"), readme=bool(raw.get("readme", False)),
                 seeds=list(raw.get("seeds") or [0]))


# ---- launching ---------------------------------------------------------------------------------------------
def cell_slug(cell: Cell) -> str:
    text = f"{cell.experiment}_{'_'.join(cell.overrides)}" if cell.overrides else str(cell.experiment)
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text).strip("-")


def cell_commands(table: Table, python: str = "python", extra: list[str] | None = None,
                  launcher: str | None = None) -> list[list[str]]:
    """One command per distinct run setting (cells sharing a run, e.g. Table 2's architectures, run once); the
    seeds of a setting go into one Hydra multirun (`-m seed=0,1,2`), on any launcher (`hydra/launcher=...`)."""
    seen, commands = set(), []
    for cell in table.cells:
        if not cell.experiment:
            continue
        key = (cell.experiment, tuple(cell.overrides))
        if key in seen:
            continue
        seen.add(key)
        seeds = ",".join(str(s) for s in table.seeds)
        cmd = [python, "-m", "tesla_podd.train", "-m", f"experiment={cell.experiment}", *cell.overrides,
               f"seed={seeds}", f"hydra.sweep.dir=outputs/tables/{table.name}/{cell_slug(cell)}",
               *(extra or [])]
        if launcher:
            cmd.insert(4, f"hydra/launcher={launcher}")
        commands.append(cmd)
    return commands


# ---- reading results back ----------------------------------------------------------------------------------
@dataclass
class Record:
    experiment: str | None
    overrides: dict[str, str]
    report: dict
    source: str
    provenance: dict = field(default_factory=dict)

    @property
    def seed(self) -> str:
        return self.overrides.get("seed", "0")


def _split(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides:
        key, _, value = str(o).partition("=")
        out[key.lstrip("+~")] = value
    return out


def read_records(roots: list[Path]) -> list[Record]:
    records = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for ev in sorted(root.rglob("eval.json")):  # run folders
            over = ev.parent / ".hydra" / "overrides.yaml"
            if not over.is_file():
                continue
            overrides = _split(yaml.safe_load(over.read_text()) or [])
            meta = ev.parent / "meta.json"
            prov = json.loads(meta.read_text()) if meta.is_file() else {}
            records.append(Record(overrides.pop("experiment", None), overrides, json.loads(ev.read_text()), str(ev),
                                  {"git": prov.get("git"), "argv": prov.get("argv")}))
        for side in sorted(root.glob("*.run.json")):  # shipped results
            result = side.with_name(side.name[: -len(".run.json")] + ".json")
            if not result.is_file():
                continue
            prov = json.loads(side.read_text())
            records.append(Record(prov.get("experiment"), _split(prov.get("overrides") or []),
                                  json.loads(result.read_text()), str(result), prov))
    return records


def relevant(overrides: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in overrides.items() if not k.startswith(IGNORED_PREFIXES)}


def matches(cell: Cell, record: Record) -> bool:
    if not cell.experiment or record.experiment != cell.experiment:
        return False
    want = relevant(_split(cell.overrides))
    return relevant(record.overrides) == want


def rule_value(report: dict, rule: str, arch: str | None = None) -> tuple[dict | None, bool]:
    """(the rule's {mean, std, ...} or None, derived): a report written before checkpoint selection existed
    evaluated only its final set, so the checkpoint rules reduce to the per-length ones (derived=True)."""
    block = report
    if arch is not None:
        tables = report.get("architectures", {})
        found = [a for a in tables if a == arch or a.startswith(arch)]
        if not found:
            return None, False
        block = tables[found[0]]
        if found[0] != next(iter(tables)) and rule != "final":  # checkpoint rules cover the first architecture
            return None, False
    if rule in block:
        return block[rule], False
    fallback = {"max_over_checkpoints": "final", "max_over_checkpoints_and_lengths": "best_test",
                "val_selected_checkpoint": "best_val"}.get(rule)
    if fallback and block.get(fallback) is not None:
        return block[fallback], True
    return None, False


@dataclass
class CellResult:
    cell: Cell
    runs: list[Record]
    values: dict[str, dict | None]  # rule -> {"mean", "std", "n", "derived"}


def _aggregate(blocks: list[tuple[dict, bool]]) -> dict | None:
    got = [(b, d) for b, d in blocks if b is not None]
    if not got:
        return None
    means = [b["mean"] for b, _ in got]
    if len(got) == 1:
        b, derived = got[0]
        return {"mean": b["mean"], "std": b["std"], "n": 1, "derived": derived, "networks": len(b.get("accs", []))}
    return {"mean": statistics.fmean(means), "std": statistics.pstdev(means), "n": len(got),
            "derived": any(d for _, d in got), "networks": None}


def collect(table: Table, records: list[Record]) -> list[CellResult]:
    out = []
    rules = ("final", "val_selected_checkpoint", "max_over_checkpoints", "max_over_checkpoints_and_lengths",
             "train_selected")
    for cell in table.cells:
        runs = [r for r in records if matches(cell, r)]
        by_seed: dict[str, Record] = {}
        for r in runs:  # one run per seed: the latest found (sorted paths: later timestamps last)
            by_seed[r.seed] = r
        runs = list(by_seed.values())
        values = {rule: _aggregate([rule_value(r.report, rule, cell.arch) for r in runs]) for rule in rules}
        out.append(CellResult(cell, runs, values))
    return out


def fmt(value: dict | None, with_n: bool = True) -> str:
    if value is None:
        return "–"
    text = f"{value['mean']:.2f} ± {value['std']:.2f}"
    if with_n and value["n"] > 1:
        text += f" (n={value['n']})"
    return text + ("ᶠ" if value.get("derived") else "")


FOOTNOTE = ("ᶠ evaluated on the final set only (no checkpoint selection in that run): a checkpoint rule then reduces "
            "to its value over the evaluated lengths. n: runs (seeds) aggregated as mean ± std of their means; "
            "otherwise ± is the std over one run's networks. – : not run (or not measured by that run).")


def markdown(table: Table, results: list[CellResult]) -> str:
    if table.layout == "list":
        lines = [f"| {table.row_label} | final | validation-selected | paper's rule | ours by that rule | "
                 "reference code | paper |", "|---|---|---|---|---|---|---|"]
        for res in results:
            c = res.cell
            rule = c.paper_rule
            ours = fmt(res.values[rule]) if res.runs else "not run"
            lines.append(f"| {c.row} | {fmt(res.values['final'])} | {fmt(res.values['val_selected_checkpoint'])} | "
                         f"{RULE_WORDS[rule]} | {ours} | {c.reference} | {c.paper} |")
        return "\n".join(lines) + "\n\n" + FOOTNOTE + "\n"
    rows = list(dict.fromkeys(r.cell.row for r in results))
    cols = list(dict.fromkeys(r.cell.column for r in results))
    grid = {(r.cell.row, r.cell.column): r for r in results}
    lines = [f"**{table.title}** — each cell: ours by the paper's rule / the paper's figure", "",
             f"| {table.row_label} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for row in rows:
        cells = []
        for col in cols:
            res = grid.get((row, col))
            if res is None:
                cells.append("")
            elif not res.cell.experiment:
                cells.append(f"no preset / {res.cell.paper}")
            elif not res.runs:
                cells.append(f"not run / {res.cell.paper}")
            else:
                cells.append(f"{fmt(res.values[res.cell.paper_rule])} / {res.cell.paper}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    used = sorted({r.cell.paper_rule for r in results})
    lines += ["", "Rules: " + "; ".join(f"`{u}`: {RULE_WORDS[u]}" for u in used) + ".", "", FOOTNOTE]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("table", "row", "column", "experiment", "overrides", "arch", "rule", "ours_mean", "ours_std", "n",
              "final_mean", "final_std", "val_selected_mean", "val_selected_std", "reference", "paper", "runs")


def _shown(source: str, base: Path | None) -> str:
    """A result's file relative to `base` (the repository) when it lies inside it."""
    if base is None:
        return source
    try:
        return str(Path(source).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return source


def csv_rows(table: Table, results: list[CellResult], base: Path | None = None) -> list[dict]:
    rows = []
    for res in results:
        c, v = res.cell, res.values
        ours, fin, val = v[c.paper_rule] or {}, v["final"] or {}, v["val_selected_checkpoint"] or {}
        rows.append({"table": table.name, "row": c.row, "column": c.column, "experiment": c.experiment or "",
                     "overrides": " ".join(c.overrides), "arch": c.arch or "", "rule": c.paper_rule,
                     "ours_mean": ours.get("mean", ""), "ours_std": ours.get("std", ""), "n": len(res.runs),
                     "final_mean": fin.get("mean", ""), "final_std": fin.get("std", ""),
                     "val_selected_mean": val.get("mean", ""), "val_selected_std": val.get("std", ""),
                     "reference": c.reference, "paper": c.paper,
                     "runs": " ".join(_shown(r.source, base) for r in res.runs)})
    return rows


# ---- every run, no table: a sweep's overridden keys become columns ---------------------------------------------
def listing(records: list[Record]) -> str:
    keys = sorted({k for r in records for k in relevant(r.overrides)})
    head = ["experiment", *keys, "seeds", "final", "validation-selected", "max over checkpoints",
            "max over checkpoints x lengths", "train-selected"]
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        rel = relevant(r.overrides)
        groups.setdefault((r.experiment, *[rel.get(k, "") for k in keys]), []).append(r)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, runs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        vals = [fmt(_aggregate([rule_value(r.report, rule) for r in runs]))
                for rule in ("final", "val_selected_checkpoint", "max_over_checkpoints",
                             "max_over_checkpoints_and_lengths", "train_selected")]
        lines.append("| " + " | ".join([str(key[0]), *[str(x) for x in key[1:]],
                                        ",".join(sorted({r.seed for r in runs})), *vals]) + " |")
    return "\n".join(lines) + "\n\n" + FOOTNOTE + "\n"


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def replace_block(text: str, block: str) -> str | None:
    """`text` with the part between the results markers replaced by `block`; None when the markers are absent."""
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        return None
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block.rstrip()}\n{END}{tail}"
