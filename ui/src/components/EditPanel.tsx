// Edits from the page: insert after/before a node, replace its layer, remove it. Each can be previewed first
// (POST .../edits with dry_run: the would-be graph, drawn with its diff) and is then committed with if_version,
// so that what was previewed is what lands. The server's error words are shown next to the field they name.
import { useEffect, useMemo, useState } from "react";
import { api, ApiError } from "../api";
import { category, CATEGORY_LABEL, type Category, fmtShape } from "../format";
import type { EditResponse, Graph, GraphNode, JsonSchema, Op } from "../types";
import { layerDef, layerTypes, SchemaFields, startValues, toLayer, type Values } from "./SchemaForm";

export type EditMode = "insert-after" | "insert-before" | "replace" | "remove";

interface Props {
  model: string;
  graph: Graph;
  node: GraphNode;
  mode: EditMode;
  catalogue: JsonSchema | null;
  onPreview(r: EditResponse | null): void;
  onCommitted(r: EditResponse): void;
  onAuthError(message: string): void;
  onClose(): void;
}

const TITLE: Record<EditMode, string> = {
  "insert-after": "Insert a layer after",
  "insert-before": "Insert a layer before",
  replace: "Replace the layer of",
  remove: "Remove",
};

interface Errors {
  fields: Record<string, string>;
  form: string | null;
}

const POSITION_FIELDS = new Set(["after", "before", "node"]);

/** Which form field a server error names: `ops.0.layer.in_features: ...` parts, the `field` member, or the
 *  `node` member (the anchor node, or the layer being created). Anything else is shown for the whole form. */
export function mapErrors(err: ApiError, fieldNames: Set<string>, anchor: string, created: string | null): Errors {
  const fields: Record<string, string> = {};
  const rest: string[] = [];
  const place = (loc: string, msg: string): boolean => {
    const path = loc.replace(/^ops\.\d+\./, "").replace(/^layer\./, "");
    const key = path === "layer" || path === "type" ? "type" : POSITION_FIELDS.has(path) ? "position" : path === "name" ? "name" : path;
    if (key === "type" || key === "position" || key === "name" || key === "seed" || fieldNames.has(key)) {
      fields[key] = fields[key] ? `${fields[key]}; ${msg}` : msg;
      return true;
    }
    return false;
  };
  const parts = err.message.split(/;\s+(?=ops\.\d+\.[\w.]+: )/);
  for (const part of parts) {
    const m = /^(ops\.\d+\.[\w.]+): ([\s\S]*)$/.exec(part);
    if (!(m && place(m[1]!, m[2]!))) rest.push(part);
  }
  if (rest.length && typeof err.fields.field === "string" && place(err.fields.field, rest.join("; "))) rest.length = 0;
  if (rest.length && typeof err.fields.node === "string") {
    if (err.fields.node === anchor && created !== anchor) {
      fields.position = rest.join("; ");
      rest.length = 0;
    } else if (created !== null && err.fields.node === created) {
      fields.type = rest.join("; ");
      rest.length = 0;
    }
  }
  return { fields, form: rest.length ? rest.join("; ") : null };
}

