// One model: the drawing of the shown version (live by default), a diff or a dry-run preview over it, and the
// side panel (node, versions, serving). Follows GET /v1/models/{m}/events: a version committed by anyone is
// fetched and drawn as it lands, what it changed glowing for a few seconds.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { api, ApiError, eventsUrl } from "../api";
import { compact, describeOps, grouped } from "../format";
import { type Direction, layout } from "../graph/layout";
import { display, fold } from "../graph/model";
import { useEventSource } from "../live";
import type { Route } from "../route";
import type { EditResponse, Graph, GraphDiff, JsonSchema, Op, VersionList } from "../types";
import { EditPanel, type EditMode, summaryOf } from "./EditPanel";
import { type GraphHandle, GraphView, type Shown } from "./GraphView";
import { NodePanel } from "./NodePanel";
import { ServingPanel, type useServingStats } from "./ServingPanel";
import { Timeline } from "./Timeline";

type Go = (next: Partial<Route>, opts?: { replace?: boolean; reset?: boolean }) => void;
type Tab = "node" | "versions" | "serving";

interface Props {
  name: string;
  route: Route;
  go: Go;
  serving: ReturnType<typeof useServingStats>;
  onAuthError(message: string): void;
}

/** Big graphs start with their outermost groups folded. */
const FOLD_ABOVE = 600;
const FLASH_MS = 4000;

