"""Turn the raw results of `run.py` into medians and ratios, PNG plots (matplotlib) and a markdown fragment.

Usable on its own to redo the report of an existing results file:

    python scripts/bench/report.py docs/bench/results.json [--out docs/bench]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import median, percentile, ratio

LABELS = {
    "naive": "naive FastAPI",
    "litserve": "LitServe",
    "torchserve": "TorchServe",
    "ray": "Ray Serve",
    "morphserve_v1": "morphserve /v1 JSON",
    "morphserve_oip_json": "morphserve OIP JSON",
    "morphserve_oip_binary": "morphserve OIP binary",
}
PEERS = ["naive", "litserve", "torchserve", "ray"]
ORDER = list(LABELS)


def label(target: str) -> str:
    """Display name of a target; `morphserve_v1_w2` (morphserve started with --workers 2) included."""
    if target in LABELS:
        return LABELS[target]
    if target.startswith("morphserve_v1_w"):
        return f"morphserve /v1 JSON (--workers {target.removeprefix('morphserve_v1_w')})"
    return target


def ordered(targets: Any) -> list[str]:
    """Targets in report order: the fixed ones first, then variants (e.g. morphserve --workers N) by name."""
    ts = set(targets)
    return [t for t in ORDER if t in ts] + sorted(ts - set(ORDER))


# ---------------------------------------------------------------------------------------------- summary
def _cell(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": median([r["rps"] for r in rows]),
        "p50_ms": median([r["p50_ms"] for r in rows]),
        "p99_ms": median([r["p99_ms"] for r in rows]),
        "non_2xx": sum(r["non_2xx"] for r in rows),
        "socket_errors": sum(r["socket_errors"] for r in rows),
        "requests": sum(r["requests"] for r in rows),
        "reps": len(rows),
        "rps_each": [r["rps"] for r in rows],
    }


def _limit_table(limits: list[dict[str, Any]]) -> dict[str, dict[int, float | None]]:
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in limits:
        groups[(r["model"], r["batch_size"])].append(r["rows_per_s"])
    table: dict[str, dict[int, float | None]] = defaultdict(dict)
    for (model, b), xs in sorted(groups.items()):
        table[model][b] = median(xs)
    return dict(table)


def _cells(runs: list[dict[str, Any]], workload: str) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """model -> target -> concurrency -> cell."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["workload"] == workload:
            groups[(r["model"], r["target"], r["connections"])].append(r)
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for (model, target, c), rows in groups.items():
        out[model][target][c] = _cell(rows)
    return {m: dict(t) for m, t in out.items()}


