#!/usr/bin/env python
"""Read finished runs back into a paper table (or list every run), as Markdown and CSV.

    python scripts/collect_results.py --table cpu              # docs/results/ + outputs/ -> the CPU table
    python scripts/collect_results.py --table tesla_table1     # TESLA Table 1 in the paper's layout
    python scripts/collect_results.py                          # every run, a sweep's overridden keys as columns

Each paper figure stands beside our number under that paper's own selection rule, and the rule is named
(conf/table/<name>.yaml; tesla_podd/tables.py). Seeds of one setting aggregate into mean ± std with n; cells
not run yet are marked. A table with `readme: true` also replaces the README block between
`<!-- results:begin -->` and `<!-- results:end -->` (only when both markers are there)."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tesla_podd import atomic  # noqa: E402
from tesla_podd.errors import UserError  # noqa: E402
from tesla_podd.tables import CSV_FIELDS, collect, csv_rows, listing, load_table, markdown, read_records, replace_block  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", type=Path, nargs="*", help="folders to read (default: docs/results and outputs)")
    p.add_argument("--table", help="a conf/table/<name>.yaml table")
    p.add_argument("--tables-dir", type=Path, help="where the table files are (default: conf/table)")
    p.add_argument("--md", type=Path, help="write the Markdown here (a readme table: docs/results_table.md)")
    p.add_argument("--csv", type=Path, help="write the CSV here (default: beside --md)")
    p.add_argument("--readme", type=Path, default=REPO / "README.md", help="README whose results block a "
                   "readme table replaces")
    p.add_argument("--no-readme", action="store_true", help="never touch the README")
    args = p.parse_args(argv)
    roots = args.roots or [REPO / "docs" / "results", REPO / "outputs"]
    try:
        records = read_records(roots)
        if not args.table:
            text = listing(records)
            print(text)
            if args.md:
                atomic.write_text(text, args.md)
            return 0
        table = load_table(args.table, args.tables_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = collect(table, records)
    text = markdown(table, results)
    print(f"## {table.title}\n\n{text}")
    md = args.md or (REPO / "docs" / "results_table.md" if table.readme else None)
    if md is not None:
        atomic.write_text(text, md)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(table, results, base=REPO))
        atomic.write_text(out.getvalue(), args.csv or md.with_suffix(".csv"))
    if table.readme and not args.no_readme and args.readme.is_file():
        new = replace_block(args.readme.read_text(), text)
        if new is None:
            print(f"note: {args.readme} has no results markers; it was left as it is", file=sys.stderr)
        else:
            atomic.write_text(new, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
