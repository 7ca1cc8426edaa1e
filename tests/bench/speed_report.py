#!/usr/bin/env python3
"""Turn one speed.sh run into table.md and chart.png.

usage: speed_report.py RESULTS_CSV TTFB_CSV OUT_DIR BACKEND [WARM_RAW_CSV]

RESULTS_CSV is ../shared/bench's results.csv (limits and filesystem rows of one run);
TTFB_CSV is speed.sh's time-to-first-byte table. Every figure printed comes from those
two files: nothing here is measured or assumed.
"""
import csv
import os
import subprocess
import sys


def main():
    results, ttfb_csv, out, backend = sys.argv[1:5]
    warm_raw = sys.argv[5] if len(sys.argv) > 5 else None
    rows = list(csv.DictReader(open(results)))
    limits = [r for r in rows if r["section"] == "limit"]
    fs = [r for r in rows if r["section"] == "fs"]
    systems = []
    for r in fs:
        if r["system"] not in systems:
            systems.append(r["system"])
    methods = []
    for r in fs:
        if r["method"] not in methods:
            methods.append(r["method"])

    def get(system, method, state):
        for r in fs:
            if (r["system"], r["method"], r["state"]) == (system, method, state):
                return r
        return None

    md = []
    md.append(f"Limits (MB/s), backend `{backend}`:\n")
    md.append("| limit | method | MB/s |")
    md.append("|---|---|---|")
    for r in limits:
        md.append(f"| {r['system']} | {r['method']} | {r['MBps']} |")
    md.append("")
    md.append("Filesystems: MB/s (ratio to the limit of the same reader; cold: the backend's "
              "8 x 64 MiB ranged GETs, warm: the disk with the page cache dropped, hot: the "
              "page cache), then x modelfs (modelfs / that system, same reader and state), "
              "daemon CPU s/GiB, peak RSS MiB:\n")
    md.append("| system | reader | cold | warm | hot | x modelfs cold/warm/hot "
              "| daemon CPU s/GiB cold/warm/hot | RSS MiB |")
    md.append("|---|---|---|---|---|---|---|---|")
    for m in methods:
        for s in systems:
            cells, xs, cpus, rss = [], [], [], 0
            for st in ("cold", "warm", "hot"):
                r = get(s, m, st)
                if not r or r["MBps"] in ("", "n/a", "-"):
                    cells.append("n/a")
                    xs.append("-")
                    cpus.append("-")
                    continue
                cells.append(f"{r['MBps']} ({r['ratio']})")
                cpus.append(r["daemon_cpu_s_per_GiB"])
                try:
                    rss = max(rss, float(r["daemon_rss_MiB"]))
                except ValueError:
                    pass
                mine = get("modelfs", m, st)
                try:
                    xs.append(f"{float(mine['MBps']) / float(r['MBps']):.2f}")
                except (TypeError, ValueError, ZeroDivisionError):
                    xs.append("-")
            md.append(f"| {s} | {m} | {cells[0]} | {cells[1]} | {cells[2]} | "
                      f"{'/'.join(xs)} | {'/'.join(cpus)} | {rss:.0f} |")
    md.append("")
    md.append("Time to first byte of a cold shard (ms; page cache dropped, empty cache, "
              "new mount; the mounts' times include open):\n")
    t = list(csv.reader(open(ttfb_csv)))
    md.append("| " + " | ".join(t[0]) + " |")
    md.append("|" + "---|" * len(t[0]))
    for r in t[1:]:
        md.append("| " + " | ".join(r) + " |")
    if warm_raw and os.path.exists(warm_raw):
        w = list(csv.DictReader(open(warm_raw)))
        md.append("")
        md.append("Warm against the raw read of the same bytes, after a cold read through "
                  "modelfs filled the cache: the cache's data files read with `cat` and the "
                  "shards read with `cat` through modelfs, page cache dropped before each, "
                  "in the order shown (MB/s):\n")
        md.append("| run | first | MB/s | then | MB/s | modelfs / raw |")
        md.append("|---|---|---|---|---|---|")
        for run in sorted({r["run"] for r in w}):
            pair = [r for r in w if r["run"] == run]
            raw = [r["MBps"] for r in pair if r["read"].startswith("cache")]
            mine = [r["MBps"] for r in pair if r["read"] == "modelfs warm"]
            if len(pair) == 2 and raw and mine:
                name = lambda r: "raw" if r["read"].startswith("cache") else "modelfs"
                md.append(f"| {run} | {name(pair[0])} | {pair[0]['MBps']} | {name(pair[1])} | "
                          f"{pair[1]['MBps']} | {float(mine[0]) / float(raw[0]):.2f} |")
    checks = [f"{r['section']}: {r['sha256']}" for r in rows if r["system"] == "verify"]
    if checks:
        md.append("")
        md.append("sha256 of the whole model through each mount: " + ", ".join(checks))
    open(os.path.join(out, "table.md"), "w").write("\n".join(md) + "\n")
    print("\n".join(md))

    # chart: one group per (reader, state), one bar per system, the limit as a bar too
    dat = os.path.join(out, "chart.dat")
    with open(dat, "w") as f:
        for m in methods:
            for st in ("cold", "warm", "hot"):
                lim = "-"
                vals = []
                for s in systems:
                    r = get(s, m, st)
                    v = r["MBps"] if r and r["MBps"] not in ("", "n/a", "-") else "0"
                    vals.append(v)
                    if r and r["limit_MBps"] not in ("", "-"):
                        lim = r["limit_MBps"]
                f.write(f"{m}-{st} {lim if lim != '-' else 0} " + " ".join(vals) + "\n")
    gp = os.path.join(out, "chart.gp")
    cols = " , ".join(f"'' using {i + 3} title '{s}'" for i, s in enumerate(systems))
    with open(gp, "w") as f:
        f.write(f"""set terminal png size 1400,700
set output '{os.path.join(out, "chart.png")}'
set title 'modelfs vs s3fs and rclone mount, backend {backend}: MB/s (log scale), limit = the limit of the same reader'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [50:*]
set ylabel 'MB/s'
set xtics rotate by -30
set key top left
set grid ytics
plot '{dat}' using 2:xtic(1) title 'limit' lc rgb '#999999', {cols}
""")
    subprocess.run(["gnuplot", gp], check=False)


if __name__ == "__main__":
    main()
