// A model's fit jobs (GET /v1/models/{m}/jobs), newest first: each one's state, progress and loss curve, live while
// it runs; an ended job's whole curve, its eval score before and after, and the staged version it produced, with a
// way to open it, diff it and roll it out. A running job can be cancelled (with the admin token). `job` events
// carry the last loss only, not the curve: on each one the job's record is read again (GET .../jobs/{id}).
import { useCallback, useEffect, useState } from "react";
import { api, ApiError, failure } from "../api";
import { ago, grouped } from "../format";
import { href } from "../route";
import type { Job, JobEvent, JobScore, VersionList } from "../types";

/** While a job runs, the list is also read this often: a job event missed while the stream reconnected (they are
 *  not replayed) is caught up on. */
const FALLBACK_MS = 5000;

interface Props {
  model: string;
  versions: VersionList | null;
  /** The model stream's last `job` event (`seq` changes on each). */
  event: { seq: number; data: JobEvent } | null;
  onOpenVersion(v: number, diffFrom: number | null): void;
  /** Open the rollout panel with this version as its candidate. */
  onRollout(v: number): void;
  onAuthError(message: string): void;
}

const num = (x: number | null | undefined) => (x === null || x === undefined ? "—" : Number.isInteger(x) ? grouped(x) : x.toPrecision(4));

function score(s: JobScore | null): string {
  if (!s) return "—";
  if (s.accuracy !== undefined) return `${(s.accuracy * 100).toFixed(2)} %`;
  if (s.mse !== undefined) return `mse ${num(s.mse)}`;
  return "—";
}

/** The record to keep of two reads of one job: answers may land out of order, and a job only moves forward. */
function newer(a: Job, b: Job): Job {
  if (a.state !== "running" && b.state === "running") return a;
  if (a.state === "running" && b.state === "running" && a.step > b.step) return a;
  return b;
}

function upsert(jobs: Job[] | null, j: Job): Job[] {
  const list = jobs ?? [];
  const old = list.find((x) => x.id === j.id);
  const next = old ? list.map((x) => (x.id === j.id ? newer(x, j) : x)) : [...list, j];
  return next.sort((a, b) => b.started_at - a.started_at);
}

const W = 300;
const H = 64;
const PAD = 3;

/** The loss per step as one polyline (no chart library): x by position in the curve, y scaled between its extremes,
 *  on a log scale where the loss falls by more than LOG_ABOVE times (the first steps would flatten the rest). */
const LOG_ABOVE = 100;

export function LossCurve({ curve, stride, running }: { curve: number[]; stride: number; running: boolean }) {
  const finite = curve.filter((x) => Number.isFinite(x));
  const lo = finite.length ? Math.min(...finite) : 0;
  const hi = finite.length ? Math.max(...finite) : 1;
  const log = lo > 0 && hi / lo > LOG_ABOVE;
  const f = (y: number) => (log ? Math.log10(y) : y);
  const span = f(hi) - f(lo) || 1;
  const step = curve.length > 1 ? (W - 2 * PAD) / (curve.length - 1) : 0;
  const points = curve
    .flatMap((y, i) => (Number.isFinite(y) ? [`${(PAD + i * step).toFixed(1)},${(PAD + (1 - (f(y) - f(lo)) / span) * (H - 2 * PAD)).toFixed(1)}`] : []))
    .join(" ");
  const label = curve.length
    ? `loss curve: ${curve.length} points${stride > 1 ? ` (every ${stride} steps)` : ""}, from ${num(curve[0])} to ${num(curve.at(-1))}${running ? ", growing" : ""}`
    : "loss curve: no step yet";
  return (
    <figure className="loss-curve">
      <svg viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-label={label}
        data-testid="loss-curve" data-points={curve.length} data-running={running}>
        <line x1={PAD} x2={W - PAD} y1={H - PAD} y2={H - PAD} className="loss-axis" />
        {curve.length > 0 && <polyline points={points} className="loss-line" />}
      </svg>
      <figcaption className="muted small">
        loss {curve.length ? `${num(hi)} (max) → ${num(lo)} (min)${log ? ", log scale" : ""}` : "—"}
      </figcaption>
    </figure>
  );
}