def _get(cells: dict[str, Any], model: str, target: str, c: int, key: str) -> float | None:
    return cells.get(model, {}).get(target, {}).get(c, {}).get(key)


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    runs = results.get("runs", [])
    limits = _limit_table(results.get("limits", []))
    s: dict[str, Any] = {"limit_rows_per_s": {m: {str(b): v for b, v in t.items()} for m, t in limits.items()}}
    max_batch = results["meta"]["settings"].get("max_batch_size", 32)

    def lim(model: str, b: int) -> float | None:
        return limits.get(model, {}).get(b)

    # workload 1
    w1 = _cells(runs, "1")
    if w1:
        mlp = w1.get("mlp", {})
        s["w1"] = {t: {str(c): cell for c, cell in cs.items()} for t, cs in mlp.items()}
        ratios, best = {}, {}
        for c in sorted({c for cs in mlp.values() for c in cs}):
            m = "mlp"
            here = [t for t in ordered(mlp) if c in mlp[t]]
            rps = {t: _get(w1, m, t, c, "rps") for t in here}
            p50 = {t: _get(w1, m, t, c, "p50_ms") for t in here}
            p99 = {t: _get(w1, m, t, c, "p99_ms") for t in here}
            peers = [t for t in PEERS if t in here]
            ours = [t for t in here if t.startswith("morphserve_v1")]
            r: dict[str, float | None] = {}
            for t in ("morphserve_v1", "morphserve_oip_json"):
                for peer in peers:
                    if t in here:
                        r[f"rps {t}/{peer}"] = ratio(rps[t], rps[peer])
            if "morphserve_v1" in here:
                r[f"rps morphserve_v1/limit(batch {max_batch})"] = ratio(rps["morphserve_v1"], lim(m, max_batch))
                r["rps morphserve_v1/limit(batch 1)"] = ratio(rps["morphserve_v1"], lim(m, 1))
                for peer in peers:
                    r[f"p99 morphserve_v1/{peer}"] = ratio(p99["morphserve_v1"], p99[peer])
            for t in ours:
                if t != "morphserve_v1":
                    for peer in peers:
                        r[f"rps {t}/{peer}"] = ratio(rps[t], rps[peer])
            ratios[str(c)] = r
            if peers and ours:
                bp = max(peers, key=lambda t: rps[t] or 0)
                bm = max(ours, key=lambda t: rps[t] or 0)
                best[str(c)] = {
                    "peer": bp,
                    "peer_rps": rps[bp],
                    "peer_p50_ms": p50[bp],
                    "peer_p99_ms": p99[bp],
                    "morphserve": bm,
                    "rps": rps[bm],
                    "p50_ms": p50[bm],
                    "p99_ms": p99[bm],
                    "naive_rps": rps.get("naive"),
                }
        s["w1_ratios"] = ratios
        s["w1_best"] = best

    # workload 2 (and the GPU mode, which has the same shape per model and concurrency)
    for key in ("2", "gpu"):
        cells = _cells(runs, key)
        if not cells:
            continue
        block: dict[str, Any] = {}
        for model, targets in cells.items():
            per_c: dict[str, Any] = {}
            for c in sorted({c for cs in targets.values() for c in cs}):
                rps = {t: _get(cells, model, t, c, "rps") for t in ordered({*ORDER, *targets})}
                per_c[str(c)] = {
                    "cells": {t: targets[t][c] for t in ordered(targets) if c in targets[t]},
                    "ratios": {
                        "rps oip_binary/oip_json": ratio(rps["morphserve_oip_binary"], rps["morphserve_oip_json"]),
                        "rps oip_binary/v1_json": ratio(rps["morphserve_oip_binary"], rps["morphserve_v1"]),
                        "rps oip_binary/naive": ratio(rps["morphserve_oip_binary"], rps["naive"]),
                        "rps oip_binary/litserve": ratio(rps["morphserve_oip_binary"], rps["litserve"]),
                        "rps v1_json/naive": ratio(rps["morphserve_v1"], rps["naive"]),
                        "rps v1_json/litserve": ratio(rps["morphserve_v1"], rps["litserve"]),
                        **{
                            f"rps oip_binary/limit(batch {b})": ratio(rps["morphserve_oip_binary"], lim(model, b))
                            for b in sorted({32, max_batch})
                        },
                        "rps oip_binary/limit(batch 1)": ratio(rps["morphserve_oip_binary"], lim(model, 1)),
                        **(
                            {
                                f"rps v1_json/limit(batch {b})": ratio(rps["morphserve_v1"], lim(model, b))
                                for b in sorted({32, max_batch})
                            }
                            if key == "gpu"
                            else {}
                        ),
                    },
                }
            block[model] = per_c
        s["w2" if key == "2" else "gpu"] = block

    # workload 3
    edits = results.get("edits", [])
    if edits:
        w3: dict[str, Any] = {}
        for flag, label in ((False, "without"), (True, "with")):
            rows = [e for e in edits if e["with_edits"] == flag]
            if not rows:
                continue
            cell = _cell(rows)
            cell["probe_non_2xx"] = sum(r["probe"]["non_2xx"] for r in rows)
            cell["probe_failures"] = sum(r["probe"]["failures"] for r in rows)
            cell["probe_p99_ms"] = median([r["probe"]["p99_ms"] for r in rows])
            cell["failed_requests"] = sum(
                r["non_2xx"] + r["socket_errors"] + r["probe"]["non_2xx"] + r["probe"]["failures"] for r in rows
            )
            if flag:
                live = [x for r in rows for x in r["edits"]["edit_to_live_ms"]]
                seen = [x for r in rows for x in r["edits"].get("edit_to_seen_ms", [])]
                rtt = [x for r in rows for x in r["edits"]["round_trip_ms"]]
                timings: dict[str, list[float]] = defaultdict(list)
                for r in rows:
                    for k, v in r["edits"]["server_timings_ms"].items():
                        if v is not None:
                            timings[k].append(v)
                cell["edits"] = sum(r["edits"]["count"] for r in rows)
                cell["edits_failed"] = sum(r["edits"]["failed"] for r in rows)
                cell["edit_to_live_ms"] = {
                    "median": median(live),
                    "p90": percentile(live, 90),
                    "p99": percentile(live, 99),
                    "max": max((x for x in live if x is not None), default=None),
                    "missing": sum(1 for x in live if x is None),
                    "n": len(live),
                }
                cell["edit_to_seen_ms"] = {
                    "median": median(seen),
                    "p90": percentile(seen, 90),
                    "p99": percentile(seen, 99),
                    "max": max((x for x in seen if x is not None), default=None),
                    "missing": sum(1 for x in seen if x is None),
                    "n": len(seen),
                }
                cell["edit_round_trip_ms"] = {"median": median(rtt), "p90": percentile(rtt, 90)}
                cell["edit_server_ms"] = {k: median(v) for k, v in timings.items()}
            w3[label] = cell
        if "with" in w3 and "without" in w3:
            w3["p99_with/without"] = ratio(w3["with"]["p99_ms"], w3["without"]["p99_ms"])
            w3["rps_with/without"] = ratio(w3["with"]["rps"], w3["without"]["rps"])
        s["w3"] = w3

    s["targets"] = _targets(s)
    s["targets_issue14"] = _targets_issue14(s, results)
    return s


