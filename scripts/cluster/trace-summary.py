#!/usr/bin/env python3
"""Summary of a pipelm --trace file: per group of tracks (one per bench session), the wall time
spanned, each stage's busy %, each link's in-transit %, and the share of the wall with 2 or more
stages computing at once (0 % = the pipeline bubble: the stages take turns; near the stage count
x busy = full overlap).

    scripts/cluster/trace-summary.py run.json [--ubatches A-B]

--ubatches A-B keeps ubatch ids A..B only (e.g. one test of a bench run: ids count up from 0 in
each session, warm-up first)."""
import json
import sys


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    lo, hi = 0, float("inf")
    if "--ubatches" in args:
        i = args.index("--ubatches")
        lo, hi = (int(x) for x in args[i + 1].split("-"))
        del args[i:i + 2]
    with open(args[0]) as f:
        d = json.load(f)
    names, groups = {}, {}
    for e in d["traceEvents"]:
        if e["ph"] == "M" and e["name"] in ("process_name", "thread_name"):
            names[(e["pid"], e.get("tid"))] = e["args"]["name"]
        elif e["ph"] == "X" and lo <= e["args"]["ubatch"] <= hi:
            groups.setdefault(e["pid"], {}).setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for pid, tracks in sorted(groups.items()):
        spans = [s for t in tracks.values() for s in t]
        t0, t1 = min(s[0] for s in spans), max(s[1] for s in spans)
        wall = max(t1 - t0, 1)
        print("%s: %.1f ms" % (names.get((pid, None), "group %d" % pid), wall / 1e3))
        for tid in sorted(tracks):
            busy = sum(b - a for a, b in tracks[tid])
            print("  %-22s %5d spans  %5.1f %% of the wall" % (names.get((pid, tid), tid), len(tracks[tid]), 100 * busy / wall))
        # sweep over compute span edges: time with >= 2 stages computing
        edges = sorted([(a, 1) for tid, t in tracks.items() if tid % 2 == 0 for a, _ in t] +
                       [(b, -1) for tid, t in tracks.items() if tid % 2 == 0 for _, b in t])
        active, last, both = 0, t0, 0
        for t, step in edges:
            if active >= 2:
                both += t - last
            active += step
            last = t
        print("  2+ stages computing    %5.1f %% of the wall" % (100 * both / wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
