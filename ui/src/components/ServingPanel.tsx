// Serving, live: requests/s, p50/p99 latency, mean batch size and queue depth per model, from /metrics every
// two seconds, with the last two minutes as sparklines.
import { useEffect, useRef, useState } from "react";
import { api } from "../api";
import { derive, type ModelStats, parsePrometheus, type Scrape } from "../metrics";

const EVERY_MS = 2000;
const KEEP = 60;

export function useServingStats(): { stats: ModelStats[]; history: Map<string, ModelStats[]>; error: boolean } {
  const [state, setState] = useState<{ stats: ModelStats[]; history: Map<string, ModelStats[]>; error: boolean }>({
    stats: [], history: new Map(), error: false,
  });
  const prev = useRef<Scrape | null>(null);
  useEffect(() => {
    let stopped = false;
    let timer = 0;
    const tick = async () => {
      try {
        const scrape = { at: performance.now(), samples: parsePrometheus(await api.metrics()) };
        if (prev.current) {
          const stats = derive(prev.current, scrape);
          setState((s) => {
            const history = new Map(s.history);
            for (const m of stats) history.set(m.model, [...(history.get(m.model) ?? []), m].slice(-KEEP));
            return { stats, history, error: false };
          });
        }
        prev.current = scrape;
      } catch {
        setState((s) => ({ ...s, error: true }));
      }
      if (!stopped) timer = window.setTimeout(tick, EVERY_MS);
    };
    void tick();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, []);
  return state;
}

function Spark({ values, label }: { values: (number | null)[]; label: string }) {
  const xs = values.map((v) => v ?? 0);
  const max = Math.max(1e-9, ...xs);
  const pts = xs.map((v, i) => `${(i / Math.max(1, KEEP - 1)) * 100},${28 - (v / max) * 26}`).join(" ");
  return (
    <svg className="spark" viewBox="0 0 100 30" preserveAspectRatio="none" role="img" aria-label={label}>
      <polyline points={pts} />
    </svg>
  );
}

const ms = (s: number | null) => (s === null ? "—" : s < 0.01 ? `${(s * 1000).toFixed(2)} ms` : `${(s * 1000).toFixed(1)} ms`);

export function ServingPanel({ focus, stats, history, error }: {
  focus: string | null; stats: ModelStats[]; history: Map<string, ModelStats[]>; error: boolean;
}) {
  const ordered = [...stats].sort((a, b) => (a.model === focus ? -1 : b.model === focus ? 1 : a.model.localeCompare(b.model)));
  return (
    <section className="serving" aria-label="serving">
      {error && <p className="form-error" role="alert">/metrics cannot be read</p>}
      {stats.length === 0 && !error && <p className="muted">Collecting…</p>}
      {ordered.map((m) => {
        const h = history.get(m.model) ?? [];
        return (
          <article key={m.model} className={`serving-card${m.model === focus ? " focus" : ""}`} data-serving-model={m.model}>
            <h3>{m.model} <span className="muted">v{m.version}</span></h3>
            <dl>
              <div><dt>requests/s</dt><dd data-stat="rps">{m.rps.toFixed(m.rps < 10 ? 1 : 0)}</dd></div>
              <div><dt>p50</dt><dd data-stat="p50">{ms(m.p50)}</dd></div>
              <div><dt>p99</dt><dd data-stat="p99">{ms(m.p99)}</dd></div>
              <div><dt>batch</dt><dd data-stat="batch">{m.batch === null ? "—" : m.batch.toFixed(1)}</dd></div>
              <div><dt>queue</dt><dd data-stat="queue">{m.queue}</dd></div>
            </dl>
            <div className="sparks">
              <figure><Spark values={h.map((x) => x.rps)} label={`requests per second of ${m.model}, last two minutes`} /><figcaption>req/s</figcaption></figure>
              <figure><Spark values={h.map((x) => x.p99)} label={`p99 latency of ${m.model}, last two minutes`} /><figcaption>p99</figcaption></figure>
            </div>
          </article>
        );
      })}
    </section>
  );
}