def _targets_issue14(s: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's targets ("fast at every load"), each with its measured ratio and whether it is met. A target
    whose measurement is missing from this run is listed with met = None ("not measured")."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, ok: Any) -> None:
        out.append({"target": name, "value": value, "goal": goal, "met": None if value is None else bool(ok(value))})

    best = s.get("w1_best", {})
    base = ((results["meta"].get("baseline") or {}).get("w1") or {}).get("morphserve_v1", {})
    base_src = (results["meta"].get("baseline") or {}).get("date") or "baseline"
    gpu = results["meta"]["mode"] == "gpu"
    for c in [] if gpu else ["1", "16", "64"]:
        b = best.get(c)
        who = f"{label(b['morphserve'])} vs best peer {label(b['peer'])}" if b else "morphserve vs best peer"
        if c == "1":
            add(f"W1 c=1 req/s, {who}", ratio(b["rps"], b["peer_rps"]) if b else None, ">= 0.9x", lambda v: v >= 0.9)
            add(
                f"W1 c=1 p50, {who}", ratio(b["p50_ms"], b["peer_p50_ms"]) if b else None, "<= 1.1x", lambda v: v <= 1.1
            )
            continue
        add(f"W1 c={c} req/s, {who}", ratio(b["rps"], b["peer_rps"]) if b else None, ">= 1.5x", lambda v: v >= 1.5)
        add(
            f"W1 c={c} req/s, {label(b['morphserve']) if b else 'morphserve'} vs naive FastAPI",
            ratio(b["rps"], b["naive_rps"]) if b else None,
            ">= 2x",
            lambda v: v >= 2.0,
        )
        prev = (base.get(c) or {}).get("p99_ms")
        add(
            f"W1 c={c} p99, {label(b['morphserve']) if b else 'morphserve'} vs morphserve /v1 before ({base_src}: "
            f"{prev if prev is not None else '-'} ms)",
            ratio(b["p99_ms"], prev) if b else None,
            "<= 1x (no worse)",
            lambda v: v <= 1.0,
        )
    mlp = s.get("w2", {}).get("mlp", {})
    for c, block in mlp.items():
        add(
            f"W2 mlp c={c} req/s, OIP binary vs OIP JSON",
            block["ratios"].get("rps oip_binary/oip_json"),
            ">= 2x",
            lambda v: v >= 2.0,
        )
    if not gpu and not mlp:
        add("W2 mlp c=64 req/s, OIP binary vs OIP JSON", None, ">= 2x", None)
    w3 = s.get("w3", {}).get("with")
    conc = results["meta"]["settings"].get("edit_concurrency")
    e2l = (w3 or {}).get("edit_to_live_ms", {})
    add(f"W3 edit-to-live median under c={conc} (ms)", e2l.get("median"), "<= 50 ms", lambda v: v <= 50)
    add(f"W3 edit-to-live p99 under c={conc} (ms)", e2l.get("p99"), "<= 150 ms", lambda v: v <= 150)
    unseen = (w3 or {}).get("edit_to_seen_ms", {}).get("missing", 0)
    failed = None if w3 is None else w3["failed_requests"] + w3["edits_failed"] + e2l.get("missing", 0) + unseen
    add("W3 failed requests + failed edits + edits never seen live", failed, "= 0", lambda v: v == 0)
    for model, per_c in s.get("gpu", {}).items():
        block = per_c.get("32")
        for key in ("rps oip_binary/limit(batch 32)", "rps v1_json/limit(batch 32)"):
            add(f"GPU {model} c=32 {key}", (block or {}).get("ratios", {}).get(key), ">= 0.9x", lambda v: v >= 0.9)
    return out


def _targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets on this machine, each with the measured value and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, met: bool | None) -> None:
        out.append({"target": name, "value": value, "goal": goal, "met": met})

    r64 = s.get("w1_ratios", {}).get("64")
    if r64:
        for key, goal, need in (
            ("rps morphserve_v1/naive", ">= 2", 2.0),
            ("rps morphserve_v1/litserve", ">= 1.5", 1.5),
        ):
            v = r64.get(key)
            add(f"W1 c=64 {key}", v, goal, None if v is None else v >= need)
        for key in ("p99 morphserve_v1/naive", "p99 morphserve_v1/litserve"):
            v = r64.get(key)
            add(f"W1 c=64 {key}", v, "<= 1", None if v is None else v <= 1.0)
    for model, per_c in s.get("w2", {}).items():
        if model == "mlp":  # issue 6's 3x was for the images; the mlp's binary target is issue 14's (2x)
            continue
        for c, block in per_c.items():
            for key in ("rps oip_binary/v1_json", "rps oip_binary/oip_json"):
                v = block["ratios"].get(key)
                add(f"W2 {model} c={c} {key}", v, ">= 3", None if v is None else v >= 3.0)
    w3 = s.get("w3", {})
    if "p99_with/without" in w3:
        v = w3["p99_with/without"]
        add("W3 p99 with edits / without", v, "<= 1.25", None if v is None else v <= 1.25)
    if "with" in w3:
        errors = (
            w3["with"]["non_2xx"]
            + w3["with"]["socket_errors"]
            + w3["with"]["probe_non_2xx"]
            + w3["with"]["edits_failed"]
        )
        add("W3 non-2xx + socket errors + failed edits during edits", errors, "= 0", errors == 0)
        v = w3["with"].get("edit_to_live_ms", {}).get("median")
        add("W3 edit-to-live median (ms)", v, "<= 50", None if v is None else v <= 50)
    return out


