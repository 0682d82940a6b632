// The panel of one node: its layer config, input and output shapes, parameter count, a summary of its weights
// (GET .../nodes/{id}/weights), the versions that changed it (GET .../nodes/{id}/versions), and its edits.
import { useEffect, useState } from "react";
import { api, ApiError } from "../api";
import { ago, category, CATEGORY_LABEL, describeOps, fmtShape, fmtValue, grouped, stat, summary } from "../format";
import type { Graph, GraphNode, NodeHistory, NodeWeights, TensorStats } from "../types";
import type { EditMode } from "./EditPanel";

interface Props {
  model: string;
  graph: Graph;
  node: GraphNode;
  editable: boolean;
  current: number | null;
  /** Its name in its module, and its module path (null when the graph has no hierarchy). */
  local: string;
  path: string | null;
  /** What another node is called on the page (its local name). */
  nameOf(id: string): string;
  onEdit(mode: EditMode): void;
  onOpenVersion(v: number, diffFrom: number | null): void;
  onSelect(id: string): void;
}

function useAsync<T>(load: () => Promise<T>, deps: unknown[]): { data: T | null; error: string | null } {
  const [state, setState] = useState<{ data: T | null; error: string | null }>({ data: null, error: null });
  useEffect(() => {
    let live = true;
    setState({ data: null, error: null });
    load().then(
      (data) => live && setState({ data, error: null }),
      (e: unknown) => live && setState({ data: null, error: e instanceof ApiError ? e.message : String(e) }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return state;
}

/** min..max as a bar, the mean ± std as a band inside it: the shape of a tensor's values at a glance. */
function Range({ t }: { t: TensorStats }) {
  if (t.min === null || t.max === null || t.mean === null || t.std === null) return null;
  const span = t.max - t.min || 1;
  const pos = (x: number) => Math.max(0, Math.min(100, ((x - t.min!) / span) * 100));
  const zero = t.min < 0 && t.max > 0 ? pos(0) : null;
  return (
    <svg className="range" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">
      <rect className="range-all" x={0} y={3.5} width={100} height={3} />
      <rect className="range-std" x={pos(t.mean - t.std)} y={1.5} width={Math.max(0.8, pos(t.mean + t.std) - pos(t.mean - t.std))} height={7} />
      {zero !== null && <rect className="range-zero" x={zero - 0.3} y={0} width={0.6} height={10} />}
      <rect className="range-mean" x={pos(t.mean) - 0.6} y={0} width={1.2} height={10} />
    </svg>
  );
}

export function NodePanel({ model, graph, node, editable, current, local, path, nameOf, onEdit, onOpenVersion, onSelect }: Props) {
  const committed = current === null || graph.version <= current; // a dry-run preview's version does not exist
  const weights = useAsync<NodeWeights | null>(
    () => (node.kind === "layer" && committed ? api.weights(model, node.id, graph.version) : Promise.resolve(null)),
    [model, node.id, graph.version, node.kind, committed],
  );
  const history = useAsync<NodeHistory | null>(
    () => (node.kind === "layer" || node.kind === "function" ? api.nodeVersions(model, node.id) : Promise.resolve(null)),
    [model, node.id, current, node.kind],
  );
  const inputs = node.inputs.map((id) => graph.nodes.find((n) => n.id === id)).filter((n): n is GraphNode => !!n);
  const readers = graph.nodes.filter((n) => n.inputs.includes(node.id));
  const cat = category(node);
  const config = Object.entries(node.layer ?? {}).filter(([k]) => k !== "type");
  const canEdit = editable && (node.kind === "layer" || node.kind === "function");
  return (
    <section className="node-panel" aria-label={`node ${node.id}`} data-panel-node={node.id}>
      <header className="panel-head">
        <span className={`chip cat-${cat}`} aria-hidden="true" />
        <div>
          <h2>{local}</h2>
          {path && path !== local && <p className="crumb" data-testid="node-path"><code>{path}</code></p>}
          <p className="muted">{summary(node)} · {CATEGORY_LABEL[cat]}</p>
          {node.id !== local && <p className="muted small">id <code>{node.id}</code></p>}
        </div>
      </header>
      <dl className="facts">
        <dt>output</dt>
        <dd><code>{fmtShape(node.shape)}</code> {node.datatype}</dd>
        <dt>inputs</dt>
        <dd>
          {inputs.length === 0 ? "—" : inputs.map((i) => (
            <button key={i.id} type="button" className="link" title={i.id} onClick={() => onSelect(i.id)}>
              {nameOf(i.id)} <code>{fmtShape(i.shape)}</code>
            </button>
          ))}
        </dd>
        <dt>read by</dt>
        <dd>
          {readers.length === 0 ? "—" : readers.map((r) => (
            <button key={r.id} type="button" className="link" title={r.id} onClick={() => onSelect(r.id)}>{nameOf(r.id)}</button>
          ))}
        </dd>
        <dt>parameters</dt>
        <dd data-testid="node-params">{grouped(node.params)}</dd>
        {node.kind === "function" && (
          <>
            <dt>function</dt>
            <dd><code>{node.function}({Object.entries(node.args ?? {}).map(([k, v]) => `${k}=${fmtValue(v)}`).join(", ")})</code></dd>
          </>
        )}
      </dl>
      {node.layer && (
        <>
          <h3>Layer config</h3>
          <table className="config">
            <tbody>
              <tr><th scope="row">type</th><td><code>{node.layer.type}</code></td></tr>
              {config.map(([k, v]) => (
                <tr key={k}><th scope="row">{k}</th><td><code>{typeof v === "object" ? JSON.stringify(v) : String(v)}</code></td></tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {node.kind === "layer" && (
        <>
          <h3>Weights <span className="muted">at v{graph.version}</span></h3>
          {weights.error && <p className="form-error" role="alert">{weights.error}</p>}
          {!committed && <p className="muted">Not committed yet: the weights exist once the edit is applied.</p>}
          {weights.data && weights.data.tensors.length === 0 && <p className="muted">This layer has no tensors.</p>}
          {weights.data && weights.data.tensors.length > 0 && (
            <ul className="weights" data-testid="weights">
              {weights.data.tensors.map((t) => (
                <li key={t.name} data-tensor={t.name}>
                  <div className="w-head">
                    <strong>{t.name}</strong>
                    <span className="muted small"><code>{fmtShape(t.shape)}</code> {t.dtype} · {grouped(t.numel)}{t.kind === "buffer" ? " · buffer" : ""}</span>
                  </div>
                  <Range t={t} />
                  <dl className="w-stats">
                    {(["mean", "std", "min", "max"] as const).map((k) => (
                      <div key={k}><dt>{k}</dt><dd data-stat={k}>{stat(t[k])}</dd></div>
                    ))}
                  </dl>
                  {t.nonfinite > 0 && <p className="warn small">{grouped(t.nonfinite)} NaN or infinite values (left out of the statistics)</p>}
                </li>
              ))}
            </ul>
          )}
        </>
      )}
      {history.data && (
        <>
          <h3>Versions that changed it</h3>
          <ol className="node-history" data-testid="node-history">
            {history.data.versions.map((v) => (
              <li key={v.version} data-version={v.version}>
                <button type="button" className="link" onClick={() => onOpenVersion(v.version, v.parent)}>
                  <strong>v{v.version}</strong> {v.change}{v.what.length ? ` (${v.what.join(", ")})` : ""}
                </button>
                <span className="muted small"> {describeOps(v.ops)} · {ago(v.created_at)}</span>
              </li>
            ))}
          </ol>
        </>
      )}
      {canEdit && (
        <div className="actions" role="group" aria-label="edit this node">
          <button type="button" onClick={() => onEdit("insert-after")}>Insert after</button>
          <button type="button" onClick={() => onEdit("insert-before")}>Insert before</button>
          {node.kind === "layer" && <button type="button" onClick={() => onEdit("replace")}>Replace</button>}
          <button type="button" className="danger" onClick={() => onEdit("remove")}>Remove</button>
        </div>
      )}
      {node.kind === "input" && editable && (
        <div className="actions" role="group" aria-label="edit after the input">
          <button type="button" onClick={() => onEdit("insert-after")}>Insert after</button>
        </div>
      )}
    </section>
  );
}
