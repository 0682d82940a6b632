-- wrk script: POST one fixed body (read from a file, so it may be binary) and print a JSON summary.
--
--   wrk -t1 -c16 -d10s -s post.lua URL -- BODY_FILE CONTENT_TYPE [INFERENCE_HEADER_CONTENT_LENGTH]
--
-- init() runs in every thread's Lua state before wrk formats the request, so the body and headers set here
-- become the one pre-built request each connection sends. done() runs once, after the run, and prints one line
-- `BENCH_JSON {...}` (latencies in microseconds) that scripts/bench/harness.py parses.

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s post.lua URL -- BODY_FILE CONTENT_TYPE [HEADER_LENGTH]")
   end
   local f = assert(io.open(path, "rb"))
   wrk.body = f:read("*a")
   f:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = args[2] or "application/json"
   if args[3] ~= nil and args[3] ~= "" and args[3] ~= "-" then
      wrk.headers["Inference-Header-Content-Length"] = args[3]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.stdev, latency.max,
      latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency:percentile(99.9)))
end