# ---------------------------------------------------------------------------------------------- plots
def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    made: list[Path] = []
    gpu = results["meta"]["mode"] == "gpu"
    prefix = "gpu_" if gpu else ""
    title_sfx = f" ({results['meta']['mode']} run, {results['meta']['machine'].get('nproc', '?')} cores)"

    def sweep(cells: dict[str, dict[str, Any]], limit: dict[str, float | None], title: str, path: Path) -> None:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for t in ordered(cells):
            cs = sorted((int(c), v) for c, v in cells[t].items())
            xs = [c for c, _ in cs]
            ax1.plot(xs, [v["rps"] for _, v in cs], marker="o", label=label(t))
            ax2.plot(xs, [v["p99_ms"] for _, v in cs], marker="o", label=label(t))
        for b, style in (("1", ":"), (str(results["meta"]["settings"]["max_batch_size"]), "--")):
            if limit.get(b):
                ax1.axhline(limit[b], color="grey", linestyle=style, label=f"limit, batch {b} (rows/s, no HTTP)")
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("concurrent connections")
            ax.grid(True, which="both", alpha=0.3)
        ax1.set_ylabel("requests/s (median)")
        ax2.set_ylabel("p99 latency, ms (median)")
        ax1.legend(fontsize=8)
        ax1.set_title("throughput")
        ax2.set_title("tail latency")
        fig.suptitle(title + title_sfx)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    if "w1" in s:
        sweep(
            s["w1"],
            s["limit_rows_per_s"].get("mlp", {}),
            "mlp, one sample per JSON request",
            out / "throughput_vs_concurrency.png",
        )
    for model, per_c in s.get("gpu", {}).items():
        cells: dict[str, dict[str, Any]] = defaultdict(dict)
        for c, block in per_c.items():
            for t, cell in block["cells"].items():
                cells[t][c] = cell
        sweep(
            dict(cells),
            s["limit_rows_per_s"].get(model, {}),
            f"GPU: {model}, one image per request",
            out / f"{prefix}throughput_{model}.png",
        )

    if "w2" in s:
        models = list(s["w2"])
        fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            for c, block in s["w2"][model].items():
                ts = ordered(block["cells"])
                vals = [block["cells"][t]["rps"] for t in ts]
                bars = ax.bar(range(len(ts)), vals, color=[f"C{ORDER.index(t) if t in ORDER else 9}" for t in ts])
                ax.bar_label(bars, fmt="%.0f", fontsize=8)
                ax.set_xticks(range(len(ts)), [label(t).replace("morphserve ", "morphserve\n") for t in ts], fontsize=8)
                shape = "784 floats" if model == "mlp" else "3x32x32"
                ax.set_title(f"{model} {shape}, one sample per request, c={c}")
            lim = s["limit_rows_per_s"].get(model, {}).get("1")
            if lim:
                ax.axhline(lim, color="grey", linestyle=":", label="limit, batch 1")
                ax.legend(fontsize=8)
            ax.set_ylabel("requests/s (median)")
            ax.grid(True, axis="y", alpha=0.3)
        fig.suptitle("binary vs JSON bodies" + title_sfx)
        fig.tight_layout()
        path = out / "images_binary_vs_json.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    series = results.get("series", {})
    if series:
        fig, axes = plt.subplots(
            len(series), 1, figsize=(12, 3.2 * len(series)), sharex=True, sharey=True, squeeze=False
        )
        for ax, run in zip(axes[:, 0], [k for k in ("without", "with") if k in series], strict=False):
            ser = series[run]
            pts = ser["probe"]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                ".",
                markersize=2,
                color="C0",
                label="probe request latency (one client beside the load)",
            )
            for i, (t, op, rtt, _v) in enumerate(ser["edits"]):
                ax.axvspan(
                    t,
                    t + rtt / 1e3,
                    color="C2" if op == "insert" else "C3",
                    alpha=0.3,
                    linewidth=0,
                    label=(f"{op} request in flight" if i < 2 else None),
                )
            ax.set_yscale("log")
            ax.set_ylabel("latency, ms")
            ax.set_title(f"mlp at concurrency {results['meta']['settings']['edit_concurrency']}: {run} edits")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, loc="upper right")
        axes[-1, 0].set_xlabel("seconds since the run started")
        fig.suptitle("latency during live edits" + title_sfx)
        fig.tight_layout()
        path = out / "latency_during_edits.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


