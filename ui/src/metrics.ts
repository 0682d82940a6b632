// The serving panel's numbers, from the server's Prometheus text at /metrics (the same numbers a Prometheus
// would scrape): requests/s and batch size from counter deltas between two scrapes, p50/p99 from the deltas of
// the per-model latency histogram (interpolated within a bucket, as PromQL's histogram_quantile does).

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    const value = m[3] === "+Inf" ? Infinity : Number(m[3]);
    out.push({ name: m[1]!, labels, value });
  }
  return out;
}

export interface Scrape {
  at: number; // ms
  samples: Sample[];
}

export interface ModelStats {
  model: string;
  rps: number;
  p50: number | null; // seconds
  p99: number | null;
  batch: number | null; // mean rows per batch
  queue: number;
  version: number;
  edits: number; // committed in the interval
}

function byModel(s: Scrape, name: string): Map<string, Sample[]> {
  const m = new Map<string, Sample[]>();
  for (const x of s.samples) {
    if (x.name !== name || x.labels.model === undefined) continue;
    const list = m.get(x.labels.model) ?? [];
    list.push(x);
    m.set(x.labels.model, list);
  }
  return m;
}

const total = (list: Sample[] | undefined, filter?: (s: Sample) => boolean) =>
  (list ?? []).filter((s) => !filter || filter(s)).reduce((a, s) => a + s.value, 0);

/** The `q` quantile of the observations between two cumulative histograms (bucket `le` -> count). */
export function quantile(q: number, before: Sample[], after: Sample[]): number | null {
  const prev = new Map(before.map((s) => [s.labels.le, s.value]));
  const buckets = after
    .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), count: s.value - (prev.get(s.labels.le) ?? 0) }))
    .sort((a, b) => a.le - b.le);
  const n = buckets.at(-1)?.count ?? 0;
  if (n <= 0) return null;
  const rank = q * n;
  let lower = 0;
  let below = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower; // beyond the last bound: report that bound
      const inBucket = b.count - below;
      return inBucket > 0 ? lower + ((b.le - lower) * (rank - below)) / inBucket : b.le;
    }
    lower = b.le;
    below = b.count;
  }
  return lower;
}

export function derive(prev: Scrape, cur: Scrape): ModelStats[] {
  const dt = Math.max(1e-3, (cur.at - prev.at) / 1000);
  const get = (s: Scrape, name: string) => byModel(s, name);
  const inf = [get(prev, "morphserve_inferences_total"), get(cur, "morphserve_inferences_total")] as const;
  const bsum = [get(prev, "morphserve_batch_size_sum"), get(cur, "morphserve_batch_size_sum")] as const;
  const bcnt = [get(prev, "morphserve_batch_size_count"), get(cur, "morphserve_batch_size_count")] as const;
  const lat = [get(prev, "morphserve_inference_duration_seconds_bucket"),
    get(cur, "morphserve_inference_duration_seconds_bucket")] as const;
  const edits = [get(prev, "morphserve_edits_total"), get(cur, "morphserve_edits_total")] as const;
  const queue = get(cur, "morphserve_queue_depth");
  const version = get(cur, "morphserve_model_version");
  const committed = (s: Sample) => s.labels.outcome === "committed";
  return [...version.keys()].sort().map((model) => {
    const batches = total(bcnt[1].get(model)) - total(bcnt[0].get(model));
    return {
      model,
      rps: Math.max(0, total(inf[1].get(model)) - total(inf[0].get(model))) / dt,
      p50: quantile(0.5, lat[0].get(model) ?? [], lat[1].get(model) ?? []),
      p99: quantile(0.99, lat[0].get(model) ?? [], lat[1].get(model) ?? []),
      batch: batches > 0 ? (total(bsum[1].get(model)) - total(bsum[0].get(model))) / batches : null,
      queue: total(queue.get(model)),
      version: total(version.get(model)),
      edits: Math.max(0, total(edits[1].get(model), committed) - total(edits[0].get(model), committed)),
    };
  });
}
