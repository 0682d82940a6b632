// The page: the models (/ui/), and one model (/ui/models/{name}) with its live graph, node panel, versions and
// serving numbers. It is a client of the public API and nothing else: REST routes, the SSE streams, /metrics.
import { useCallback, useEffect, useState } from "react";
import { api, ApiError, serverEventsUrl, token } from "../api";
import { compact, fmtShape } from "../format";
import { warmUp } from "../graph/layout";
import { type LiveState, useEventSource } from "../live";
import { useRoute } from "../route";
import type { ModelInfo } from "../types";
import { ModelView } from "./ModelView";
import { useServingStats } from "./ServingPanel";
import type { ModelStats } from "../metrics";

function LiveDot({ state, label }: { state: LiveState; label: string }) {
  const text = { connecting: "connecting", live: "live", reconnecting: "reconnecting", closed: "offline" }[state];
  return (
    <span className={`live-dot ${state}`} role="status" aria-live="polite" data-live={state} title={`${label}: ${text}`}>
      <span className="dot" aria-hidden="true" />
      {text}
    </span>
  );
}

function TokenField({ authError, onChange }: { authError: string | null; onChange(): void }) {
  const [value, setValue] = useState(token.get());
  const [editing, setEditing] = useState(!token.get());
  if (!editing) {
    return (
      <div className="token">
        <span className="muted">admin token set</span>
        <button type="button" className="small" onClick={() => setEditing(true)}>change</button>
        <button type="button" className="small" onClick={() => { token.set(""); setValue(""); setEditing(true); onChange(); }}>forget</button>
        {authError && <p className="token-error" role="alert">{authError}</p>}
      </div>
    );
  }
  return (
    <form
      className="token"
      onSubmit={(e) => {
        e.preventDefault();
        token.set(value.trim());
        setEditing(!value.trim());
        onChange();
      }}
    >
      <label htmlFor="admin-token" className="sr-only">admin token</label>
      <input id="admin-token" name="admin-token" type="password" autoComplete="off" placeholder="admin token (for edits)"
        value={value} onChange={(e) => setValue(e.target.value)} />
      <button type="submit" className="small">save</button>
      {authError && <p className="token-error" role="alert">{authError}</p>}
    </form>
  );
}

function Home({ models, error, stats, onOpen }: {
  models: ModelInfo[] | null; error: string | null; stats: ModelStats[]; onOpen(name: string): void;
}) {
  const byModel = new Map(stats.map((m) => [m.model, m]));
  return (
    <main className="home">
      <h1>Models</h1>
      <p className="muted">Each model is a live torch.fx graph: open one to watch it change as it is edited.</p>
      {error && <p className="form-error" role="alert">{error}</p>}
      {models && models.length === 0 && <p>No model is served. Create one with <code>POST /v1/models</code>.</p>}
      <ul className="cards">
        {models?.map((m) => (
          <li key={m.name}>
            <a className="card" href={`/ui/models/${encodeURIComponent(m.name)}`} data-model-card={m.name}
              onClick={(e) => { e.preventDefault(); onOpen(m.name); }}>
              <h2>{m.name}</h2>
              <p className="card-version">v{m.version} <span className="muted">{m.versions} {m.versions === 1 ? "version" : "versions"}</span></p>
              <p className="muted small">
                {m.inputs.map((t) => `${t.name} ${fmtShape(t.shape)}`).join(", ")} → {m.outputs.map((t) => fmtShape(t.shape)).join(", ")}
              </p>
              <p className="small">{compact(m.params)} params · {m.device}</p>
              {byModel.get(m.name) && (
                <p className="small muted" data-card-serving={m.name}>
                  {byModel.get(m.name)!.rps.toFixed(1)} req/s
                  {byModel.get(m.name)!.p99 !== null && ` · p99 ${(byModel.get(m.name)!.p99! * 1000).toFixed(1)} ms`}
                </p>
              )}
            </a>
          </li>
        ))}
      </ul>
    </main>
  );
}

export function App() {
  const [route, go] = useRoute();
  const [models, setModels] = useState<ModelInfo[] | null>(null);
  const [modelsError, setModelsError] = useState<string | null>(null);
  const [authError, setAuthError] = useState<string | null>(null);
  const serving = useServingStats();

  const reloadModels = useCallback(() => {
    api.models().then(
      (m) => {
        setModels(m);
        setModelsError(null);
      },
      (e: unknown) => setModelsError(e instanceof ApiError ? e.message : String(e)),
    );
  }, []);
  useEffect(reloadModels, [reloadModels]);
  useEffect(warmUp, []);
  const serverState = useEventSource(serverEventsUrl, {
    model_created: reloadModels,
    model_deleted: reloadModels,
    reset: reloadModels,
    version: (d) => {
      const e = d as { model: string; version: number };
      setModels((ms) => ms?.map((m) => (m.name === e.model && e.version > m.version ? { ...m, version: e.version, versions: m.versions + 1 } : m)) ?? ms);
    },
  });

  useEffect(() => {
    document.title = route.model ? `${route.model} · morphserve` : "morphserve";
  }, [route.model]);

  return (
    <div className="app">
      <header className="topbar">
        <a className="brand" href="/ui/" onClick={(e) => { e.preventDefault(); go({ model: null }, { reset: true }); }}>
          <svg viewBox="0 0 32 32" aria-hidden="true" className="logo">
            <path d="M9 8v6m0 0l7 6m-7-6l14 6M16 20v4" className="logo-edge" />
            <circle cx="9" cy="8" r="3" className="logo-in" />
            <circle cx="16" cy="20" r="3" className="logo-mid" />
            <circle cx="23" cy="20" r="3" className="logo-act" />
            <circle cx="16" cy="26" r="2.5" className="logo-out" />
          </svg>
          <span>morph<b>serve</b></span>
        </a>
        <nav aria-label="models">
          <label htmlFor="model-select" className="sr-only">model</label>
          <select id="model-select" value={route.model ?? ""} onChange={(e) => go({ model: e.target.value || null }, { reset: true })}>
            <option value="">all models</option>
            {models?.map((m) => <option key={m.name} value={m.name}>{m.name} (v{m.version})</option>)}
          </select>
        </nav>
        <LiveDot state={serverState} label="server events" />
        <div className="spacer" />
        <TokenField authError={authError} onChange={() => setAuthError(null)} />
      </header>
      {route.model === null ? (
        <Home models={models} error={modelsError} stats={serving.stats} onOpen={(name) => go({ model: name }, { reset: true })} />
      ) : (
        <ModelView key={route.model} name={route.model} route={route} go={go} serving={serving} onAuthError={setAuthError} />
      )}
    </div>
  );
}
