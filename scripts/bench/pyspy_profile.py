"""Where does morphserve's time go under load? py-spy samples a server while wrk drives one route.

Starts morphserve (same settings as run.py), drives one route with wrk at a given concurrency, records the server
with `py-spy record` (all threads, non-blocking, idle frames left out so the samples are CPU time), and writes a
flamegraph SVG plus the collapsed stacks; then prints the top functions by self and inclusive share of samples,
per thread (the event loop vs the device worker).

    python scripts/bench/pyspy_profile.py [--route v1|oip_json|oip_binary] [--model mlp] [--concurrency 64] \
        [--seconds 15] [--native] [--out DIR]

Needs `pip install py-spy` and permission to ptrace the server (root, or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m['fn']} ({file})"


_NOTABLE = (
    "app/",
    "json",
    "orjson",
    "numpy",
    "uuid",
    "anyio",
    "pydantic",
    "prometheus",
    "solve_dependencies",
    "_match",
    "torch/nn",
)


def summarise(collapsed: Path, top: int = 20) -> str:
    """Thread split, then the top functions by inclusive share (morphserve's own code and the usual suspects:
    JSON, numpy, thread hand-offs, ids, metrics, routing, torch) and by self share, from py-spy's raw output."""
    threads: Counter[str] = Counter()
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        name = frames[0].split(":", 1)[-1].strip() if ":" in frames[0] else frames[0]
        threads["AnyIO thread pool" if "AnyIO worker" in name else name] += int(n)
        funcs = [_short(f) for f in frames[1:]]
        total += int(n)
        if funcs:
            self_c[funcs[-1]] += int(n)
        for f in set(funcs):
            incl_c[f] += int(n)
    total = total or 1
    out = [
        f"{total} non-idle samples; by thread: "
        + ", ".join(f"{t} {100 * c / total:.0f}%" for t, c in threads.most_common())
    ]
    out.append("\ntop inclusive (share of all non-idle samples; framework plumbing left out):")
    shown = 0
    for f, c in incl_c.most_common():
        if (
            any(k in f for k in _NOTABLE)
            and "(app/morphserve/cli/" not in f
            and not f.endswith("(app/morphserve/__main__.py)")
            and "Middleware" not in f
        ):
            out.append(f"  {100 * c / total:5.1f}%  {f}")
            shown += 1
            if shown >= top:
                break
    out.append("\ntop self:")
    for f, c in self_c.most_common(top):
        out.append(f"  {100 * c / total:5.1f}%  {f}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--route", choices=["v1", "oip_json", "oip_binary"], default="v1")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS)")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument(
        "--native", action="store_true", help="py-spy --native: C/C++ frames too (pauses the server at each sample)"
    )
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "morphserve-profile")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(h.PY).parent / "py-spy")
    if not Path(pyspy).exists():
        print("error: py-spy is not installed: pip install py-spy", file=sys.stderr)
        return h.DEP_MISSING
    wrk = h.ensure_wrk()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="morphserve-profile-"))

    import torch

    from morphserve.graph import load_zoo

    version = load_zoo(args.model)
    x = h.sample_input([1, *version.inputs[0].shape[1:]])
    ref = version.run(torch.from_numpy(x))[0].numpy()
    payloads = h.write_payloads(x, work / "bodies", version.inputs[0].name)
    target = h.TARGETS[
        {"v1": "morphserve_v1", "oip_json": "morphserve_oip_json", "oip_binary": "morphserve_oip_binary"}[args.route]
    ]
    p = payloads[target.payload]
    cfg = h.ServerConfig("morphserve", args.model, threads=args.threads)
    stem = args.out / f"profile-{args.model}-{args.route}-c{args.concurrency}"
    with h.Server(cfg, work) as s:
        h.check_target(s, target, p, ref)
        url = s.url + target.path(args.model)
        h.run_wrk(wrk, url, p, args.concurrency, 2)  # warm-up
        result: dict[str, object] = {}
        load = threading.Thread(
            target=lambda: result.update(h.run_wrk(wrk, url, p, args.concurrency, args.seconds + 2)), daemon=True
        )
        load.start()
        time.sleep(1)
        base = [
            pyspy,
            "record",
            "--pid",
            str(s.proc.pid),
            "--duration",
            str(args.seconds),
            "--rate",
            str(args.rate),
            "--threads",
            *(["--native"] if args.native else ["--nonblocking"]),
        ]  # --native must pause it
        rec = subprocess.run([*base, "--format", "raw", "-o", f"{stem}.txt"], capture_output=True, text=True)
        if rec.returncode != 0:
            raise SystemExit(f"py-spy failed (exit {rec.returncode}): {rec.stderr.strip()[-1000:]}")
        load.join()
        # A second recording for the flamegraph (py-spy writes one format per run).
        load = threading.Thread(
            target=lambda: h.run_wrk(wrk, url, p, args.concurrency, min(args.seconds, 8) + 2), daemon=True
        )
        load.start()
        time.sleep(1)
        subprocess.run(
            [*base[:5], str(min(args.seconds, 8)), *base[6:], "--format", "flamegraph", "-o", f"{stem}.svg"],
            check=True,
            capture_output=True,
        )
        load.join()
    text = summarise(Path(f"{stem}.txt"))
    header = (
        f"morphserve {args.model} {args.route} at concurrency {args.concurrency}: {result.get('rps')} req/s, "
        f"p50 {result.get('p50_ms')} ms, p99 {result.get('p99_ms')} ms (under py-spy)"
    )
    Path(f"{stem}.summary.txt").write_text(header + "\n" + text + "\n")
    print(header)
    print(text)
    print(f"\nwrote {stem}.svg, {stem}.txt, {stem}.summary.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