export function JobsPanel({ model, versions, event, onOpenVersion, onRollout, onAuthError }: Props) {
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);

  const readAll = useCallback(async () => {
    try {
      const list = await api.jobs(model);
      // Merged, not replaced: a job event's read may be fresher than this list (jobs pruned by the server go).
      setJobs((old) => list.reduce((acc, j) => upsert(acc, j), (old ?? []).filter((o) => list.some((j) => j.id === o.id))));
      setError(null);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    }
  }, [model]);

  useEffect(() => {
    void readAll();
  }, [readAll]);

  // Each job event: that job's record again (its curve), whatever the event says.
  useEffect(() => {
    if (!event || event.data.model !== model) return;
    let live = true;
    api.job(model, event.data.job).then(
      (j) => live && setJobs((old) => upsert(old, j)),
      (e: unknown) => live && !(e instanceof ApiError && e.status === 404) && setError(e instanceof ApiError ? e.message : String(e)),
    );
    return () => {
      live = false;
    };
  }, [event, model]);

  const running = jobs?.some((j) => j.state === "running") ?? false;
  useEffect(() => {
    if (!running) return;
    const t = window.setInterval(() => void readAll(), FALLBACK_MS);
    return () => window.clearInterval(t);
  }, [running, readAll]);

  const cancel = async (id: string) => {
    setBusy(id);
    setError(null);
    try {
      const j = await api.cancelJob(model, id);
      setJobs((old) => upsert(old, j));
    } catch (e) {
      setError(failure(e, onAuthError));
    } finally {
      setBusy(null);
    }
  };

  const current = versions?.current ?? null;
  return (
    <section className="rollout jobs" aria-label="fit jobs" data-testid="jobs">
      {error && <p className="form-error" role="alert">{error}</p>}
      {jobs !== null && jobs.length === 0 && (
        <p className="muted">No fit job yet: start one with <code>POST /v1/models/{model}/fit</code> or <code>morphserve fit</code>.</p>
      )}
      {jobs?.map((j) => {
        const isRunning = j.state === "running";
        const staged = j.version !== null && (versions?.versions.find((v) => v.version === j.version)?.staged ?? true) && j.version !== current;
        return (
          <article key={j.id} className={`rollout-card job-card state-${j.state}`} data-job={j.id} data-job-state={j.state}
            aria-label={`job ${j.id}`}>
            <header className="rollout-head">
              <h3>{j.train.join(", ")} <span className="muted">on</span> {j.spec.dataset}</h3>
              <span className={`tag state state-${j.state}`}>{j.state}</span>
            </header>
            <p className="muted small">
              {j.spec.loss ?? "cross_entropy"} · {j.spec.optimizer ?? "adamw"} lr {j.spec.lr ?? "—"} · from v{j.base_version} ·
              started {ago(j.started_at)} · {j.seconds.toFixed(1)} s · <span className="job-id">{j.id}</span>
            </p>
            {j.error && <p className="rollout-reason" data-testid="job-error">{j.error}</p>}
            <dl className="rollout-facts">
              <div><dt>step</dt><dd data-stat="step">{grouped(j.step)} / {grouped(j.steps)}</dd></div>
              <div><dt>loss</dt><dd data-stat="loss">{num(j.loss)}</dd></div>
              <div><dt>eval before</dt><dd data-stat="eval-before" title={j.eval_before?.dataset}>{score(j.eval_before)}</dd></div>
              <div><dt>eval after</dt><dd data-stat="eval-after" title={j.eval_after?.dataset}>{score(j.eval_after)}</dd></div>
            </dl>
            {isRunning && <progress className="job-progress" max={Math.max(1, j.steps)} value={j.step} aria-label={`progress of job ${j.id}`} />}
            <LossCurve curve={j.loss_curve} stride={j.loss_curve_stride} running={isRunning} />
            {j.version !== null && (
              <p data-testid="job-version">
                Produced{" "}
                <a href={href({ model, version: j.version === current ? null : j.version, diff: null, node: null })}
                  onClick={(e) => {
                    e.preventDefault();
                    onOpenVersion(j.version!, null);
                  }}>v{j.version}</a>{" "}
                {staged ? <span className="tag staged-tag">staged</span> : j.version === current ? <span className="tag live-tag">live</span> : null}
              </p>
            )}
            {(j.version !== null || isRunning) && (
              <div className="actions" role="group" aria-label={`job ${j.id}`}>
                {j.version !== null && (
                  <button type="button" onClick={() => onOpenVersion(j.version!, j.base_version)}>
                    Diff v{j.base_version} → v{j.version}
                  </button>
                )}
                {j.version !== null && staged && (
                  <button type="button" className="primary" title="shadow, canary and gate it against the live version"
                    onClick={() => onRollout(j.version!)}>Roll out v{j.version}</button>
                )}
                {isRunning && (
                  <button type="button" className="danger" disabled={busy !== null} onClick={() => void cancel(j.id)}>
                    {busy === j.id ? "Cancelling…" : "Cancel"}
                  </button>
                )}
              </div>
            )}
          </article>
        );
      })}
    </section>
  );
}
