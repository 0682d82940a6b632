// A model's rollout (GET /v1/models/{m}/rollout): the candidate against the current version, the live agreement of
// their answers, each side's request rate and latency as they accrue, every gate with its bound, the value so far
// and whether it passes; promote and abort by hand (with the admin token), and the diff of the two graphs. Read
// every second while one runs and on each rollout event; with none running, a form starts one (PUT .../rollout).
import { useCallback, useEffect, useRef, useState } from "react";
import { api, ApiError, failure } from "../api";
import { ago, grouped } from "../format";
import type { GateState, RoleStats, Rollout, RolloutSpec, VersionList } from "../types";

const EVERY_MS = 1000;
const RUNNING = new Set(["evaluating", "running"]);

interface Props {
  model: string;
  versions: VersionList | null;
  /** Changes on every rollout event of the model's stream: read again at once. */
  tick: number;
  /** A version to start from (the versions list's "roll out"). */
  initialCandidate: number | null;
  onOpenDiff(from: number, to: number): void;
  onChanged(): void;
  onAuthError(message: string): void;
}

const pct = (x: number | null | undefined, digits = 2) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(digits)} %`);
const ms = (x: number | null | undefined) => (x === null || x === undefined ? "—" : `${x.toFixed(x < 10 ? 2 : 1)} ms`);
const num = (x: number | null | undefined) => (x === null || x === undefined ? "—" : Number.isInteger(x) ? grouped(x) : x.toPrecision(4));

const GATE_TEXT: Record<string, string> = {
  min_requests: "requests ≥",
  max_error_rate: "error rate ≤",
  min_agreement: "agreement ≥",
  max_p99_ratio: "p99 ratio ≤",
  min_eval_accuracy: "eval accuracy ≥",
  max_eval_regression: "eval regression ≤",
};

function gateValue(name: string, x: number | null): string {
  if (x === null) return "—";
  if (name === "max_error_rate" || name === "min_agreement" || name === "min_eval_accuracy") return pct(x);
  if (name === "max_p99_ratio") return `${x.toFixed(2)}×`;
  return num(x);
}

/** An ended rollout is recorded with the evidence it ended on, not its gates' states: each gate of its spec against
 *  that evidence (the gates this page saw last where the evidence does not say, such as the p99 ratio). */
export function gatesAtEnd(r: Rollout, seen: Record<string, GateState> | null): Record<string, GateState> | null {
  const spec = r.spec.gates;
  if (!spec) return seen;
  const ev = r.evidence;
  const out: Record<string, GateState> = {};
  for (const [name, bound] of Object.entries(spec)) {
    if (typeof bound !== "number") continue;
    let value: number | null = seen?.[name]?.value ?? null;
    if (ev && name === "min_requests") value = ev.requests;
    if (ev && name === "max_error_rate") value = ev.roles.candidate.error_rate;
    if (ev && name === "min_agreement") {
      const a = ev.outputs.map((o) => o.agreement).filter((x): x is number => x !== null);
      value = a.length ? Math.min(...a) : null;
    }
    const ok = value === null ? null : name.startsWith("min_") ? value >= bound : value <= bound;
    out[name] = { bound, value, ok, rule: name === "min_agreement" ? String(spec.agreement ?? "argmax") : undefined };
  }
  return out;
}

interface Rates {
  at: number;
  requests: Record<"current" | "candidate", number>;
  rps: Record<"current" | "candidate", number | null>;
}

export function RolloutPanel({ model, versions, tick, initialCandidate, onOpenDiff, onChanged, onAuthError }: Props) {
  const [rollout, setRollout] = useState<Rollout | null>(null);
  const [none, setNone] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [rates, setRates] = useState<Rates | null>(null);
  const ratesRef = useRef<Rates | null>(null);

  const seen = useRef(false); // a rollout was shown here: its end is read too
  const lastGates = useRef<{ id: string; gates: Record<string, GateState> } | null>(null);
  const read = useCallback(async (asked: boolean) => {
    try {
      // Ask for the rollout when one runs (or was shown, or an event named one): a model that never had one has no
      // rollout to read, and its 404 would be noise.
      if (!seen.current && !asked && !(await api.model(model)).rollout) {
        setRollout(null);
        setNone(true);
        return;
      }
      let r: Rollout = await api.rollout(model);
      seen.current = true;
      if (r.gates) lastGates.current = { id: r.id, gates: r.gates };
      else r = { ...r, gates: gatesAtEnd(r, lastGates.current?.id === r.id ? lastGates.current.gates : null) };
      setRollout(r);
      setNone(false);
      const roles = r.evidence?.roles;
      if (roles && RUNNING.has(r.state)) {
        const now = performance.now();
        const prev = ratesRef.current;
        const requests = { current: roles.current.requests, candidate: roles.candidate.requests };
        const rate = (k: "current" | "candidate") =>
          prev && now > prev.at ? Math.max(0, ((requests[k] - prev.requests[k]) * 1000) / (now - prev.at)) : null;
        const next = { at: now, requests, rps: { current: rate("current"), candidate: rate("candidate") } };
        ratesRef.current = next;
        setRates(next);
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        setRollout(null);
        setNone(true);
      } else setError(e instanceof ApiError ? e.message : String(e));
    }
  }, [model]);

  useEffect(() => {
    void read(tick > 0);
  }, [read, tick]);
  const running = rollout !== null && RUNNING.has(rollout.state);
  useEffect(() => {
    if (!running) return;
    const t = window.setInterval(() => void read(true), EVERY_MS);
    return () => window.clearInterval(t);
  }, [running, read]);

  const act = async (what: string, call: () => Promise<Rollout>) => {
    setBusy(what);
    setError(null);
    try {
      let r = await call();
      if (r.gates) lastGates.current = { id: r.id, gates: r.gates };
      else r = { ...r, gates: gatesAtEnd(r, lastGates.current?.id === r.id ? lastGates.current.gates : null) };
      setRollout(r);
      seen.current = true;
      setNone(false);
      onChanged();
    } catch (e) {
      setError(failure(e, onAuthError));
    } finally {
      setBusy(null);
    }
  };

  const ev = rollout?.evidence ?? null;
  const agreement = ev?.outputs.map((o) => o.agreement).filter((a): a is number => a !== null) ?? [];
  const role = (k: "current" | "candidate", s: RoleStats | undefined, version: number) => (
    <tr data-role={k}>
      <th scope="row">{k} <span className="muted">v{version}</span></th>
      <td data-stat="requests">{num(s?.requests)}</td>
      <td data-stat="rate">{rates?.rps[k] === null || rates?.rps[k] === undefined ? "—" : `${rates.rps[k]!.toFixed(1)}/s`}</td>
      <td data-stat="errors">{num(s?.errors)}</td>
      <td data-stat="p99" title={`p50 ${ms(s?.p50_ms)}`}>{ms(s?.p99_ms)}</td>
      <td data-stat="shadow-p99" title={`p50 ${ms(ev?.shadow_compute?.[k]?.p50_ms)}`}>{ms(ev?.shadow_compute?.[k]?.p99_ms)}</td>
    </tr>
  );

  return (
    <section className="rollout" aria-label="rollout" data-testid="rollout">
      {error && <p className="form-error" role="alert">{error}</p>}
      {rollout && (
        <article className={`rollout-card state-${rollout.state}`} data-rollout-state={rollout.state} data-candidate={rollout.candidate}>
          <header className="rollout-head">
            <h3>v{rollout.candidate} <span className="muted">against</span> v{rollout.baseline}</h3>
            <span className={`tag state state-${rollout.state}`}>{rollout.state}</span>
          </header>
          <p className="muted small">
            {rollout.spec.shadow ? `shadow ${pct(rollout.spec.shadow, 0)}` : "no shadow"} ·{" "}
            {rollout.spec.canary ? `canary ${pct(rollout.spec.canary, 0)}` : "no canary"}
            {rollout.spec.sticky_header ? ` · sticky on ${rollout.spec.sticky_header}` : ""} · started {ago(rollout.started_at)}
          </p>
          {rollout.reason && <p className="rollout-reason" data-testid="rollout-reason">{rollout.reason}</p>}
          {rollout.promoted_as !== null && rollout.promoted_as !== undefined && <p>Promoted: v{rollout.promoted_as} is live.</p>}
          {ev && (
            <>
              <dl className="rollout-facts">
                <div><dt>agreement</dt><dd data-stat="agreement">{agreement.length ? pct(Math.min(...agreement)) : "—"}</dd></div>
                <div><dt>compared</dt><dd data-stat="compared">{num(ev.outputs[0]?.rows ?? 0)}</dd></div>
                <div><dt>evidence</dt><dd data-stat="evidence">{num(ev.requests)}</dd></div>
                <div><dt>shadow dropped</dt><dd data-stat="dropped">{num(ev.shadow.dropped)} / {num(ev.shadow.runs + ev.shadow.dropped)}</dd></div>
              </dl>
              <table className="roles">
                <thead><tr><th scope="col">version</th><th scope="col">requests</th><th scope="col">rate</th><th scope="col">errors</th><th scope="col" title="answers served: end to end">p99</th><th scope="col" title="shadowed requests, compute on both sides">shadow p99</th></tr></thead>
                <tbody>
                  {role("current", ev.roles.current, rollout.baseline)}
                  {role("candidate", ev.roles.candidate, rollout.candidate)}
                </tbody>
              </table>
              {ev.outputs.length > 0 && ev.outputs[0]!.rows > 0 && (
                <p className="muted small">
                  {ev.outputs[0]!.rule}: max |Δ| p99 {num(ev.outputs[0]!.max_abs.p99)}, relative L2 p99 {num(ev.outputs[0]!.relative_l2.p99)}
                  {ev.outputs[0]!.flips && ev.outputs[0]!.flips.changed.length > 0
                    ? `; flips ${ev.outputs[0]!.flips.changed.slice(0, 3).map((f) => `${f.from}→${f.to} ×${f.count}`).join(", ")}` : ""}
                </p>
              )}
            </>
          )}
          {rollout.gates && (
            <>
              <h3>Gates</h3>
              <ul className="gates">
                {Object.entries(rollout.gates).map(([name, g]: [string, GateState]) => {
                  // too few requests yet is evidence still accruing, not a failure
                  const state = g.ok === null || (name === "min_requests" && !g.ok && running) ? "pending" : g.ok ? "pass" : "fail";
                  return (
                    <li key={name} data-gate={name} data-ok={state} className={`gate gate-${state}`}>
                      <span className="gate-mark" aria-hidden="true">{state === "pass" ? "✓" : state === "fail" ? "✗" : "…"}</span>
                      <span className="gate-name">{GATE_TEXT[name] ?? name} {gateValue(name, g.bound)}{g.rule ? ` (${g.rule})` : ""}</span>
                      <span className="gate-value" data-stat="value">{gateValue(name, g.value)}</span>
                      <span className="sr-only">{state}</span>
                    </li>
                  );
                })}
              </ul>
            </>
          )}
          {!rollout.gates && running && <p className="muted small">No gates: promote or abort by hand.</p>}
          <div className="actions" role="group" aria-label="this rollout">
            <button type="button" onClick={() => onOpenDiff(rollout.baseline, rollout.candidate)}>
              Diff v{rollout.baseline} → v{rollout.candidate}
            </button>
            {running && (
              <>
                <button type="button" className="primary" disabled={busy !== null}
                  onClick={() => void act("promote", () => api.promote(model))}>{busy === "promote" ? "Promoting…" : "Promote"}</button>
                <button type="button" className="danger" disabled={busy !== null}
                  onClick={() => void act("abort", () => api.abort(model))}>{busy === "abort" ? "Aborting…" : "Abort"}</button>
              </>
            )}
          </div>
        </article>
      )}
      {(none || (rollout && !running)) && (
        <StartForm model={model} versions={versions} initialCandidate={initialCandidate} busy={busy !== null}
          onStart={(spec) => void act("start", () => api.startRollout(model, spec))} />
      )}
    </section>
  );
}

function StartForm({ versions, initialCandidate, busy, onStart }: {
  model: string; versions: VersionList | null; initialCandidate: number | null; busy: boolean; onStart(spec: RolloutSpec): void;
}) {
  const current = versions?.current ?? null;
  const candidates = [...(versions?.versions ?? [])].filter((v) => v.version !== current).reverse();
  const staged = candidates.find((v) => v.staged);
  const [candidate, setCandidate] = useState<string>(String(initialCandidate ?? staged?.version ?? candidates[0]?.version ?? ""));
  const [shadow, setShadow] = useState("100");
  const [canary, setCanary] = useState("0");
  const [minRequests, setMinRequests] = useState("200");
  const [minAgreement, setMinAgreement] = useState("99");
  const [maxErrors, setMaxErrors] = useState("");
  const [maxP99, setMaxP99] = useState("");
  const [rule, setRule] = useState("argmax");
  const [gated, setGated] = useState(true);
  useEffect(() => {
    if (initialCandidate !== null) setCandidate(String(initialCandidate));
  }, [initialCandidate]);
  if (candidates.length === 0) return <p className="muted">Stage a version (an edit with “stage”) to roll it out.</p>;
  const frac = (s: string) => Math.min(1, Math.max(0, Number(s) / 100));
  return (
    <form className="rollout-start" aria-label="start a rollout" onSubmit={(e) => {
      e.preventDefault();
      const gates: Record<string, number | string> = {};
      if (gated) {
        gates.min_requests = Math.max(1, Math.round(Number(minRequests) || 1));
        if (minAgreement !== "" && frac(shadow) > 0) gates.min_agreement = frac(minAgreement);
        if (maxErrors !== "") gates.max_error_rate = frac(maxErrors);
        if (maxP99 !== "") gates.max_p99_ratio = Number(maxP99);
        gates.agreement = rule;
      }
      onStart({ candidate: Number(candidate), shadow: frac(shadow), canary: frac(canary), gates: gated ? gates : null });
    }}>
      <h3>Start a rollout</h3>
      <div className="field">
        <label htmlFor="ro-candidate">candidate</label>
        <select id="ro-candidate" name="candidate" value={candidate} onChange={(e) => setCandidate(e.target.value)}>
          {candidates.map((v) => <option key={v.version} value={v.version}>v{v.version}{v.staged ? " (staged)" : ""}</option>)}
        </select>
      </div>
      <div className="field-row">
        <div className="field">
          <label htmlFor="ro-shadow">shadow %</label>
          <input id="ro-shadow" name="shadow" type="number" min={0} max={100} step="any" value={shadow} onChange={(e) => setShadow(e.target.value)} />
        </div>
        <div className="field">
          <label htmlFor="ro-canary">canary %</label>
          <input id="ro-canary" name="canary" type="number" min={0} max={100} step="any" value={canary} onChange={(e) => setCanary(e.target.value)} />
        </div>
      </div>
      <div className="field check">
        <label htmlFor="ro-gated">
          <input id="ro-gated" name="gated" type="checkbox" checked={gated} onChange={(e) => setGated(e.target.checked)} />
          gates decide (otherwise promote or abort by hand)
        </label>
      </div>
      {gated && (
        <div className="field-row">
          <div className="field">
            <label htmlFor="ro-min-requests">min requests</label>
            <input id="ro-min-requests" name="min_requests" type="number" min={1} value={minRequests} onChange={(e) => setMinRequests(e.target.value)} />
          </div>
          <div className="field">
            <label htmlFor="ro-min-agreement">min agreement %</label>
            <input id="ro-min-agreement" name="min_agreement" type="number" min={0} max={100} step="any" value={minAgreement} onChange={(e) => setMinAgreement(e.target.value)} />
          </div>
          <div className="field">
            <label htmlFor="ro-max-errors">max error %</label>
            <input id="ro-max-errors" name="max_error_rate" type="number" min={0} max={100} step="any" value={maxErrors} onChange={(e) => setMaxErrors(e.target.value)} />
          </div>
          <div className="field">
            <label htmlFor="ro-max-p99">max p99 ratio</label>
            <input id="ro-max-p99" name="max_p99_ratio" type="number" min={0} step="any" value={maxP99} onChange={(e) => setMaxP99(e.target.value)} />
          </div>
          <div className="field">
            <label htmlFor="ro-rule">agreement</label>
            <select id="ro-rule" name="agreement" value={rule} onChange={(e) => setRule(e.target.value)}>
              <option value="argmax">argmax (classes)</option>
              <option value="allclose:1e-3">allclose 1e-3</option>
              <option value="allclose:1e-5">allclose 1e-5</option>
            </select>
          </div>
        </div>
      )}
      <footer>
        <button type="submit" className="primary" disabled={busy}>Start rollout</button>
      </footer>
    </form>
  );
}
