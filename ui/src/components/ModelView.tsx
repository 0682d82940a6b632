// One model: the drawing of the shown version (live by default), a diff or a dry-run preview over it, and the
// side panel (node, versions, rollout, serving). Follows GET /v1/models/{m}/events: a version committed by anyone
// is fetched and drawn as it lands, what it changed glowing for a few seconds and marked on the groups that hold
// it until the next one; a rollout's events refresh its panel, a fit job's events its jobs panel.
//
// Big graphs (over FOLD_ABOVE nodes) open with every group collapsed, so that the first drawing is the top level;
// a group opens on demand (click, Enter, or search), and the layout worker lays out only what that changed.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { api, ApiError, eventsUrl } from "../api";
import { compact, describeOps, grouped } from "../format";
import { groupChain, type Grouping } from "../graph/groups";
import { layout } from "../graph/layout";
import { type Display, display, fold, groupElementId } from "../graph/model";
import { useEventSource } from "../live";
import type { Route } from "../route";
import type { EditResponse, Graph, GraphDiff, JobEvent, JsonSchema, Op, VersionList } from "../types";
import { EditPanel, type EditMode, summaryOf } from "./EditPanel";
import { type GraphHandle, GraphView, type Shown } from "./GraphView";
import { JobsPanel } from "./JobsPanel";
import { NodePanel } from "./NodePanel";
import { RolloutPanel } from "./RolloutPanel";
import { Search } from "./Search";
import { ServingPanel, type useServingStats } from "./ServingPanel";
import { Timeline } from "./Timeline";

type Go = (next: Partial<Route>, opts?: { replace?: boolean; reset?: boolean }) => void;
type Tab = "node" | "versions" | "rollout" | "jobs" | "serving";

interface Props {
  name: string;
  route: Route;
  go: Go;
  serving: ReturnType<typeof useServingStats>;
  onAuthError(message: string): void;
}

/** Graphs with more nodes than this open with their groups collapsed. */
const FOLD_ABOVE = 150;
/** A top level this small whose biggest group holds most of the model is a wrapper (`distilbert`, `encoder`): that
 *  group opens, while what shows stays under OPEN_LIMIT elements. */
const WRAPPER_LEVEL = 12;
const OPEN_LIMIT = 60;
const FLASH_MS = 4000;

