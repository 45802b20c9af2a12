#!/usr/bin/env python3
"""CPU time of every process, to tell whether something else ran during a measurement.

    procsnap.py > before.json                          # snapshot: {pid: [comm, ppid, start, ticks]}
    procsnap.py --diff before.json after.json --seconds S --exclude PID,... [--watch name=PID,...]

--diff prints {"watched_cpu_pct", "foreign_cpu_pct", "kernel_threads_cpu_pct", "top": [...]}:
the CPU use of each watched process, and the CPU used during the
measurement by processes other than the excluded ones (the bench's own processes) and their
descendants, as a percentage of one CPU over S seconds. Kernel threads (children of kthreadd,
e.g. ksoftirqd doing the benchmark's own network work) are counted apart.
"""

import argparse
import json
import os
import sys

TICKS = os.sysconf("SC_CLK_TCK")


def snapshot():
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                data = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: split at the last ')'.
        comm = data[data.index("(") + 1 : data.rindex(")")]
        fields = data[data.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        utime, stime = int(fields[11]), int(fields[12])
        start = int(fields[19])
        out[name] = [comm, ppid, start, utime + stime]
    return out


def cpu_of(before, after, pid, span):
    """CPU use of one process between the snapshots, in % of one CPU (None if not in both)."""
    old, new = before.get(pid), after.get(pid)
    if not old or not new or old[2] != new[2]:
        return None
    return round(100 * (new[3] - old[3]) / span, 1)


def diff(before, after, seconds, exclude, watch):
    # The bench's processes and everything they started.
    ours = set(exclude) | {str(os.getpid()), str(os.getppid())}
    changed = True
    while changed:
        changed = False
        for pid, (_, ppid, _, _) in after.items():
            if pid not in ours and str(ppid) in ours:
                ours.add(pid)
                changed = True
    foreign = 0
    kernel = 0
    top = []
    for pid, (comm, ppid, start, ticks) in after.items():
        if pid in ours:
            continue
        old = before.get(pid)
        used = ticks - old[3] if old and old[2] == start else ticks
        if used <= 0:
            continue
        if ppid == 2 or pid == "2":
            kernel += used
            continue
        foreign += used
        top.append((used, comm, pid))
    top.sort(reverse=True)
    span = max(seconds, 0.001) * TICKS
    return {
        "watched_cpu_pct": {name: cpu_of(before, after, pid, span) for name, pid in watch.items()},
        "foreign_cpu_pct": round(100 * foreign / span, 1),
        "kernel_threads_cpu_pct": round(100 * kernel / span, 1),
        "top": [
            {"pid": int(p), "comm": c, "cpu_pct": round(100 * u / span, 1)} for u, c, p in top[:5]
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diff", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--exclude", default="")
    parser.add_argument("--watch", default="", help="name=PID,... whose own CPU use to report")
    args = parser.parse_args()
    if not args.diff:
        json.dump(snapshot(), sys.stdout)
        return 0
    with open(args.diff[0]) as f:
        before = json.load(f)
    with open(args.diff[1]) as f:
        after = json.load(f)
    exclude = [p for p in args.exclude.split(",") if p]
    watch = dict(w.split("=", 1) for w in args.watch.split(",") if "=" in w and w.split("=", 1)[1])
    json.dump(diff(before, after, args.seconds, exclude, watch), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
