"""The README's merge-cost tables, printed from bench_merge.py's ``--json`` rows.

    python bench/merge_table.py ROWS.json [MORE.json ...] [--level 0.4]

Where files hold the same row (model, batch, dtype, variant, level), the later file's wins; rows
marked ``superseded`` are left out. Prints Markdown: the ratio (measured speed-up / no-merge-cost
bound) of every variant at ``--level`` in every cell (below 0.9 in bold; rows whose ``label`` is
not the most common one marked, with a legend), then each cell's lowest row at every other level
with how many variants it holds.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_merge import VARIANTS, read_rows  # noqa: E402

LINE = 0.9  # the bar: a merged model at >= 0.9 of its bound


def latest(files: list[Path]) -> dict[tuple, dict]:
    out = {}
    for f in files:
        for r in read_rows(f):
            if not r.get("superseded"):
                out[r["model"], r["batch"], r["dtype"], r["variant"], r["level"]] = r
    return out


def cells(rows: dict) -> list[tuple]:
    """(model, batch, dtype) in a stable order: model as first seen, then batch, then fp32 before bf16."""
    models = list(dict.fromkeys(k[0] for k in rows))
    return sorted({k[:3] for k in rows}, key=lambda c: (models.index(c[0]), c[1], c[2] != "fp32"))


def short(cell: tuple) -> str:
    return f"{cell[0].removeprefix('vim_')} b{cell[1]} {cell[2]}"


def level_table(rows: dict, level: float) -> str:
    cs = cells(rows)
    here = [r for k, r in rows.items() if k[4] == level]
    labels = [lb for lb, _ in Counter(r.get("label") for r in here).most_common()]
    marks = {lb: "‡†§¶"[i % 4] * (1 + i // 4) for i, lb in enumerate(labels[1:])}
    names = [n for n in VARIANTS if any(k[3] == n for k in rows)] + \
        sorted({k[3] for k in rows} - set(VARIANTS))
    out = ["| variant | " + " | ".join(short(c) for c in cs) + " |", "|---" * (len(cs) + 1) + "|"]
    for n in names:
        vals = []
        for c in cs:
            r = rows.get((*c, n, level))
            if r is None:
                vals.append("")
                continue
            v = f"{r['ratio']:.3f}"
            v = f"**{v}**" if r["ratio"] < LINE else v
            vals.append(v + marks.get(r.get("label"), ""))
        out.append(f"| {n} | " + " | ".join(vals) + " |")
    legend = "".join(f"; {m}: {lb}" for lb, m in marks.items())
    out.append(f"\n{sum(r['ratio'] >= LINE for r in here)} of {len(here)} at or above {LINE} "
               f"(unmarked: {labels[0]}{legend}).")
    return "\n".join(out)


def lowest_table(rows: dict, skip: float) -> str:
    cs = cells(rows)
    levels = sorted({k[4] for k in rows} - {skip}, reverse=True)
    out = ["| cell | " + " | ".join(f"{lv:.0%}" for lv in levels) + " |", "|---" * (len(levels) + 1) + "|"]
    for c in cs:
        vals = []
        for lv in levels:
            here = [r for k, r in rows.items() if k[:3] == c and k[4] == lv]
            if not here:
                vals.append("")
                continue
            w = min(here, key=lambda r: r["ratio"])
            v = f"{w['ratio']:.3f}"
            vals.append(f"{w['variant']} {'**' + v + '**' if w['ratio'] < LINE else v} ({len(here)} rows)")
        out.append(f"| {short(c)} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--level", type=float, default=0.4)
    args = ap.parse_args()
    rows = latest(args.files)
    if not rows:
        sys.exit("no rows in " + ", ".join(map(str, args.files)))
    print(level_table(rows, args.level))
    print()
    print(lowest_table(rows, args.level))


if __name__ == "__main__":
    main()