# ---------------------------------------------------------------------------------------------- markdown
def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _peer_settings(results: dict[str, Any]) -> str:
    """One line on how each peer batched, from the settings and what TorchServe's management API reported."""
    st = results["meta"]["settings"]
    kinds = {s["kind"] for s in results.get("servers", [])}
    bits = []
    if "litserve" in kinds:
        bits.append(
            f"LitServe max_batch_size={st['max_batch_size']}, batch_timeout={st['max_batch_delay_ms']} ms, "
            "1 inference worker"
        )
    ts = next(
        (s["reported"] for s in results.get("servers", []) if s["kind"] == "torchserve" and s.get("reported")), None
    )
    if ts:
        bits.append(
            f"TorchServe batchSize={ts['batchSize']}, maxBatchDelay={ts['maxBatchDelay']} ms, "
            f"{ts['workers_ready']} worker(s) (read back from its management API)"
        )
    if "ray" in kinds:
        bits.append(
            f"Ray Serve @serve.batch(max_batch_size={st['max_batch_size']}, batch_wait_timeout_s="
            f"{st['max_batch_delay_ms'] / 1000:g}), 1 replica, max_ongoing_requests=256"
        )
    return "; ".join(bits)


def markdown(results: dict[str, Any], plots: list[Path]) -> str:
    meta, s = results["meta"], results["summary"]
    st = meta["settings"]
    m = meta["machine"]
    v = meta["versions"]
    reps = st["reps"]
    gpu = meta["mode"] == "gpu"
    lines: list[str] = []
    add = lines.append
    title = "GPU benchmark" if gpu else "Benchmark results"
    add(f"## {title} ({meta['mode']} run, {meta['date']})")
    add("")
    if meta["status"] != "ok":
        add(f"**The run did not complete: {meta['status']}.** Tables below hold what was measured.")
        add("")
    add(f"- **Command:** `{meta['command']}` ({meta['wall_s']:.0f} s)")
    add(
        f"- **Machine:** {m.get('cpu_model')} ({', '.join(m.get('cpu_flags_simd', [])) or 'no AVX2'}), "
        f"nproc {m.get('nproc')}, kernel {m.get('kernel', '?')}"
    )
    if meta.get("loadavg"):
        add(
            f"- **Load average (1/5/15 min)** at the start: {meta['loadavg']['start']}, at the end: "
            f"{meta['loadavg']['end']} (above ~0.5 at the start, something else was running: read ratios, "
            "not absolute numbers)"
        )
    mem = [ln for ln in str(m.get("free", "")).splitlines() if ln.startswith("Mem:")]
    if mem:
        add(f"- **Memory (free -h):** `{' '.join(mem[0].split())}`")
    if gpu and results.get("limits"):
        add(f"- **GPU:** {results['limits'][0].get('device_name')}")
    if gpu or meta.get("dtype", "float32") != "float32":
        ms = next(
            (
                x["reported"].get("compute_dtype")
                for x in results.get("servers", [])
                if x["kind"] == "morphserve" and x.get("reported", {}).get("compute_dtype")
            ),
            None,
        )
        add(
            f"- **Compute dtype:** {meta.get('dtype', 'float32')} (morphserve, the naive peer and the limit)"
            + (f"; morphserve reports compute dtype `{ms}`" if ms else "")
        )
    add(
        f"- **Software:** Python {v['python']}, torch {v['torch']}, numpy {v['numpy']}, FastAPI {v['fastapi']}, "
        f"uvicorn {v['uvicorn']}, LitServe {v['litserve']}, {v['wrk']}"
        + (f", TorchServe {v['torchserve']} ({v.get('java', 'java ?')})" if "torchserve" in v else "")
        + (f", Ray Serve {v['ray']}" if "ray" in v else "")
        + "; TorchServe and Ray Serve run from their own venvs "
        "(`.venv-peers/`, torch 2.13.0 CPU)"
    )
    peers = _peer_settings(results)
    if peers:
        add(f"- **Peers' batching:** {peers}")
    if meta.get("unavailable_peers"):
        add(
            "- **Left out (could not be set up):** "
            + "; ".join(f"{k}: {why}" for k, why in meta["unavailable_peers"].items())
        )
    if st.get("morphserve_args") or st.get("workers"):
        add(
            f"- **morphserve flags:** `{' '.join(st.get('morphserve_args') or []) or '(none)'}` for every start"
            + (f"; plus a `--workers {st['workers']}` variant at c={st['workers_at']}" if st.get("workers") else "")
        )
    add(
        f"- **Settings:** torch threads {st['threads']} (OMP_NUM_THREADS, every server and the limit), "
        f"max batch {st['max_batch_size']}, batch delay {st['max_batch_delay_ms']} ms (morphserve and the batching "
        "peers), "
        f"wrk {st['wrk_threads']} thread(s), closed loop, keep-alive; {st['duration']} s per run after a "
        f"{st['warmup']} s warm-up; **{reps} repetition(s) per cell, medians**; servers alternate within each "
        f"repetition, each repetition starts fresh servers"
    )
    sizes = meta.get("payload_bytes", {})
    if sizes:
        add(
            "- **Bodies (one sample):** "
            + "; ".join(f"{mod}: " + ", ".join(f"{k} {b:,} B" for k, b in d.items()) for mod, d in sizes.items())
        )
    add("")

    lim = s.get("limit_rows_per_s", {})
    if "w1" in s:
        add("### Workload 1: `mlp` (784-512-512-10), one sample per JSON request")
        add("")
        cs = sorted({int(c) for cells in s["w1"].values() for c in cells})
        add("| server / route | " + " | ".join(f"c={c} req/s | p50 ms | p99 ms | non-2xx" for c in cs) + " |")
        add("|---|" + "---:|" * (4 * len(cs)))
        for t in ordered(s["w1"]):
            cells = s["w1"][t]
            row = []
            for c in cs:
                cell = cells.get(str(c), {})
                row += [
                    _f(cell.get("rps"), 0),
                    _f(cell.get("p50_ms"), 2),
                    _f(cell.get("p99_ms"), 2),
                    _f(cell.get("non_2xx")),
                ]
            add(f"| {label(t)} | " + " | ".join(row) + " |")
        add("")
        keys = list(dict.fromkeys(k for r in s["w1_ratios"].values() for k in r))
        if keys:
            add("| ratio | " + " | ".join(f"c={c}" for c in cs) + " |")
            add("|---|" + "---:|" * len(cs))
            for k in keys:
                add(f"| {k} | " + " | ".join(_x(s["w1_ratios"][str(c)].get(k)) for c in cs) + " |")
            add("")
        if s.get("w1_best"):
            add(
                "Best peer and best morphserve /v1 configuration per concurrency (what the issue-14 targets compare): "
                + "; ".join(
                    f"c={c}: {label(b['peer'])} {_f(b['peer_rps'], 0)} req/s vs {label(b['morphserve'])} "
                    f"{_f(b['rps'], 0)} req/s"
                    for c, b in s["w1_best"].items()
                )
                + "."
            )
            add("")

    for key, heading in (
        ("w2", "Workload 2: binary vs JSON bodies, one sample per request (mlp; images 3x32x32)"),
        ("gpu", "GPU: one image per request"),
    ):
        if key not in s:
            continue
        add(f"### {heading}")
        add("")
        add("| model | c | server / route | req/s | p50 ms | p99 ms | non-2xx |")
        add("|---|---:|---|---:|---:|---:|---:|")
        for model, per_c in s[key].items():
            for c, block in per_c.items():
                for t, cell in block["cells"].items():
                    add(
                        f"| {model} | {c} | {label(t)} | {_f(cell['rps'], 0)} | {_f(cell['p50_ms'], 2)} | "
                        f"{_f(cell['p99_ms'], 2)} | {_f(cell['non_2xx'])} |"
                    )
        add("")
        rkeys = list(dict.fromkeys(k for per_c in s[key].values() for b in per_c.values() for k in b["ratios"]))
        add("| model | c | " + " | ".join(rkeys) + " |")
        add("|---|---:|" + "---:|" * len(rkeys))
        for model, per_c in s[key].items():
            for c, block in per_c.items():
                add(f"| {model} | {c} | " + " | ".join(_x(block["ratios"].get(k)) for k in rkeys) + " |")
        add("")

    if "w3" in s:
        w3 = s["w3"]
        add(
            f"### Workload 3: edits under load (`mlp`, concurrency {st['edit_concurrency']}, "
            f"{st['edit_duration']} s, one edit per second alternating identity insert / remove)"
        )
        add("")
        add("| run | req/s | p50 ms | p99 ms | non-2xx | socket errors | probe p99 ms | probe non-2xx |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|")
        for run in ("without", "with"):
            if run in w3:
                c = w3[run]
                add(
                    f"| {run} edits | {_f(c['rps'], 0)} | {_f(c['p50_ms'], 2)} | {_f(c['p99_ms'], 2)} | "
                    f"{c['non_2xx']} | {c['socket_errors']} | {_f(c['probe_p99_ms'], 2)} | "
                    f"{c['probe_non_2xx']} |"
                )
        add("")
        if "with" in w3:
            c = w3["with"]
            e2l = c["edit_to_live_ms"]
            add(
                f"- p99 with / without edits: **{_x(w3.get('p99_with/without'))}**; "
                f"requests/s with / without: {_x(w3.get('rps_with/without'))}"
            )
            add(
                f"- edits: {c['edits']} sent, {c['edits_failed']} failed; **edit-to-live** (edit sent -> the "
                f"server swapped the new version in, its `live_at`): median **{_f(e2l['median'], 1)} ms**, p90 "
                f"{_f(e2l['p90'], 1)} ms, p99 **{_f(e2l.get('p99'), 1)} ms**, max {_f(e2l['max'], 1)} ms "
                f"({e2l['missing']} without a time); failed requests during edits (non-2xx, socket errors, probe "
                f"failures): {c.get('failed_requests', '-')}"
            )
            seen = c.get("edit_to_seen_ms")
            if seen:
                add(
                    f"- edit-to-seen (edit sent -> the probe's first response from the new version; edit-to-live "
                    f"plus one or two probe round trips): median {_f(seen['median'], 1)} ms, p90 "
                    f"{_f(seen['p90'], 1)} ms, p99 {_f(seen.get('p99'), 1)} ms, max {_f(seen['max'], 1)} ms "
                    f"({seen['missing']} never seen by the probe)"
                )
            add(
                f"- edit request round trip: median {_f(c['edit_round_trip_ms']['median'], 1)} ms, p90 "
                f"{_f(c['edit_round_trip_ms']['p90'], 1)} ms; server-side split (median ms): "
                + ", ".join(f"{k} {_f(x, 2)}" for k, x in c["edit_server_ms"].items())
            )
            add(
                "- the probe is one extra client beside wrk's connections, inferring back to back on the /v1 route "
                "in both runs; it checks that every edit goes live and that no request fails"
            )
        add("")

    if lim:
        add("### Workload 4: the limit (in-process forward, `torch.inference_mode`, no HTTP)")
        add("")
        bs = sorted({int(b) for t in lim.values() for b in t})
        add("| model | " + " | ".join(f"batch {b} rows/s" for b in bs) + " |")
        add("|---|" + "---:|" * len(bs))
        for model, t in lim.items():
            add(f"| {model} | " + " | ".join(_f(t.get(str(b)), 0) for b in bs) + " |")
        add("")

    titles = {"edit_cost.py": "Edit cost vs graph size", "durability.py": "Durability cost (fsync on vs off)"}
    for name, ec in (results.get("external") or {}).items():
        add(f"### {titles.get(name, name)} (`scripts/bench/{name}`)")
        add("")
        if ec.get("skipped"):
            add(f"Not measured: {ec['skipped']}.")
        elif ec.get("exit_code"):
            add(f"`{ec['command']}` failed (exit {ec['exit_code']}); see results.json.")
        else:
            add(f"`{ec['command']}` ({ec['seconds']:.0f} s):")
            add("")
            add(ec.get("table", ""))
        add("")

    if s.get("targets_issue14"):
        add("### Targets (issue 14: fast at every load)")
        add("")
        base = meta.get("baseline")
        add(
            "Best peer = the peer with the most requests/s at that concurrency in this run; morphserve = its best /v1 "
            "JSON configuration in this run (`--workers N` counts). p99 is compared to "
            + (f"`{base['source']}` ({base['date']}, `{base['command']}`)." if base else "no baseline (none given).")
        )
        add("")
        add("| target | measured | goal | met |")
        add("|---|---:|---|---|")
        for t in s["targets_issue14"]:
            val = t["value"]
            shown = "not measured" if val is None else (f"{val:.3f}" if isinstance(val, float) else _f(val))
            add(
                f"| {t['target']} | {shown} | {t['goal']} | "
                f"{'yes' if t['met'] else '-' if t['met'] is None else '**no**'} |"
            )
        add("")

    if s.get("targets"):
        add("### Targets (issue 6)")
        add("")
        add("| target | measured | goal | met |")
        add("|---|---:|---|---|")
        for t in s["targets"]:
            val = t["value"]
            shown = _f(val, 3) if isinstance(val, float) else _f(val)
            add(
                f"| {t['target']} | {shown} | {t['goal']} | "
                f"{'yes' if t['met'] else '-' if t['met'] is None else '**no**'} |"
            )
        add("")

    if plots:
        add("### Plots")
        add("")
        for p in plots:
            add(f"![{p.stem.replace('_', ' ')}]({p.name})")
        add("")
    if not gpu:
        add("### GPU")
        add("")
        add(
            "Not measured here: this machine has no GPU. `python scripts/bench/run.py --gpu` runs morphserve vs "
            "naive vs the limit on CUDA (convnet width 1 and resnet, batch sizes up to 64) and writes "
            "GPU_RESULTS.md."
        )
        add("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="directory for RESULTS.md and plots (default: beside)")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args()
    results = json.loads(args.results.read_text())
    results["summary"] = summarise(results)
    out = args.out or args.results.parent
    made = [] if args.no_plots else plots(results, out)
    name = "GPU_RESULTS.md" if results["meta"]["mode"] == "gpu" else "RESULTS.md"
    (out / name).write_text(markdown(results, made))
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
