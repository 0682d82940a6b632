// The versions of a model: parent, ops, time and pin of each; open any, diff any two, roll back, pin.
import { useState } from "react";
import { api, failure } from "../api";
import { ago, clock, describeOps } from "../format";
import type { VersionList } from "../types";

interface Props {
  model: string;
  versions: VersionList | null;
  shown: number | null;
  diffFrom: number | null;
  onOpen(v: number | null, diffFrom: number | null): void;
  onChanged(): void;
  onAuthError(message: string): void;
  /** Start a rollout of this version (the rollout panel opens with it). */
  onRollout(v: number): void;
}

export function Timeline({ model, versions, shown, diffFrom, onOpen, onChanged, onAuthError, onRollout }: Props) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<number | null>(null);
  const list = [...(versions?.versions ?? [])].reverse();
  const current = versions?.current ?? null;
  const [from, setFrom] = useState<string>("");
  const [to, setTo] = useState<string>("");

  const act = async (v: number, what: () => Promise<unknown>) => {
    setBusy(v);
    setError(null);
    try {
      await what();
      onChanged();
    } catch (e) {
      setError(failure(e, onAuthError));
    } finally {
      setBusy(null);
    }
  };

  return (
    <section className="timeline" aria-label="versions">
      <form
        className="compare"
        onSubmit={(e) => {
          e.preventDefault();
          const a = Number(from || list.at(-1)?.version);
          const b = Number(to || current);
          if (a && b) onOpen(b === current ? null : b, a);
        }}
      >
        <label htmlFor="cmp-from">diff</label>
        <select id="cmp-from" value={from} onChange={(e) => setFrom(e.target.value)}>
          <option value="">v{list.at(-1)?.version ?? 1}</option>
          {list.map((v) => <option key={v.version} value={v.version}>v{v.version}</option>)}
        </select>
        <label htmlFor="cmp-to">→</label>
        <select id="cmp-to" value={to} onChange={(e) => setTo(e.target.value)}>
          <option value="">v{current ?? "?"} (current)</option>
          {list.map((v) => <option key={v.version} value={v.version}>v{v.version}</option>)}
        </select>
        <button type="submit">Show diff</button>
      </form>
      {error && <p className="form-error" role="alert">{error}</p>}
      <ol className="versions">
        {list.map((v) => {
          const isShown = v.version === shown;
          return (
            <li key={v.version} className={`version${isShown ? " shown" : ""}${v.version === current ? " current" : ""}`} data-version={v.version}>
              <button type="button" className="version-open" aria-current={isShown ? "true" : undefined}
                onClick={() => onOpen(v.version === current ? null : v.version, null)}>
                <span className="vnum">v{v.version}</span>
                <span className="vops">{describeOps(v.ops)}</span>
                <span className="vmeta muted">
                  {v.parent !== null ? `from v${v.parent} · ` : ""}
                  <time dateTime={new Date(v.created_at * 1000).toISOString()} title={clock(v.created_at)}>{ago(v.created_at)}</time>
                  {v.version === current && <span className="tag live-tag">live</span>}
                  {v.staged && v.version !== current && <span className="tag staged-tag" title="committed, not current: it serves only requests that name it">staged</span>}
                  {v.resident && <span className="tag" title="resident on the device">resident</span>}
                  {isShown && diffFrom !== null && <span className="tag">diff from v{diffFrom}</span>}
                </span>
              </button>
              <div className="vactions">
                {v.parent !== null && (
                  <button type="button" className="small" aria-label={`diff v${v.parent} to v${v.version}`} title="what this version changed"
                    onClick={() => onOpen(v.version === current ? null : v.version, v.parent)}>Δ</button>
                )}
                <button type="button" className={`small pin${v.pinned ? " on" : ""}`} aria-pressed={v.pinned} disabled={busy === v.version}
                  aria-label={v.pinned ? `unpin v${v.version}` : `pin v${v.version}`} title={v.pinned ? "pinned: gc keeps it" : "pin: gc keeps it"}
                  onClick={() => void act(v.version, () => api.pin(model, v.version, !v.pinned))}>
                  {v.pinned ? "📌" : "pin"}
                </button>
                {v.staged && v.version !== current && (
                  <button type="button" className="small" aria-label={`roll out v${v.version}`} title="shadow, canary and gate it against the live version"
                    onClick={() => onRollout(v.version)}>roll out</button>
                )}
                {v.version !== current && !v.staged && (
                  <button type="button" className="small" disabled={busy === v.version} aria-label={`roll back to v${v.version}`}
                    onClick={() => void act(v.version, () => api.rollback(model, v.version, current ?? undefined))}>
                    roll back
                  </button>
                )}
              </div>
            </li>
          );
        })}
      </ol>
    </section>
  );
}
