#!/usr/bin/env python3
"""Turns the raw records of one bench/run.sh run into the result JSON and markdown table.

    report.py --meta META.json --records RECORDS.jsonl --json OUT.json --md OUT.md

RECORDS holds one JSON object a line, written by run.sh:
  {"kind":"measure","scenario","target","tool","attempts","quiet_before","waited_s",
   "compiler_after","raw":<wrk BENCH_JSON or loadgen output>}
  {"kind":"rss","scenario","tollgate":{"idle_kb","hwm_kb"},"nginx_worker":{...}}
  {"kind":"hold_rss","scenario","target","max_vmrss_kb"}
  {"kind":"stderr","process","scenario","lines","tail"}
Targets are ratios to nginx measured in the same run (see bench/README.md).
"""

import argparse
import json
import os
import sys

TARGETS = ("direct", "nginx", "tollgate")
# Scenarios whose targets are measured in alternating rounds (merged by `merge_rounds`).
ROUNDED = ("s1", "s2", "s3", "s3ttfb")
KIB_PER_MIB = 1024


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def errors_of(raw):
    if raw is None:
        return None
    e = raw.get("errors", 0)
    if isinstance(e, dict):  # wrk
        return sum(e.values())
    return e + raw.get("failed", 0) if raw.get("mode") == "hold" else e


def cpu_pct(before, after):
    """Busy and steal share of each CPU between two /proc/stat snapshots, in percent."""
    if not before or not after:
        return None
    out = {}
    for name, a in after.items():
        b = before.get(name)
        if not b or name == "cpu":
            continue
        delta = [x - y for x, y in zip(a, b)]
        total = sum(delta[:8])  # user nice system idle iowait irq softirq steal
        if total <= 0:
            continue
        idle = delta[3] + delta[4]
        out[name] = {
            "busy": round(100 * (total - idle) / total, 1),
            "steal": round(100 * delta[7] / total, 1),
        }
    return out


def median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


STEAL_MARK = 10  # % of a CPU taken by the hypervisor that makes a figure unreliable


def max_steal(m):
    cpus = m.get("cpu_pct") or {}
    return max((c["steal"] for c in cpus.values()), default=None)


def busy(m):
    """Whether a compiler or another process used the CPU during the measurement."""
    return not m.get("quiet_before", True) or m.get("disturbed") or m.get("compiler_after")


def fmt_us(v):
    return "n/a" if v is None else f"{v:,.0f} µs"


def fmt_added(v):
    return "n/a" if v is None else f"{v:+,.0f} µs"


def fmt_rps(v):
    return "n/a" if v is None else f"{v:,.0f} req/s"


def fmt_kib(v):
    if v is None:
        return "n/a"
    return f"{v / KIB_PER_MIB:.1f} MiB" if v >= KIB_PER_MIB else f"{v:,.1f} KiB"


def verdict(ok):
    if ok is None:
        return "n/a"
    return "PASS" if ok else "**FAIL**"