export function ModelView({ name, route, go, serving, onAuthError }: Props) {
  const cache = useRef(new Map<number, Promise<Graph>>());
  const [versions, setVersions] = useState<VersionList | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [deleted, setDeleted] = useState(false);
  const [since, setSince] = useState<number | null>(null);
  const [graph, setGraph] = useState<Graph | null>(null);
  const [base, setBase] = useState<{ graph: Graph; diff: GraphDiff } | null>(null);
  const [preview, setPreview] = useState<EditResponse | null>(null);
  const [flash, setFlash] = useState<ReadonlySet<string>>(new Set());
  const [collapsed, setCollapsed] = useState<ReadonlySet<string>>(new Set());
  const [direction, setDirection] = useState<Direction>("DOWN");
  const [fitGen, setFitGen] = useState(0); // a new value re-fits the view (folding or unfolding all groups)
  const [shown, setShown] = useState<Shown | null>(null);
  const [pending, setPending] = useState(false);
  const [tab, setTab] = useState<Tab>(route.node ? "node" : "versions");
  const [edit, setEdit] = useState<{ mode: EditMode; node: string } | null>(null);
  const [toast, setToast] = useState<{ text: string; key: number } | null>(null);
  const [catalogue, setCatalogue] = useState<JsonSchema | null>(null);
  const seq = useRef(0);
  const folded0 = useRef(false);
  const graphRef = useRef<GraphHandle>(null);

  const current = versions?.current ?? null;
  const shownVersion = route.version ?? current;
  const following = route.version === null;

  const getGraph = useCallback(
    (v: number): Promise<Graph> => {
      let p = cache.current.get(v);
      if (!p) {
        p = api.graph(name, v);
        p.catch(() => cache.current.delete(v));
        cache.current.set(v, p);
      }
      return p;
    },
    [name],
  );
  const fail = (e: unknown) => setError(e instanceof ApiError ? e.message : String(e));

  const loadVersions = useCallback(() => {
    api.versions(name).then((vl) => {
      setVersions((old) => (old && old.current > vl.current ? { ...vl, current: old.current } : vl));
      setSince((s) => s ?? vl.current);
      setError(null);
    }, (e: unknown) => {
      if (e instanceof ApiError && e.status === 404) setDeleted(true);
      fail(e);
    });
  }, [name]);

  useEffect(() => {
    loadVersions();
    api.catalogue().then(setCatalogue, () => setCatalogue(null));
  }, [loadVersions]);

  useEffect(() => {
    if (shownVersion === null) return;
    let live = true;
    getGraph(shownVersion).then((g) => live && setGraph(g), (e: unknown) => live && fail(e));
    return () => {
      live = false;
    };
  }, [shownVersion, getGraph]);

  useEffect(() => {
    if (route.diff === null || shownVersion === null) {
      setBase(null);
      return;
    }
    let live = true;
    Promise.all([getGraph(route.diff), api.diff(name, route.diff, shownVersion)]).then(
      ([g, d]) => live && setBase({ graph: g, diff: d }),
      (e: unknown) => live && fail(e),
    );
    return () => {
      live = false;
    };
  }, [route.diff, shownVersion, name, getGraph]);

  const say = (text: string) => setToast({ text, key: Date.now() });
  useEffect(() => {
    if (!toast) return;
    const t = window.setTimeout(() => setToast(null), 6000);
    return () => window.clearTimeout(t);
  }, [toast]);

  const live = useEventSource(since === null ? null : eventsUrl(name, since), {
    version: (d) => {
      const e = d as { version: number; parent: number | null; ops: Op[]; created_at: number };
      setVersions((vl) => {
        if (!vl || vl.versions.some((v) => v.version === e.version)) return vl;
        const versions = [...vl.versions, { version: e.version, parent: e.parent, created_at: e.created_at, ops: e.ops, resident: true, pinned: false }];
        return { ...vl, current: Math.max(vl.current, e.version), versions };
      });
      say(`v${e.version} is live: ${describeOps(e.ops)}`);
      if (e.parent !== null) {
        api.diff(name, e.parent, e.version).then((df) => {
          setFlash(new Set([...df.added, ...df.changed.map((c) => c.id)]));
          window.setTimeout(() => setFlash(new Set()), FLASH_MS);
        }, () => undefined);
      }
    },
    reset: () => loadVersions(),
    model_deleted: () => setDeleted(true),
  });

  // What is drawn: a preview over the current graph, a diff, or the version itself.
  const disp = useMemo(() => {
    if (!graph || graph.version !== shownVersion) return null;
    if (preview?.graph) return display(preview.graph, graph, preview.diff);
    if (route.diff !== null) return base && base.diff.to_version === graph.version ? display(graph, base.graph, base.diff) : null;
    return display(graph);
  }, [graph, shownVersion, base, preview, route.diff]);

  useEffect(() => {
    if (!disp || folded0.current) return;
    folded0.current = true;
    if (disp.nodes.length > FOLD_ABOVE) {
      setCollapsed(new Set([...disp.grouping.groups.values()].filter((g) => g.depth === 0).map((g) => g.id)));
    }
  }, [disp]);

  const fitKey = `${name}:${direction}:${fitGen}`;
  useEffect(() => {
    if (!disp) return;
    const f = fold(disp, collapsed);
    const mine = ++seq.current;
    setPending(true);
    layout(f, direction).then(
      (placed) => {
        if (mine !== seq.current) return;
        setShown({ display: disp, folded: f, placed, seq: mine, fitKey });
        setPending(false);
      },
      (e: unknown) => {
        if (mine === seq.current) {
          setPending(false);
          fail(e);
        }
      },
    );
  }, [disp, collapsed, direction, fitKey]);

  const select = useCallback((id: string | null) => {
    go({ node: id }, { replace: true });
    if (id && !id.startsWith("group:")) setTab("node");
  }, [go]);

  const toggleGroup = useCallback((prefix: string) => {
    setCollapsed((old) => {
      const next = new Set(old);
      if (next.has(prefix)) next.delete(prefix);
      else next.add(prefix);
      return next;
    });
  }, []);

  const openVersion = useCallback((v: number | null, diffFrom: number | null) => {
    setPreview(null);
    setEdit(null);
    go({ version: v === current ? null : v, diff: diffFrom });
  }, [go, current]);

  const onCommitted = useCallback((r: EditResponse) => {
    setEdit(null);
    setPreview(null);
    setVersions((vl) => (vl ? { ...vl, current: Math.max(vl.current, r.version) } : vl));
    say(`v${r.version} committed and live in ${(r.timings_ms.total ?? 0).toFixed(1)} ms: ${summaryOf(r)}`);
    go({ version: null, diff: null }, { replace: true });
  }, [go]);

  const onPreview = useCallback((r: EditResponse | null) => setPreview(r), []);

  const selectedId = route.node;
  const panelGraph = preview?.graph && selectedId && !graph?.nodes.some((n) => n.id === selectedId) ? preview.graph
    : base && selectedId && !graph?.nodes.some((n) => n.id === selectedId) ? base.graph : graph;
  const selectedNode = panelGraph?.nodes.find((n) => n.id === selectedId) ?? null;
  const editable = following && !preview && graph !== null && graph.version === current;
  const d = shown?.display.diff;

  return (
    <main className="model-view">
      <div className="stage">
        <div className="toolbar" role="toolbar" aria-label="graph">
          <h1 className="model-name">{name}</h1>
          <span className={`live-dot ${live}`} data-model-live={live} title={`version stream: ${live}`}><span className="dot" aria-hidden="true" />{live === "live" ? "live" : live}</span>
          {shown && (
            <span className="status muted" data-testid="status">
              v{shown.display.version} · {grouped(shown.display.nodes.length)} nodes · {compact(shown.display.nodes.reduce((a, n) => a + n.node.params, 0))} params · layout {Math.round(shown.placed.ms)} ms
            </span>
          )}
          {pending && <span className="pending" role="status">laying out…</span>}
          <div className="spacer" />
          <button type="button" onClick={() => graphRef.current?.fit(true)} title="the whole graph (key 0)">Fit all</button>
          <button type="button" aria-label="zoom out" onClick={() => graphRef.current?.zoomBy(0.8)}>−</button>
          <button type="button" aria-label="zoom in" onClick={() => graphRef.current?.zoomBy(1.25)}>+</button>
          {disp && disp.grouping.groups.size > 0 && (
            <>
              <button type="button" onClick={() => {
                setCollapsed(new Set([...disp.grouping.groups.values()].filter((g) => g.depth === 0).map((g) => g.id)));
                setFitGen((n) => n + 1);
              }}>Collapse groups</button>
              <button type="button" onClick={() => {
                setCollapsed(new Set());
                setFitGen((n) => n + 1);
              }}>Expand all</button>
            </>
          )}
          <button type="button" aria-label={`lay out ${direction === "DOWN" ? "left to right" : "top to bottom"}`}
            onClick={() => setDirection((x) => (x === "DOWN" ? "RIGHT" : "DOWN"))}>{direction === "DOWN" ? "↓" : "→"}</button>
        </div>
        {deleted && <div className="banner danger" role="alert">The model {name} was deleted.</div>}
        {error && !deleted && <div className="banner danger" role="alert">{error}</div>}
        {!following && current !== null && (
          <div className="banner" role="status">
            Viewing v{route.version}; the model is at v{current}.
            <button type="button" className="small" onClick={() => openVersion(null, null)}>Follow live</button>
          </div>
        )}
        {d && !preview && (
          <div className="banner diff-banner" role="status" data-testid="diff-banner">
            <span>Diff v{d.from_version} → v{d.to_version}:</span>
            <span className="m-added">{d.added.length} added</span>
            <span className="m-removed">{d.removed.length} removed</span>
            <span className="m-changed">{d.changed.length} changed</span>
            <button type="button" className="small" onClick={() => go({ diff: null })}>Close diff</button>
          </div>
        )}
        {preview && (
          <div className="banner preview-banner" role="status" data-testid="preview-banner">
            Preview of v{preview.version} (dry run, not committed): {summaryOf(preview)}.
            <button type="button" className="small" onClick={() => setPreview(null)}>Discard</button>
          </div>
        )}
        <GraphView
          handle={graphRef}
          shown={shown}
          preview={preview !== null}
          selected={selectedId}
          flash={flash}
          onSelect={select}
          onToggleGroup={toggleGroup}
        />
        {toast && <div className="toast" role="status" key={toast.key}>{toast.text}</div>}
      </div>
      <aside className="side">
        <div className="tabs" role="tablist" aria-label="panels">
          {(["node", "versions", "serving"] as Tab[]).map((t) => (
            <button key={t} type="button" role="tab" id={`tab-${t}`} aria-selected={tab === t} aria-controls={`panel-${t}`}
              className={tab === t ? "on" : ""} onClick={() => setTab(t)}>
              {t === "node" ? (selectedNode ? selectedNode.id : "node") : t === "versions" ? `versions${versions ? ` (${versions.versions.length})` : ""}` : "serving"}
            </button>
          ))}
        </div>
        <div className="panel" role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`} tabIndex={0}>
          {tab === "node" && !selectedNode && <p className="muted">Select a node (click it, or focus the graph and use the arrow keys).</p>}
          {tab === "node" && selectedNode && panelGraph && edit && edit.node === selectedNode.id && graph && (
            <EditPanel key={`${edit.mode}:${edit.node}`} model={name} graph={graph} node={selectedNode} mode={edit.mode} catalogue={catalogue}
              onPreview={onPreview} onCommitted={onCommitted} onAuthError={onAuthError} onClose={() => setEdit(null)} />
          )}
          {tab === "node" && selectedNode && panelGraph && (
            <NodePanel model={name} graph={panelGraph} node={selectedNode} editable={editable && !edit} current={current}
              onEdit={(mode) => setEdit({ mode, node: selectedNode.id })} onOpenVersion={(v, p) => openVersion(v, p)} onSelect={select} />
          )}
          {tab === "versions" && (
            <Timeline model={name} versions={versions} shown={shownVersion} diffFrom={route.diff} onOpen={openVersion}
              onChanged={loadVersions} onAuthError={onAuthError} />
          )}
          {tab === "serving" && <ServingPanel focus={name} {...serving} />}
        </div>
      </aside>
    </main>
  );
}
