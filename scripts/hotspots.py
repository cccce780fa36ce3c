#!/usr/bin/env python3
"""Summarize `ncu --page source --print-source sass --csv`: the SASS instructions with the most
warp-stall samples, and the samples per instruction kind (scripts/gpu-check.sh hotspots)."""
import csv
import sys
from collections import defaultdict


def main(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # The header is the first row holding a "Source" column.
    head = next(i for i, r in enumerate(rows) if "Source" in r)
    cols = rows[head]
    body = [r for r in rows[head + 1:] if len(r) == len(cols)]
    src = cols.index("Source")
    samp = next((i for i, c in enumerate(cols) if c.startswith("Warp Stall Sampling (All")), None)
    if samp is None:
        print("columns:", cols)
        return 1
    nis = next((i for i, c in enumerate(cols) if c.startswith("Warp Stall Sampling (Not")), None)
    addr = cols.index("Address") if "Address" in cols else None

    def num(v):
        try:
            return float(v.replace(",", ""))
        except ValueError:
            return 0.0

    total = sum(num(r[samp]) for r in body) or 1.0
    print(f"{len(body)} SASS lines, {total:.0f} stall samples; columns: {len(cols)}")
    kinds = defaultdict(float)
    for r in body:
        op = r[src].split()
        op = [t for t in op if not t.startswith("@")]
        kinds[op[0].split(".")[0] if op else "?"] += num(r[samp])
    print("samples by opcode:", ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:14]))
    # Stall-reason columns, if present: the largest per hot line.
    reasons = [i for i, c in enumerate(cols) if c.startswith("stall_") or "Stall" in c and i not in (samp, nis)]
    print(f"{'addr':>6} {'%':>5} {'not-iss%':>8}  instruction  [top reasons]")
    for r in sorted(body, key=lambda r: -num(r[samp]))[:45]:
        top = sorted(((num(r[i]), cols[i]) for i in reasons), reverse=True)[:3]
        extra = " ".join(f"{c.split('(')[0].strip()[:22]}={v:.0f}" for v, c in top if v > 0)
        a = r[addr] if addr is not None else ""
        ni = 100 * num(r[nis]) / total if nis is not None else 0.0
        print(f"{a:>6} {100 * num(r[samp]) / total:5.1f} {ni:8.1f}  {r[src][:70]:70} {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