class Report:
    def __init__(self, meta, records, json_name):
        self.meta = meta
        self.records = records
        # The table outlives the raw JSON (which is not committed), so it names that file.
        self.json_name = json_name
        self.measures = {}
        self.rss = {}
        self.hold_rss = {}
        self.stderr = []
        for r in records:
            kind = r.get("kind")
            if kind == "measure":
                self.measures[(r["scenario"], r["target"])] = r
            elif kind == "rss":
                self.rss[r["scenario"]] = r
            elif kind == "hold_rss":
                self.hold_rss[(r["scenario"], r["target"])] = r["max_vmrss_kb"]
            elif kind == "stderr":
                self.stderr.append(r)
        for m in self.measures.values():
            m["cpu_pct"] = cpu_pct(m.get("proc_stat_before"), m.get("proc_stat_after"))
        self.merge_rounds()
        self.rows = []
        self.notes = []
        self.flags = {}  # (scenario, target) -> footnote marker text

    def merge_rounds(self):
        """Scenarios 1 to 3 measure each target in alternating rounds ("nginx-r1", ...):
        each target gets one measure whose figures are the medians of its rounds (CPU per
        request too, round by round), so a host that slows down for a moment weighs on one
        round of every target rather than on one target's whole figure."""
        grouped = {}
        for (scenario, target), m in self.measures.items():
            base, sep, n = target.rpartition("-r")
            if scenario in ROUNDED and sep and n.isdigit():
                grouped.setdefault((scenario, base), []).append(m)
        for (scenario, base), rounds in grouped.items():
            rounds.sort(key=lambda m: m["target"])
            raws = [m["raw"] for m in rounds if m.get("raw")]
            raw = None
            if raws:
                raw = {
                    "rps": median(r["rps"] for r in raws),
                    "requests": sum(r.get("requests", 0) for r in raws),
                    "errors": sum(errors_of(r) for r in raws),
                }
                # wrk's latency, loadgen's time to first byte: each percentile's median.
                for key in ("latency_us", "ttfb_us"):
                    if all(isinstance(r.get(key), dict) for r in raws):
                        raw[key] = {
                            p: median(r[key][p] for r in raws)
                            for p in ("p50", "p90", "p99")
                            if all(r[key].get(p) is not None for r in raws)
                        }
            steals = [m for m in rounds if m.get("cpu_pct")]
            self.measures[(scenario, base)] = {
                "scenario": scenario,
                "target": base,
                "rounds": rounds,
                "raw": raw,
                "quiet_before": all(m.get("quiet_before", True) for m in rounds),
                "disturbed": any(m.get("disturbed") or m.get("compiler_after") for m in rounds),
                "cpu_pct": max(steals, key=max_steal)["cpu_pct"] if steals else None,
            }

    def round_figures(self, scenario, target, *path):
        """A merged target's figure round by round (empty for a single measurement)."""
        m = self.measures.get((scenario, target)) or {}
        out = []
        for r in m.get("rounds", []):
            v = r.get("raw")
            for key in path:
                v = v.get(key) if isinstance(v, dict) else None
            out.append(v)
        return out

    def raw(self, scenario, target):
        m = self.measures.get((scenario, target))
        return None if m is None else m.get("raw")

    def get(self, scenario, target, *path):
        v = self.raw(scenario, target)
        for key in path:
            if not isinstance(v, dict):
                return None
            v = v.get(key)
        return v

    def mark(self, scenario, target, text, timing=True):
        """Cell text plus a note when the measurement had errors, a busy machine or (for
        timing figures) a busy host."""
        m = self.measures.get((scenario, target))
        if m is None:
            return text
        extra = []
        errs = errors_of(m.get("raw"))
        if m.get("raw") is None:
            extra.append("no result")
        elif errs:
            extra.append(f"{errs:,} errors")
        if busy(m):
            extra.append("busy machine†")
        steal = max_steal(m)
        if timing and steal is not None and steal >= STEAL_MARK:
            extra.append(f"steal {steal:.0f} %‡")
        return text + (f" ({', '.join(extra)})" if extra else "")

    def clean(self, scenario, target):
        m = self.measures.get((scenario, target))
        return m is not None and m.get("raw") is not None and not errors_of(m["raw"])

    def row(self, name, cells, target, ok, key):
        self.rows.append(
            {
                "key": key,
                "scenario": name,
                "direct": cells[0],
                "nginx": cells[1],
                "tollgate": cells[2],
                "target": target,
                "pass": ok,
            }
        )

    def build(self):
        self.latency_rows()
        self.throughput_rows()
        self.stream_rows()
        self.memory_rows()
        self.routes_rows()

    # 1. c=1 added latency
    def latency_rows(self):
        for pct, factor in (("p50", 0.5), ("p99", 1.0)):
            d = self.get("s1", "direct", "latency_us", pct)
            n = self.get("s1", "nginx", "latency_us", pct)
            t = self.get("s1", "tollgate", "latency_us", pct)
            n_add = None if None in (d, n) else n - d
            t_add = None if None in (d, t) else t - d
            ok = None
            limit = None
            if n_add is not None and t_add is not None:
                limit = factor * n_add
                ok = t_add <= limit and self.clean("s1", "tollgate")
            target = (
                f"added ≤ {'0.5× ' if factor != 1 else ''}nginx's added"
                + (f" (≤ {limit:,.0f} µs)" if limit is not None else "")
            )
            self.row(
                f"1. non-streaming, c=1: {pct} latency (added over direct)",
                [
                    self.mark("s1", "direct", fmt_us(d)),
                    self.mark("s1", "nginx", f"{fmt_us(n)} ({fmt_added(n_add)})"),
                    self.mark("s1", "tollgate", f"{fmt_us(t)} ({fmt_added(t_add)})"),
                ],
                target,
                ok,
                f"s1_added_{pct}",
            )
        self.cpu_row("s1", "1. non-streaming, c=1: CPU used by the proxy", True)

    @staticmethod
    def measure_cpu(m, target):
        """CPU use of the proxy process (tollgate, or nginx's worker) in % of one core, and
        its rps, in one measurement."""
        watched = (m.get("foreign") or {}).get("watched_cpu_pct") or {}
        pct = watched.get({"tollgate": "tollgate", "nginx": "nginx_worker"}.get(target, ""))
        return pct, (m.get("raw") or {}).get("rps")

    def proxy_cpu(self, scenario, target):
        """The proxy's CPU in % of one core and in µs per request (None when unknown); for
        a target measured in rounds, the medians of the rounds'."""
        m = self.measures.get((scenario, target)) or {}
        pairs = [self.measure_cpu(r, target) for r in m.get("rounds", [m])]
        pcts = [p for p, _ in pairs if p is not None]
        per_request = [p / 100 * 1e6 / rps for p, rps in pairs if p is not None and rps]
        return median(pcts), median(per_request)

    def cpu_row(self, scenario, name, per_request):
        cells = ["—"]
        for target in ("nginx", "tollgate"):
            pct, us = self.proxy_cpu(scenario, target)
            if pct is None:
                cells.append("n/a")
            elif per_request and us is not None:
                cells.append(f"{us:,.1f} µs/request ({pct:.0f} % of a core)")
            else:
                cells.append(f"{pct:.0f} % of a core")
        self.row(name, cells, "reported", None, f"{scenario}_proxy_cpu")

    # 2. c=64 throughput and p99
    def throughput_rows(self):
        d, n, t = (self.get("s2", x, "rps") for x in TARGETS)
        ok = None if None in (n, t) else t >= 0.8 * n and self.clean("s2", "tollgate")
        self.row(
            "2. non-streaming, c=64: throughput",
            [self.mark("s2", x, fmt_rps(v)) for x, v in zip(TARGETS, (d, n, t))],
            f"≥ 0.8× nginx" + (f" (≥ {0.8 * n:,.0f})" if n else ""),
            ok,
            "s2_rps",
        )
        p99 = [self.get("s2", x, "latency_us", "p99") for x in TARGETS]
        self.row(
            "2. non-streaming, c=64: p99 latency",
            [fmt_us(v) for v in p99],
            "reported",
            None,
            "s2_p99",
        )
        self.cpu_row("s2", "2. non-streaming, c=64: CPU used by the proxy", True)

    # 3. streaming
    def stream_rows(self):
        d, n, t = (self.get("s3", x, "rps") for x in TARGETS)
        # Issue 26 raised the streaming target from 0.8× to 0.9× nginx.
        ok = None if None in (n, t) else t >= 0.9 * n and self.clean("s3", "tollgate")
        self.row(
            "3. streaming (20 chunks), c=16: throughput",
            [self.mark("s3", x, fmt_rps(v)) for x, v in zip(TARGETS, (d, n, t))],
            "≥ 0.9× nginx" + (f" (≥ {0.9 * n:,.0f})" if n else ""),
            ok,
            "s3_rps",
        )
        for sc, conns, pct, has_target in (
            ("s3ttfb", 16, "p50", True),
            ("s3ttfb", 16, "p99", False),
            ("s3ttfb1", 1, "p50", False),
        ):
            d, n, t = (self.get(sc, x, "ttfb_us", pct) for x in TARGETS)
            if (d, n, t) == (None, None, None):
                continue
            n_add = None if None in (d, n) else n - d
            t_add = None if None in (d, t) else t - d
            ok = None
            if has_target and n_add is not None and t_add is not None:
                ok = t_add <= n_add and self.clean(sc, "tollgate")
            self.row(
                f"3. streaming, c={conns}: time to first byte {pct} (added over direct)",
                [
                    self.mark(sc, "direct", fmt_us(d)),
                    self.mark(sc, "nginx", f"{fmt_us(n)} ({fmt_added(n_add)})"),
                    self.mark(sc, "tollgate", f"{fmt_us(t)} ({fmt_added(t_add)})"),
                ],
                "added ≤ nginx's added" if has_target else "reported",
                ok,
                f"{sc}_c{conns}_added_{pct}",
            )
        d, n, t = (self.get("s3paced", x, "rps") for x in TARGETS)
        ok = None if None in (d, t) else abs(t - d) <= 0.05 * d and self.clean("s3paced", "tollgate")

        def pct_of_direct(v):
            return "" if None in (v, d) or not d else f" ({(v / d - 1) * 100:+.1f} %)"

        self.row(
            "3. paced streams (20 chunks, 5 ms apart), c=64: throughput",
            [
                self.mark("s3paced", "direct", fmt_rps(d)),
                self.mark("s3paced", "nginx", fmt_rps(n) + pct_of_direct(n)),
                self.mark("s3paced", "tollgate", fmt_rps(t) + pct_of_direct(t)),
            ],
            "within 5 % of direct",
            ok,
            "s3_paced_rps",
        )

    # 4. memory
    def memory_rows(self):
        streams = self.meta["settings"]["hold_streams"]
        idle_t = max(
            (r["tollgate"]["idle_kb"] for s, r in self.rss.items() if s != "s5"), default=None
        )
        idle_n = max(
            (r["nginx_worker"]["idle_kb"] for r in self.rss.values() if "nginx_worker" in r),
            default=None,
        )
        self.row(
            "4. idle RSS (VmRSS after start)",
            ["—", f"{fmt_kib(idle_n)} (worker)", fmt_kib(idle_t)],
            "≤ 20 MiB",
            None if idle_t is None else idle_t <= 20 * KIB_PER_MIB,
            "idle_rss",
        )
        s4 = self.rss.get("s4", {})
        per_stream = {}
        for target, key in (("nginx", "nginx_worker"), ("tollgate", "tollgate")):
            peak = self.hold_rss.get(("s4", target))
            idle = s4.get(key, {}).get("idle_kb")
            if peak and idle is not None:
                per_stream[target] = (peak - idle) / streams
        self.derived_per_stream = per_stream
        t = per_stream.get("tollgate")
        self.row(
            f"4. {streams:,} open streams: RSS per stream ((peak VmRSS − idle) / {streams:,})",
            [
                "—",
                self.mark("s4", "nginx", fmt_kib(per_stream.get("nginx")), timing=False),
                self.mark("s4", "tollgate", fmt_kib(t), timing=False),
            ],
            "≤ 64 KiB",
            None if t is None else t <= 64,
            "rss_per_stream",
        )
        cells = []
        for target in TARGETS:
            r = self.raw("s4", target)
            if r is None:
                cells.append("no result")
                continue
            text = (
                f"{r['completed']:,}/{r['requested']:,} done, max {r['max_concurrent']:,} open "
                f"(ramp {r['ramp_ms'] / 1000:.1f} s)"
            )
            if r["failed"]:
                kinds = ", ".join(f"{k} {v:,}" for k, v in r["error_kinds"].items())
                text += f", **{r['failed']:,} failed** ({kinds})"
            cells.append(text)
        r = self.raw("s4", "tollgate")
        ok = None if r is None else r["completed"] == streams and r["failed"] == 0
        self.row(
            f"4. {streams:,} open streams: all complete with [DONE]",
            cells,
            "none fails",
            ok,
            "streams_complete",
        )

    # 5. routes: alternating rounds (targets "routes<N>-r<round>"), median of the rounds' p50s
    def routes_rows(self):
        routes = self.meta["settings"]["routes"]

        def rounds(n):
            keys = sorted(k for k in self.measures if k[0] == "s5" and k[1].startswith(f"routes{n}-r"))
            return keys, [self.get(*k, "latency_us", "p50") for k in keys]

        base_keys, base_p50s = rounds(1)
        many_keys, many_p50s = rounds(routes)
        base = median([v for v in base_p50s if v is not None])
        many = median([v for v in many_p50s if v is not None])
        ratio = None if not base or many is None else many / base
        self.derived_routes = {
            "p50_us_1_route_rounds": base_p50s,
            f"p50_us_{routes}_routes_rounds": many_p50s,
            "ratio_of_medians": ratio,
        }
        text = fmt_us(many)
        if ratio is not None:
            text += f" vs {fmt_us(base)} with 1 route = {ratio:.2f}×"
        text += " (rounds: " + ", ".join(f"{a}/{b}" for a, b in zip(many_p50s, base_p50s)) + " µs)"
        keys = base_keys + many_keys
        problems = []
        errs = sum(errors_of(self.raw(*k)) or 0 for k in keys)
        if errs:
            problems.append(f"{errs:,} errors")
        if any(busy(self.measures[k]) for k in keys):
            problems.append("busy machine†")
        steal = max((max_steal(self.measures[k]) or 0 for k in keys), default=0)
        if steal >= STEAL_MARK:
            problems.append(f"steal up to {steal:.0f} %‡")
        problems = [f"({', '.join(problems)})"] if problems else []
        clean = all(self.clean(*k) for k in keys)
        self.row(
            f"5. {routes:,} routes (measured route matched last) vs 1 route: p50 at c=1, "
            "median of 3 alternating rounds",
            ["—", "—", text + (" " + " ".join(problems) if problems else "")],
            "≤ 1.10× the 1-route p50",
            None if ratio is None else ratio <= 1.10 and clean,
            "routes_p50_ratio",
        )

    def peak_rows(self):
        names = {
            "s1": "1. non-streaming c=1",
            "s5": f"5. {self.meta['settings']['routes']:,} routes, c=1",
            "s2": "2. non-streaming c=64",
            "s3": "3. streaming c=16 + paced c=64",
            "s4": f"4. {self.meta['settings']['hold_streams']:,} open streams",
        }
        out = []
        for key in ("s1", "s2", "s3", "s4", "s5"):
            r = self.rss.get(key)
            if r is None:
                continue
            n = r.get("nginx_worker", {})
            out.append(
                {
                    "scenario": names[key],
                    "nginx_worker_idle_kb": n.get("idle_kb"),
                    "nginx_worker_hwm_kb": n.get("hwm_kb"),
                    "tollgate_idle_kb": r["tollgate"]["idle_kb"],
                    "tollgate_hwm_kb": r["tollgate"]["hwm_kb"],
                }
            )
        return out

    def spent(self):
        parts = []
        if self.meta.get("build_s"):
            parts.append(f"{self.meta['build_s']} s building")
        if self.meta.get("quiet_waited_s"):
            parts.append(f"{self.meta['quiet_waited_s']} s waiting for other processes to finish")
        return f" (of which {' and '.join(parts)})" if parts else ""

    def run_flags(self):
        """How tollgate ran: its default flags (SQLite analytics) unless the run said otherwise."""
        s = self.meta["settings"]
        analytics = s.get("analytics")
        if analytics is None:  # runs from before the setting existed
            return ""
        parts = ["default flags (usage analytics to SQLite)" if analytics == "sqlite" else "`--analytics off`"]
        if s.get("observe"):
            parts.append("global prometheus and file-log")
        return "Tollgate with " + ", ".join(parts) + ". "

    def markdown(self):
        m = self.meta
        mc = m["machine"]
        s = m["settings"]
        lines = [
            f"# Gateway overhead — {m['started_at']} ({m['mode']} run)",
            "",
            f"{mc['cpu']}, {mc['nproc']} cores, Linux {mc['kernel']}; gateway and nginx pinned "
            f"to CPU {mc['gateway_cpu']}, mock-llm and the load generator to CPU "
            f"{mc['load_cpu']}. Commit `{m['git']['commit']}`"
            + (" + uncommitted changes" if m["git"]["dirty"] else "")
            + f"; {m['tools']['wrk']}; {m['tools']['nginx']}. "
            + self.run_flags()
            + f"{s['duration_s']:.0f} s per measurement after {s['warmup_s']:.0f} s warm-up; "
            f"run took {m['elapsed_s']} s"
            + self.spent()
            + ".",
            "",
            "| scenario | direct | nginx | tollgate | target | pass/fail |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r['scenario']} | {r['direct']} | {r['nginx']} | {r['tollgate']} "
                f"| {r['target']} | {verdict(r['pass'])} |"
            )
        peaks = self.peak_rows()
        if peaks:
            lines += [
                "",
                "Peak RSS (VmHWM) per scenario, each scenario with freshly started proxies:",
                "",
                "| scenario | nginx worker idle → peak | tollgate idle → peak |",
                "|---|---|---|",
            ]
            for p in peaks:
                nginx = (
                    "—"
                    if p["nginx_worker_hwm_kb"] is None
                    else f"{fmt_kib(p['nginx_worker_idle_kb'])} → {fmt_kib(p['nginx_worker_hwm_kb'])}"
                )
                lines.append(
                    f"| {p['scenario']} | {nginx} | "
                    f"{fmt_kib(p['tollgate_idle_kb'])} → {fmt_kib(p['tollgate_hwm_kb'])} |"
                )
        notes = []
        def who(m):
            f = m.get("foreign") or {}
            top = ", ".join(f"{t['comm']} {t['cpu_pct']} %" for t in f.get("top", [])[:3])
            return f"{f.get('foreign_cpu_pct', '?')} % of a CPU" + (f": {top}" if top else "")

        # Merged targets stand for their rounds, which are listed themselves.
        noisy = [
            f"{k[0]}/{k[1]} ({who(v)})"
            for k, v in self.measures.items()
            if busy(v) and not v.get("rounds")
        ]
        if noisy:
            notes.append(
                "† Even on the second attempt, rustc/cargo or other processes (not started by "
                "the bench) used the CPU during: " + "; ".join(noisy) + ". Those figures are noisy."
            )
        retried = [f"{k[0]}/{k[1]}" for k, v in self.measures.items() if v.get("attempts", 1) > 1]
        if retried:
            notes.append(
                "Measured twice because a compiler or another process used the CPU during the "
                "first attempt: " + ", ".join(retried) + "."
            )
        for k, v in self.measures.items():
            raw = v.get("raw")
            if raw and raw.get("error_samples"):
                notes.append(f"{k[0]}/{k[1]} errors: " + "; ".join(raw["error_samples"][:3]))
        for e in self.stderr:
            where = "stderr" if e["process"] == "tollgate" else "its error log"
            notes.append(
                f"{e['process']} wrote {e['lines']} line(s) to {where} in {e['scenario']} "
                f"(last: `{e['tail'][-1][:200] if e['tail'] else ''}`); see the JSON."
            )
        stolen = [
            f"{k[0]}/{k[1]} ({max_steal(v)} %)"
            for k, v in self.measures.items()
            if (max_steal(v) or 0) >= 2 and not v.get("rounds")
        ]
        if stolen:
            notes.append(
                "The hypervisor took (steal time) ≥ 2 % of a CPU during: " + ", ".join(stolen)
                + f". ‡ marks figures with ≥ {STEAL_MARK} %: the host was busy, they are unreliable."
            )
        d50 = self.get("s1", "direct", "latency_us", "p50")
        d99 = self.get("s1", "direct", "latency_us", "p99")
        if d50 and d99 and d99 > 10 * d50:
            notes.append(
                f"Direct c=1 p99 ({d99:,} µs) is over 10× its p50: a stall on the machine during "
                "that run, which wrk's coordinated-omission correction spreads over many samples; "
                "the c=1 p99 comparison of this run is not reliable."
            )
        rounds = self.rounds_note()
        if rounds:
            notes.append(rounds)
        notes.append(
            "Added = the proxy's figure minus direct's. Time to first byte = request sent → first "
            "body byte (the first SSE event). Throughput rows from wrk, TTFB and the open-streams "
            "rows from loadgen. wrk's latency percentiles include its coordinated-omission "
            "correction. Raw figures, machine and tool versions: "
            f"`{self.json_name}` among the run's raw output (`bench/results/raw/`, not committed)."
        )
        lines += ["", *[f"- {n}" for n in notes], ""]
        return "\n".join(lines)

    def rounds_note(self):
        """The alternating scenarios round by round, for the table's medians."""
        parts = []
        for scenario, label, path, fmt in (
            ("s1", "c=1 p50", ("latency_us", "p50"), "{:,.0f}"),
            ("s1", "c=1 p99", ("latency_us", "p99"), "{:,.0f}"),
            ("s2", "c=64 req/s", ("rps",), "{:,.0f}"),
            ("s3", "streaming c=16 req/s", ("rps",), "{:,.0f}"),
            ("s3ttfb", "streaming c=16 TTFB p50", ("ttfb_us", "p50"), "{:,.0f}"),
        ):
            cells = []
            for target in TARGETS:
                values = self.round_figures(scenario, target, *path)
                if values:
                    cells.append(
                        f"{target} " + "/".join("n/a" if v is None else fmt.format(v) for v in values)
                    )
            if cells:
                parts.append(f"{label}: " + ", ".join(cells))
        if not parts:
            return None
        n = max(len(m.get("rounds", [])) for m in self.measures.values())
        return (
            f"Scenarios 1, 2 and 3 (but the c=1 TTFB and paced rows) measure each target in {n} "
            "alternating rounds (the order rotates each round); the table gives the medians of "
            "the rounds, CPU per request too. Rounds: "
            + "; ".join(parts)
            + "."
        )

    def json(self):
        return {
            **self.meta,
            "rows": self.rows,
            "peak_rss": self.peak_rows(),
            "derived": {
                "rss_per_stream_kib": getattr(self, "derived_per_stream", {}),
                "routes": getattr(self, "derived_routes", None),
            },
            "records": self.records,
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--md", required=True)
    args = parser.parse_args()
    with open(args.meta) as f:
        meta = json.load(f)
    report = Report(meta, load(args.records), os.path.basename(args.json))
    report.build()
    with open(args.json, "w") as f:
        json.dump(report.json(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(args.md, "w") as f:
        f.write(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
