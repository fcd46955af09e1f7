#!/usr/bin/env bash
# Scaling curves to PNG (gnuplot-nox): t/s of each test against the link rate, measured points
# (bench jsonl, e.g. from link-sweep.sh) and simulated lines (`pipelm simulate -o jsonl`), one
# panel per test, one series per stage count.
#
#   scripts/cluster/plot.sh measured.jsonl simulated.jsonl out.png
#
# Rows with link_rate "" / "none" / "in-process" / "inf" are drawn at the right edge ("no limit").
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: plot.sh MEASURED.jsonl SIMULATED.jsonl OUT.png" >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot is missing: apt-get install gnuplot-nox" >&2; exit 4; }
for f in "$1" "$2"; do [[ -r $f ]] || { echo "plot.sh: cannot read $f" >&2; exit 5; }; done
work=$(mktemp -d /tmp/pipelm-plot.XXXXXX)
trap 'rm -rf "$work"' EXIT
# One data file per (kind, test, stages): "rate_mbit tps".
python3 - "$1" "$2" "$work" <<'PY'
import json, os, sys
def mbit(r, link):
    r = (r or "").lower()
    if link == "in-process" or r in ("", "none", "inf", "in-process"):
        return 10000.0
    for u, m in (("gbit", 1e3), ("mbit", 1.0), ("kbit", 1e-3)):
        if r.endswith(u):
            return float(r[: -len(u)]) * m
    return float("nan")
tests, series = [], {}
for kind, path in (("measured", sys.argv[1]), ("simulated", sys.argv[2])):
    for line in open(path):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        t = r["test"]
        if t not in tests:
            tests.append(t)
        series.setdefault((kind, t, r["stages"]), []).append((mbit(r.get("link_rate"), r.get("link")), r["tps"]))
with open(os.path.join(sys.argv[3], "plot.gp"), "w") as gp:
    gp.write("set termoption noenhanced\nset yrange [0:*]\nset logscale x\nset xlabel 'link rate, Mbit/s (10000 = no limit)'\nset ylabel 't/s'\nset key top left\nset grid\n")
    gp.write("set multiplot layout 1,%d\n" % len(tests))
    for t in tests:
        parts = []
        for (kind, tt, s), pts in sorted(series.items()):
            if tt != t:
                continue
            name = "%s-%s-%d.dat" % (kind, t.replace("@", "_").replace("+", "_"), s)
            with open(os.path.join(sys.argv[3], name), "w") as f:
                for x, y in sorted(pts):
                    f.write("%g %g\n" % (x, y))
            style = "with linespoints pt 7" if kind == "measured" else "with lines dt 2"
            parts.append("'%s' using 1:2 %s lw 2 title '%s %d stage(s)'" % (name, style, kind, s))
        gp.write("set title '%s'\nplot %s\n" % (t, ", ".join(parts)))
    gp.write("unset multiplot\n")
PY
n=$(python3 -c "import sys; print(sum(1 for l in open(sys.argv[1]) if l.startswith('plot ')))" "$work/plot.gp")
out=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
(cd "$work" && gnuplot -e "set terminal pngcairo size $((420 * n)),380 font ',9'; set output '$out'" plot.gp)
echo "plot.sh: wrote $3 ($n panel(s))"