/** Every group collapsed, then wrappers opened: the top level as the model's author would describe it. */
export function foldedStart(d: Display): Set<string> {
  const { groups, groupOf } = d.grouping;
  const collapsed = new Set(groups.keys());
  const visibleWith = (open: Set<string>) => {
    const seen = new Set<string>();
    const boxes = new Map<string, number>();
    for (const n of d.nodes) {
      let top: string | null = null;
      for (let g = groupOf.get(n.id) ?? null; g !== null; g = groups.get(g)?.parent ?? null) if (open.has(g)) top = g;
      seen.add(top === null ? n.id : `group:${top}`);
      if (top !== null) boxes.set(top, (boxes.get(top) ?? 0) + 1);
    }
    return { count: seen.size, boxes };
  };
  let now = visibleWith(collapsed);
  for (let round = 0; round < 8 && now.count <= WRAPPER_LEVEL && now.boxes.size > 0; round++) {
    const [biggest, size] = [...now.boxes].sort((a, b) => b[1] - a[1])[0]!;
    if (size * 2 < d.nodes.length) break;
    const trial = new Set(collapsed);
    trial.delete(biggest);
    const after = visibleWith(trial);
    if (after.count > OPEN_LIMIT) break;
    collapsed.delete(biggest);
    now = after;
  }
  return collapsed;
}

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
  const [recent, setRecent] = useState<ReadonlySet<string>>(new Set());
  const [collapsed, setCollapsed] = useState<ReadonlySet<string>>(new Set());
  const [fitGen, setFitGen] = useState(0); // a new value re-fits the view (folding or unfolding all groups)
  const [shown, setShown] = useState<Shown | null>(null);
  const [pending, setPending] = useState(false);
  const [tab, setTab] = useState<Tab>(route.node ? "node" : "versions");
  const [edit, setEdit] = useState<{ mode: EditMode; node: string } | null>(null);
  const [toast, setToast] = useState<{ text: string; key: number } | null>(null);
  const [catalogue, setCatalogue] = useState<JsonSchema | null>(null);
  const [rolloutTick, setRolloutTick] = useState(0);
  const [rolloutCandidate, setRolloutCandidate] = useState<number | null>(null);
  const [jobEvent, setJobEvent] = useState<{ seq: number; data: JobEvent } | null>(null);
  const seq = useRef(0);
  const folded0 = useRef(false);
  const anchor = useRef<string | null>(null);
  const revealAfter = useRef<string | null>(null);
  const graphRef = useRef<GraphHandle>(null);

  const current = versions?.current ?? null;
  const shownVersion = route.version ?? current;
  const following = route.version === null;
  const versionsRef = useRef(versions);
  versionsRef.current = versions;

  /** Each version's graph once per page (and revalidated by ETag across pages: the browser keeps the body). */
  const getGraph = useCallback(
    (v: number): Promise<Graph> => {
      let p = cache.current.get(v);
      if (!p) {
        p = api.graph(name, v).then((g) => {
          // The same name and number from an earlier model of this name (deleted, created again): fetch afresh.
          const known = versionsRef.current?.versions.find((x) => x.version === v);
          return known && Math.abs(known.created_at - g.created_at) > 1e-3 ? api.graph(name, v, true) : g;
        });
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
      setVersions(vl);
      setSince((s) => s ?? Math.max(...vl.versions.map((v) => v.version), vl.current));
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
      const e = d as { version: number; parent: number | null; ops: Op[]; created_at: number; staged?: boolean };
      setVersions((vl) => {
        if (!vl || vl.versions.some((v) => v.version === e.version)) return vl;
        const versions = [...vl.versions, { version: e.version, parent: e.parent, created_at: e.created_at, ops: e.ops,
          resident: true, pinned: false, staged: e.staged ?? false }];
        return { ...vl, current: e.staged ? vl.current : Math.max(vl.current, e.version), versions };
      });
      if (e.staged) {
        say(`v${e.version} is staged: ${describeOps(e.ops)}`);
        return;
      }
      say(`v${e.version} is live: ${describeOps(e.ops)}`);
      if (e.parent !== null) {
        api.diff(name, e.parent, e.version).then((df) => {
          const touched = new Set([...df.added, ...df.changed.map((c) => c.id)]);
          setRecent(touched);
          setFlash(touched);
          window.setTimeout(() => setFlash(new Set()), FLASH_MS);
        }, () => undefined);
      }
    },
    promoted: (d) => {
      const e = d as { version: number };
      say(`v${e.version} was promoted: it is live`);
      setVersions((vl) => (vl ? { ...vl, current: e.version,
        versions: vl.versions.map((v) => (v.version === e.version ? { ...v, staged: false } : v)) } : vl));
      loadVersions();
      setRolloutTick((n) => n + 1);
    },
    rollout: (d) => {
      const e = d as { event: string; candidate: number; reason?: string };
      if (e.event !== "running") say(`rollout of v${e.candidate} ${e.event}${e.reason ? `: ${e.reason}` : ""}`);
      setRolloutTick((n) => n + 1);
    },
    job: (d) => {
      const e = d as JobEvent;
      setJobEvent((old) => ({ seq: (old?.seq ?? 0) + 1, data: e }));
      if (e.event === "succeeded") say(`fit job ${e.job} succeeded: v${e.version} is staged`);
      else if (e.event === "failed" || e.event === "cancelled") say(`fit job ${e.job} ${e.event}`);
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

  const fitKey = `${name}:${fitGen}`;
  const recentShown = following && !preview && route.diff === null ? recent : null;
  useEffect(() => {
    if (!disp) return;
    if (!folded0.current) {
      folded0.current = true;
      if (disp.nodes.length > FOLD_ABOVE) {
        setCollapsed(foldedStart(disp)); // laid out once folded, never whole first
        return;
      }
    }
    const f = fold(disp, collapsed, recentShown ?? undefined);
    const mine = ++seq.current;
    const toward = anchor.current;
    anchor.current = null;
    setPending(true);
    layout(f, disp.grouping).then(
      (placed) => {
        if (mine !== seq.current) return;
        setShown({ display: disp, folded: f, placed, seq: mine, fitKey, anchor: toward });
        setPending(false);
      },
      (e: unknown) => {
        if (mine === seq.current) {
          setPending(false);
          fail(e);
        }
      },
    );
  }, [disp, collapsed, fitKey, recentShown]);

  useEffect(() => {
    const id = revealAfter.current;
    if (!shown || id === null) return;
    if (!shown.placed.nodes.has(id) && !(id.startsWith("group:") && shown.placed.containers.has(id.slice(6)))) return;
    revealAfter.current = null;
    graphRef.current?.reveal(id);
  }, [shown]);

  const select = useCallback((id: string | null) => {
    go({ node: id }, { replace: true });
    if (id && !id.startsWith("group:")) setTab("node");
  }, [go]);

  const toggleGroup = useCallback((prefix: string) => {
    anchor.current = groupElementId(prefix);
    setCollapsed((old) => {
      const next = new Set(old);
      if (next.has(prefix)) next.delete(prefix);
      else next.add(prefix);
      return next;
    });
  }, []);

  /** Open every group around a node, select it and bring it into view (search, the breadcrumb). */
  const goTo = useCallback((id: string, grouping: Grouping) => {
    const chain: string[] = [];
    if (id.startsWith("group:")) {
      for (let g = grouping.groups.get(id.slice(6))?.parent ?? null; g !== null; g = grouping.groups.get(g)?.parent ?? null) chain.push(g);
    } else chain.push(...groupChain(id, grouping).map((g) => g.id));
    setCollapsed((old) => (chain.some((g) => old.has(g)) ? new Set([...old].filter((g) => !chain.includes(g))) : old));
    revealAfter.current = id;
    select(id);
    graphRef.current?.reveal(id);
  }, [select]);

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
  const grouping = shown?.display.grouping ?? null;
  const localName = selectedNode ? grouping?.local.get(selectedNode.id) ?? selectedNode.id : null;
  const crumbs = selectedNode && grouping ? groupChain(selectedNode.id, grouping) : [];

  return (
    <main className="model-view">
      <div className="stage">
        <div className="toolbar" role="toolbar" aria-label="graph">
          <h1 className="model-name">{name}</h1>
          <span className={`live-dot ${live}`} data-model-live={live} title={`version stream: ${live}`}><span className="dot" aria-hidden="true" />{live === "live" ? "live" : live}</span>
          {shown && (
            <span className="status muted" data-testid="status">
              v{shown.display.version} · {grouped(shown.display.nodes.length)} nodes · {compact(shown.display.nodes.reduce((a, n) => a + (n.mark === "removed" ? 0 : n.node.params), 0))} params · layout {Math.round(shown.placed.ms)} ms
            </span>
          )}
          {pending && <span className="pending" role="status">laying out…</span>}
          <div className="spacer" />
          {shown && <Search display={shown.display} onPick={(id) => goTo(id, shown.display.grouping)} />}
          <button type="button" onClick={() => graphRef.current?.fit(true)} title="the whole graph (key 0)">Fit all</button>
          <button type="button" aria-label="zoom out" onClick={() => graphRef.current?.zoomBy(0.8)}>−</button>
          <button type="button" aria-label="zoom in" onClick={() => graphRef.current?.zoomBy(1.25)}>+</button>
          {disp && disp.grouping.groups.size > 0 && (
            <>
              <button type="button" onClick={() => {
                setCollapsed(foldedStart(disp));
                setFitGen((n) => n + 1);
              }}>Collapse groups</button>
              <button type="button" onClick={() => {
                setCollapsed(new Set());
                setFitGen((n) => n + 1);
              }}>Expand all</button>
            </>
          )}
        </div>
        {selectedNode && crumbs.length > 0 && (
          <nav className="breadcrumb" aria-label="module path of the selected node" data-testid="breadcrumb">
            {crumbs.map((g) => (
              <span key={g.id}>
                <button type="button" className="link" title={g.id} onClick={() => {
                  anchor.current = groupElementId(g.id);
                  setCollapsed((old) => new Set([...old].filter((x) => x !== g.id)));
                }}>{g.label}</button>
                <span className="sep" aria-hidden="true">›</span>
              </span>
            ))}
            <strong>{localName}</strong>
          </nav>
        )}
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
          {(["node", "versions", "rollout", "jobs", "serving"] as Tab[]).map((t) => (
            <button key={t} type="button" role="tab" id={`tab-${t}`} aria-selected={tab === t} aria-controls={`panel-${t}`}
              className={tab === t ? "on" : ""} onClick={() => setTab(t)}>
              {t === "node" ? (localName ?? "node") : t === "versions" ? `versions${versions ? ` (${versions.versions.length})` : ""}` : t}
            </button>
          ))}
        </div>
        <div className="panel" role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`} tabIndex={0}>
          {tab === "node" && !selectedNode && <p className="muted">Select a node (click it, search for it, or focus the graph and use the arrow keys).</p>}
          {tab === "node" && selectedNode && panelGraph && edit && edit.node === selectedNode.id && graph && (
            <EditPanel key={`${edit.mode}:${edit.node}`} model={name} graph={graph} node={selectedNode} mode={edit.mode} catalogue={catalogue}
              onPreview={onPreview} onCommitted={onCommitted} onAuthError={onAuthError} onClose={() => setEdit(null)} />
          )}
          {tab === "node" && selectedNode && panelGraph && (
            <NodePanel model={name} graph={panelGraph} node={selectedNode} editable={editable && !edit} current={current}
              local={localName ?? selectedNode.id} path={grouping?.path.get(selectedNode.id) ?? null}
              nameOf={(id) => grouping?.local.get(id) ?? id}
              onEdit={(mode) => setEdit({ mode, node: selectedNode.id })} onOpenVersion={(v, p) => openVersion(v, p)} onSelect={select} />
          )}
          {tab === "versions" && (
            <Timeline model={name} versions={versions} shown={shownVersion} diffFrom={route.diff} onOpen={openVersion}
              onChanged={loadVersions} onAuthError={onAuthError} onRollout={(v) => {
                setRolloutCandidate(v);
                setTab("rollout");
              }} />
          )}
          {tab === "rollout" && (
            <RolloutPanel model={name} versions={versions} tick={rolloutTick} initialCandidate={rolloutCandidate} onOpenDiff={(from, to) => openVersion(to, from)}
              onChanged={loadVersions} onAuthError={onAuthError} />
          )}
          {tab === "jobs" && (
            <JobsPanel model={name} versions={versions} event={jobEvent} onOpenVersion={openVersion} onAuthError={onAuthError}
              onRollout={(v) => {
                setRolloutCandidate(v);
                setTab("rollout");
              }} />
          )}
          {tab === "serving" && <ServingPanel focus={name} {...serving} />}
        </div>
      </aside>
    </main>
  );
}
