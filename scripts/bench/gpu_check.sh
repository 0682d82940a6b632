#!/usr/bin/env bash
# The GPU check of issues 14, 26 and 29, one prepared script for a lent GPU machine, <= 10 minutes in all (each step
# bounded, and all of them by GPU_CHECK_BUDGET_S, 580 by default):
#   1. the CUDA tests:  pytest -m cuda (issue 26: CUDA shared memory through a real server, the compile of a placed
#      version on the device, tests/cuda/test_cuda_shm.py)                 (<= 150 s)
#   2. scripts/bench/run.py --gpu --dtype float32, then --dtype float16: convnet (width 1) and resnet, one image per
#      request at concurrency 1/16/32/64 (the server's batches up to 64), morphserve OIP binary and /v1 JSON vs the
#      naive peer vs the in-process limit at batch 1/16/32/64; edits under load on the device (mlp at c=64:
#      edit-to-live, the server's swap time)                              (<= 160 s each, ~120 s expected)
#   3. compiled vs eager on the device (issue 26): resnet and convnet placed on CUDA, inductor with a dynamic batch
#      (serving/compile.py's compile_version), forward time at batch 8 and 32, compile time  (<= 120 s)
#   4. fit jobs on the device (issue 29): scripts/bench/fit.py --quick --device cuda: the digits loop end to end,
#      serving p99 and the job's steps/s with and without traffic on digits and resnet's head  (<= 100 s)
#   5. docs/bench/GPU_RESULTS.md: the runs' reports, the tests' summary, the machine (and the same under $OUT).
#
#   bash scripts/bench/gpu_check.sh                  # from the repository root; PYTHON=python3 by default
#
# A dtype the server refuses (FP16 serving not there yet) fails that run with a clear message in GPU_RESULTS.md,
# and the other runs still go ahead. On the device machine (no network) carry what it lacks:
#   bash scripts/bench/gpu_prepare.sh               # here: wheels into .whl/, wrk and its libraries into .gpu-tools/
# and name `.whl` and `.gpu-tools` in the run's carry; this script installs them (to /tmp/site) when present.
# On the device tool: run(command="bash scripts/bench/gpu_check.sh", carry=[".whl", ".gpu-tools"], timeout_s=600);
# $OUT gets GPU_RESULTS.md, gpu_results_float32.json, gpu_results_float16.json and both runs' logs (5 files).
# Exit: 0 all ran and passed, 1 something failed (see GPU_RESULTS.md), 2 no CUDA device.
# To check this script's steps without a GPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_RESULTS=/tmp/x bash scripts/bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# The package's source root (app/morphserve) and the repository (tests), for pytest and the in-process steps.
export PYTHONPATH=$PWD/app:$PWD${PYTHONPATH:+:$PYTHONPATH}
RESULTS=${GPU_CHECK_RESULTS:-docs/bench}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
mkdir -p "$RESULTS"
DEST=${OUT:-}
WORK=$(mktemp -d /tmp/gpu-check-XXXXXX)
T0=$(date +%s)
log() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*" >&2; }
# The device tool runs one command for at most 600 s: each step gets its own limit or what is left of the budget
# (keeping 20 s to write the report), so the report is always written; a step with under 10 s left is cut short.
BUDGET=${GPU_CHECK_BUDGET_S:-580}
within() { local left=$(( BUDGET - 20 - ($(date +%s) - T0) )); [ "$left" -lt "$1" ] && echo $(( left > 10 ? left : 10 )) || echo "$1"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  log "installing the carried wheels (.whl/) into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { log "error: the carried wheels did not install"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! command -v wrk >/dev/null && [ -x .gpu-tools/wrk ]; then
  export PATH=$PWD/.gpu-tools:$PATH LD_LIBRARY_PATH=$PWD/.gpu-tools/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "error: no CUDA device (torch.cuda.is_available() is False): this script is for a GPU machine"
  exit 2
fi
"$PY" -c "import fastapi, uvicorn, pydantic, pydantic_settings, orjson, graphviz" 2>"$WORK/imports.txt" \
  || { log "error: morphserve's dependencies are missing (carry them: scripts/bench/gpu_prepare.sh):"; cat "$WORK/imports.txt" >&2; exit 1; }
command -v wrk >/dev/null || { log "error: wrk is missing (carry it: scripts/bench/gpu_prepare.sh)"; exit 1; }

status=0
log "1/5 pytest -m cuda"
# Only the files that mark CUDA tests: collecting the whole suite would import what this machine lacks.
mapfile -t cuda_files < <(grep -rlE "mark\.cuda|pytestmark.*cuda" tests --include='*.py' | sort)
if [ ${#cuda_files[@]} -eq 0 ]; then
  echo "no file under tests/ marks a test with @pytest.mark.cuda" > "$WORK/cuda_tests.txt"; rc=5
else
  timeout "$(within 150)" "$PY" -m pytest -m cuda -q -p no:cacheprovider "${cuda_files[@]}" 2>&1 | tail -n 40 > "$WORK/cuda_tests.txt"
  rc=${PIPESTATUS[0]}
fi
case $rc in
  0) tests="passed" ;;
  5) tests="no test is marked cuda yet (pytest exit 5)" ;;
  124) tests="**timed out after 150 s**"; status=1 ;;
  *) tests="**failed (pytest exit $rc)**"; status=1 ;;