export function EditPanel({ model, graph, node, mode, catalogue, onPreview, onCommitted, onAuthError, onClose }: Props) {
  const inserting = mode === "insert-after" || mode === "insert-before";
  const inputShape = useMemo(() => {
    if (mode === "insert-after") return node.shape;
    const src = graph.nodes.find((n) => n.id === node.inputs[0]);
    return src?.shape ?? null;
  }, [graph, node, mode]);
  const types = useMemo(() => (catalogue ? layerTypes(catalogue) : []), [catalogue]);
  const [type, setType] = useState<string>(mode === "replace" && node.layer ? node.layer.type : "Linear");
  const def = catalogue ? layerDef(catalogue, type) : undefined;
  const [values, setValues] = useState<Values>({});
  const [name, setName] = useState("");
  const [init, setInit] = useState<"default" | "identity">("identity");
  const [seed, setSeed] = useState("0");
  const [keepWeights, setKeepWeights] = useState(false);
  const [allowOutputChange, setAllowOutputChange] = useState(false);
  const [errors, setErrors] = useState<Errors>({ fields: {}, form: null });
  const [busy, setBusy] = useState<"preview" | "apply" | null>(null);
  const [previewed, setPreviewed] = useState<EditResponse | null>(null);

  useEffect(() => {
    if (!def) return;
    const same = mode === "replace" && node.layer?.type === type ? (node.layer as Record<string, unknown>) : undefined;
    setValues(startValues(def, mode === "replace" ? null : inputShape, same));
  }, [def, type, mode, node, inputShape]);

  useEffect(() => () => onPreview(null), [onPreview]); // the preview goes when the form does

  const fieldNames = useMemo(() => new Set(Object.keys(def?.properties ?? {})), [def]);
  const created = inserting ? name.trim() || null : mode === "remove" ? null : node.id;

  const op = (): Op => {
    if (mode === "remove") return { op: "remove", node: node.id };
    const layer = def ? toLayer(type, def, values) : { type };
    const seedValue = /^\d+$/.test(seed.trim()) ? Number(seed.trim()) : seed;
    if (mode === "replace") return { op: "replace", node: node.id, layer, keep_weights: keepWeights, seed: seedValue };
    const o: Op = { op: "insert", [mode === "insert-after" ? "after" : "before"]: node.id, layer, init, seed: seedValue };
    if (name.trim()) o.name = name.trim();
    return o;
  };

  const run = async (dryRun: boolean) => {
    setBusy(dryRun ? "preview" : "apply");
    setErrors({ fields: {}, form: null });
    try {
      const ifVersion = !dryRun && previewed ? previewed.previous_version : graph.version;
      const r = await api.edit(model, [op()], { dryRun, ifVersion, allowOutputChange });
      if (dryRun) {
        setPreviewed(r);
        onPreview(r);
      } else {
        onPreview(null);
        onCommitted(r);
      }
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(0, String(e));
      if (err.status === 401 || err.status === 403) onAuthError(err.message);
      setErrors(mapErrors(err, fieldNames, node.id, created));
      setPreviewed(null);
      onPreview(null);
    } finally {
      setBusy(null);
    }
  };

  const grouped = useMemo(() => {
    const by = new Map<Category, string[]>();
    for (const t of types) {
      const c = category({ id: "", kind: "layer", layer: { type: t }, inputs: [], shape: [], datatype: "", params: 0 });
      by.set(c, [...(by.get(c) ?? []), t]);
    }
    return [...by];
  }, [types]);

  const fieldError = (k: string) => errors.fields[k] && <p className="field-error" id={`f-${k}-err`} role="alert">{errors.fields[k]}</p>;

  return (
    <form
      className="edit-panel"
      aria-label={`${TITLE[mode]} ${node.id}`}
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        void run(false);
      }}
    >
      <header>
        <h3>{TITLE[mode]} <code>{node.id}</code></h3>
        <button type="button" className="icon" aria-label="close the form" onClick={onClose}>✕</button>
      </header>
      {inserting && inputShape && <p className="muted">The new layer reads <code>{fmtShape(inputShape)}</code>.</p>}
      {mode === "remove" && <p>Its readers will read <code>{node.inputs[0]}</code> instead.</p>}
      <div className={`field${errors.fields.position ? " invalid" : ""}`} hidden={!errors.fields.position}>
        {fieldError("position")}
      </div>
      {mode !== "remove" && (
        <>
          <div className={`field${errors.fields.type ? " invalid" : ""}`}>
            <label htmlFor="f-type">layer type</label>
            <select id="f-type" name="layer-type" value={type} aria-describedby={errors.fields.type ? "f-type-err" : undefined}
              onChange={(e) => setType(e.target.value)}>
              {grouped.map(([c, ts]) => (
                <optgroup key={c} label={CATEGORY_LABEL[c]}>
                  {ts.map((t) => <option key={t} value={t}>{t}</option>)}
                </optgroup>
              ))}
            </select>
            {fieldError("type")}
          </div>
          {def && <SchemaFields def={def} values={values} errors={errors.fields} onChange={(k, v) => setValues((old) => ({ ...old, [k]: v }))} />}
          {inserting && (
            <>
              <div className={`field${errors.fields.name ? " invalid" : ""}`}>
                <label htmlFor="f-node-name">node id</label>
                <input id="f-node-name" name="node-name" type="text" autoComplete="off" spellCheck={false} placeholder="generated, e.g. linear_1"
                  value={name} onChange={(e) => setName(e.target.value)} />
                {fieldError("name")}
              </div>
              <div className="field">
                <label htmlFor="f-init">initial weights</label>
                <select id="f-init" name="init" value={init} onChange={(e) => setInit(e.target.value as "default" | "identity")}>
                  <option value="identity">identity (outputs unchanged)</option>
                  <option value="default">default (random, seeded)</option>
                </select>
              </div>
            </>
          )}
          {mode === "replace" && (
            <div className="field check">
              <label htmlFor="f-keep">
                <input id="f-keep" name="keep_weights" type="checkbox" checked={keepWeights} onChange={(e) => setKeepWeights(e.target.checked)} />
                keep the old weights where shapes match
              </label>
            </div>
          )}
          {(mode === "replace" || init === "default") && (
            <div className={`field${errors.fields.seed ? " invalid" : ""}`}>
              <label htmlFor="f-seed">seed</label>
              <input id="f-seed" name="seed" type="text" inputMode="numeric" value={seed} onChange={(e) => setSeed(e.target.value)} />
              {fieldError("seed")}
            </div>
          )}
        </>
      )}
      <div className="field check">
        <label htmlFor="f-allow">
          <input id="f-allow" name="allow_output_change" type="checkbox" checked={allowOutputChange}
            onChange={(e) => setAllowOutputChange(e.target.checked)} />
          allow the outputs' shape to change
        </label>
      </div>
      {errors.form && <p className="form-error" role="alert">{errors.form}</p>}
      {previewed && (
        <p className="preview-note" role="status">
          Preview of v{previewed.version}: {summaryOf(previewed)}. Nothing is committed yet.
        </p>
      )}
      <footer>
        <button type="button" disabled={busy !== null} onClick={() => void run(true)}>
          {busy === "preview" ? "Checking…" : "Preview"}
        </button>
        <button type="submit" className="primary" disabled={busy !== null}>
          {busy === "apply" ? "Committing…" : mode === "remove" ? "Remove" : "Apply"}
        </button>
      </footer>
    </form>
  );
}

export function summaryOf(r: EditResponse): string {
  const d = r.diff;
  const parts = [
    d.added.length ? `adds ${d.added.join(", ")}` : "",
    d.removed.length ? `removes ${d.removed.join(", ")}` : "",
    d.changed.length ? `changes ${d.changed.map((c) => c.id).join(", ")}` : "",
  ].filter(Boolean);
  return parts.join("; ") || "no change to the graph";
}