esac
log "   cuda tests: $tests"

for dtype in float32 float16; do
  log "2/5 run.py --gpu --dtype $dtype"
  # SIGINT at the limit: run.py then writes what it measured (KeyboardInterrupt), and the report says so
  timeout -s INT -k 20 "$(within 160)" "$PY" scripts/bench/run.py --gpu --device "$DEVICE" --dtype "$dtype" --reps 1 --duration 3 --edit-duration 8 \
    --wrk-threads 4 --no-plots --out "$WORK/$dtype" > "$WORK/run_$dtype.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "$rc" > "$WORK/rc_$dtype"
  log "   exit $rc"
done

log "3/5 compiled vs eager on $DEVICE (resnet, convnet; batch 8, 32)"
timeout -k 10 "$(within 120)" "$PY" - "$DEVICE" > "$WORK/compile.json" 2> "$WORK/compile.log" <<'COMPILE'
import json, sys, time
import torch
from morphserve.graph import load_zoo
from morphserve.serving.compile import batch_sizes, compile_version, preload
from morphserve.serving.placement import Placement
device = torch.device(sys.argv[1])
preload()
rows = []
for name in ("resnet", "convnet"):
    v = load_zoo(name)
    placed = Placement(device).prepare(v)
    t0 = time.perf_counter()
    compiled = compile_version(v, placed, "default", sizes=batch_sizes(32))
    compile_s = time.perf_counter() - t0
    for b in (8, 32):
        x = torch.randn(b, *v.inputs[0].shape[1:], device=device)  # outside inference mode, as the worker's batches
        with torch.inference_mode():
            best = {}
            for _ in range(3):
                for label, f in (("eager", placed), ("compiled", compiled)):
                    f(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    for _ in range(20):
                        f(x)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    ms = (time.perf_counter() - t) / 20 * 1e3
                    best[label] = min(best.get(label, ms), ms)
            rows.append({"model": name, "batch": b, "eager_ms": round(best["eager"], 3),
                         "compiled_ms": round(best["compiled"], 3), "speedup": round(best["eager"] / best["compiled"], 2),
                         "compile_s": round(compile_s, 1)})
print(json.dumps(rows))
COMPILE
rc=$?
[ $rc -eq 0 ] || status=1
echo "$rc" > "$WORK/rc_compile"
log "   exit $rc"

log "4/5 fit jobs on $DEVICE (issue 29): scripts/bench/fit.py --quick --device $DEVICE"
# The digits loop end to end, then serving p99 and steps/s with and without a job on digits and resnet's head.
timeout -s INT -k 10 "$(within 100)" "$PY" scripts/bench/fit.py --quick --device "$DEVICE" --out "$WORK/fit" > "$WORK/fit.log" 2>&1
rc=$?
[ $rc -eq 0 ] || status=1
echo "$rc" > "$WORK/rc_fit"
log "   exit $rc"

log "5/5 writing $RESULTS/GPU_RESULTS.md"
"$PY" - "$WORK" "$tests" "$RESULTS" <<'EOF'
import json, pathlib, subprocess, sys, time
work, tests, results = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() or "?"
except OSError:
    smi = "no nvidia-smi (not a GPU machine: GPU_CHECK_DEVICE=cpu)"
import torch
lines = ["# GPU results (issues 14, 26 and 29)", "",
         f"`bash scripts/bench/gpu_check.sh`, {time.strftime('%Y-%m-%d %H:%M:%S %z')}: {smi}; torch {torch.__version__}",
         "", "## CUDA tests (`pytest -m cuda`)", "", f"Result: {tests}.", "", "```",
         (work / "cuda_tests.txt").read_text().strip(), "```", ""]
for dtype in ("float32", "float16"):
    rc = (work / f"rc_{dtype}").read_text().strip()
    lines += [f"## `scripts/bench/run.py --gpu --dtype {dtype}` (exit {rc})", ""]
    md = work / dtype / "GPU_RESULTS.md"
    if md.exists():
        lines += ["#" + ln if ln.startswith("#") else ln for ln in md.read_text().splitlines()] + [""]
    if rc != "0":
        tail = (work / f"run_{dtype}.log").read_text(errors="replace").strip().splitlines()
        err = [ln for ln in tail if ln.startswith("error")] or tail[-15:]
        lines += ["**The run failed:**", "", "```", *err[-15:], "```", ""]
    src = work / dtype / "gpu_results.json"
    if src.exists():
        (results / f"gpu_results_{dtype}.json").write_text(src.read_text())
rc = (work / "rc_compile").read_text().strip()
lines += [f"## Compiled vs eager on the device (issue 26; exit {rc})", ""]
try:
    rows = json.loads((work / "compile.json").read_text())
    lines += ["| model | batch | eager ms | compiled ms | speedup | compile s |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['eager_ms']} | {r['compiled_ms']} | {r['speedup']} | {r['compile_s']} |"
              for r in rows]
except (OSError, ValueError):
    lines += ["**The run failed:**", "", "```", *(work / "compile.log").read_text(errors="replace").splitlines()[-15:], "```"]
rc = (work / "rc_fit").read_text().strip()
lines += ["", f"## Fit jobs on the device (issue 29; `scripts/bench/fit.py --quick`, exit {rc})", ""]
fit = work / "fit" / "FIT.md"
if fit.exists():
    lines += ["#" + ln if ln.startswith("#") else ln for ln in fit.read_text().splitlines()]
    (results / "gpu_fit.json").write_text((work / "fit" / "fit.json").read_text())
else:
    lines += ["**The run failed:**", "", "```", *(work / "fit.log").read_text(errors="replace").splitlines()[-15:], "```"]
lines.append("")
(results / "GPU_RESULTS.md").write_text("\n".join(lines) + "\n")
EOF
if [ -n "$DEST" ]; then
  cp "$RESULTS/GPU_RESULTS.md" "$DEST/" && cp "$RESULTS"/gpu_results_*.json "$RESULTS"/gpu_fit.json "$DEST/" 2>/dev/null
  cp "$WORK/run_float32.log" "$WORK/run_float16.log" "$WORK/compile.log" "$WORK/fit.log" "$DEST/" 2>/dev/null
fi
log "done (status $status): $RESULTS/GPU_RESULTS.md"
exit $status
