// A layer's arguments as a form, generated from the catalogue's JSON schema (GET /v1/catalogue): one field per
// property, its kind, default and bounds from the schema. Values go to the server as typed; what the server
// refuses comes back with the field named, and is shown under that field.
import type { JsonSchema } from "../types";

export type FieldKind = "int" | "number" | "bool" | "enum" | "union" | "json";

export interface Field {
  name: string;
  kind: FieldKind;
  required: boolean;
  schema: JsonSchema;
  options?: string[];
  hint: string;
}

export type Values = Record<string, string | boolean>;

export function layerTypes(catalogue: JsonSchema): string[] {
  return Object.keys(catalogue.discriminator?.mapping ?? catalogue.$defs ?? {});
}

export function layerDef(catalogue: JsonSchema, type: string): JsonSchema | undefined {
  return catalogue.$defs?.[type];
}

function bounds(s: JsonSchema): string {
  const lo = s.minimum ?? (s.exclusiveMinimum !== undefined ? `>${s.exclusiveMinimum}` : undefined);
  const hi = s.maximum ?? (s.exclusiveMaximum !== undefined ? `<${s.exclusiveMaximum}` : undefined);
  if (lo !== undefined && hi !== undefined) return `${lo}…${hi}`;
  if (lo !== undefined) return `≥ ${lo}`;
  if (hi !== undefined) return `≤ ${hi}`;
  return "";
}

function kindOf(s: JsonSchema): { kind: FieldKind; options?: string[]; hint: string } {
  if (s.enum) return { kind: "enum", options: s.enum.map(String), hint: "" };
  if (s.type === "integer") return { kind: "int", hint: bounds(s) };
  if (s.type === "number") return { kind: "number", hint: bounds(s) };
  if (s.type === "boolean") return { kind: "bool", hint: "" };
  if (s.anyOf) {
    const parts: string[] = [];
    for (const a of s.anyOf) {
      if (a.type === "integer") parts.push(`an integer ${bounds(a)}`.trim());
      else if (a.type === "number") parts.push("a number");
      else if (a.type === "array") parts.push("a list, e.g. 3,3");
      else if (a.enum) parts.push(a.enum.map((x) => `“${x}”`).join(" or "));
      else if (a.type === "null") parts.push("empty for none");
    }
    return { kind: "union", hint: parts.join("; ") };
  }
  return { kind: "json", hint: s.type === "array" ? "JSON list of layer specs" : "JSON" };
}

export function fieldsOf(def: JsonSchema): Field[] {
  const required = new Set(def.required ?? []);
  return Object.entries(def.properties ?? {})
    .filter(([name]) => name !== "type")
    .map(([name, schema]) => ({ name, required: required.has(name), schema, ...kindOf(schema) }));
}

function initial(f: Field): string | boolean {
  const d = f.schema.default;
  if (f.kind === "bool") return d === undefined ? false : Boolean(d);
  if (d === undefined || d === null) return "";
  if (Array.isArray(d)) return d.join(",");
  return typeof d === "object" ? JSON.stringify(d) : String(d);
}

/** Starting values: the schema's defaults, then what fits the tensor the layer will read (its `shape`), then
 *  (for a replace of the same type) the node's current arguments. */
export function startValues(def: JsonSchema, shape: number[] | null, current?: Record<string, unknown>): Values {
  const v: Values = {};
  const fields = fieldsOf(def);
  for (const f of fields) v[f.name] = initial(f);
  const has = (n: string) => fields.some((f) => f.name === n);
  if (shape && shape.length >= 2) {
    const last = shape[shape.length - 1]!;
    const channels = shape[1]!;
    const fill = (n: string, x: number) => {
      if (has(n) && x > 0) v[n] = String(x);
    };
    fill("in_features", last);
    fill("out_features", last);
    fill("in_channels", channels);
    fill("out_channels", channels);
    fill("num_features", channels);
    fill("num_channels", channels);
    fill("normalized_shape", last);
    if (has("kernel_size") && v.kernel_size === "") v.kernel_size = "3";
    if (has("padding") && has("in_channels")) v.padding = "1";
    if (has("num_groups") && v.num_groups === "") v.num_groups = "1";
  }
  if (current) {
    for (const f of fields) {
      const x = current[f.name];
      if (x === undefined) continue;
      v[f.name] = f.kind === "bool" ? Boolean(x) : Array.isArray(x) ? x.join(",") : typeof x === "object" && x !== null ? JSON.stringify(x) : String(x);
    }
  }
  return v;
}

const INT = /^-?\d+$/;
const NUM = /^-?(\d+\.?\d*|\.\d+)(e-?\d+)?$/i;

/** The layer spec to send. Text the form cannot type (letters in a number) goes as it is, so that the server's
 *  refusal, naming the field, is what the user reads. */
export function toLayer(type: string, def: JsonSchema, values: Values): Record<string, unknown> {
  const layer: Record<string, unknown> = { type };
  for (const f of fieldsOf(def)) {
    const raw = values[f.name];
    if (f.kind === "bool") {
      layer[f.name] = Boolean(raw);
      continue;
    }
    const text = String(raw ?? "").trim();
    if (text === "") continue; // omitted: the default, or the server's "Field required"
    if (f.kind === "int" || f.kind === "number") layer[f.name] = NUM.test(text) ? Number(text) : text;
    else if (f.kind === "enum") layer[f.name] = text;
    else if (f.kind === "union") {
      if (NUM.test(text)) layer[f.name] = Number(text);
      else if (/[,x×]/.test(text) && text.split(/[,x×]/).every((p) => INT.test(p.trim()))) {
        layer[f.name] = text.split(/[,x×]/).map((p) => Number(p.trim()));
      } else layer[f.name] = text;
    } else {
      try {
        layer[f.name] = JSON.parse(text);
      } catch {
        layer[f.name] = text;
      }
    }
  }
  return layer;
}

interface Props {
  def: JsonSchema;
  values: Values;
  errors: Record<string, string>;
  onChange(name: string, value: string | boolean): void;
}

const label = (name: string) => name.replace(/_/g, " ");

export function SchemaFields({ def, values, errors, onChange }: Props) {
  return (
    <>
      {fieldsOf(def).map((f) => {
        const id = `f-${f.name}`;
        const err = errors[f.name];
        const described = [f.hint ? `${id}-hint` : "", err ? `${id}-err` : ""].filter(Boolean).join(" ") || undefined;
        return (
          <div key={f.name} className={`field${err ? " invalid" : ""}${f.kind === "bool" ? " check" : ""}`}>
            {f.kind === "bool" ? (
              <label htmlFor={id}>
                <input id={id} name={f.name} type="checkbox" checked={Boolean(values[f.name])} aria-describedby={described}
                  onChange={(e) => onChange(f.name, e.target.checked)} />
                {label(f.name)}
              </label>
            ) : (
              <>
                <label htmlFor={id}>
                  {label(f.name)}
                  {f.required && <span className="req" aria-label="required"> *</span>}
                </label>
                {f.kind === "enum" ? (
                  <select id={id} name={f.name} value={String(values[f.name] ?? "")} aria-describedby={described}
                    onChange={(e) => onChange(f.name, e.target.value)}>
                    {f.options!.map((o) => <option key={o} value={o}>{o}</option>)}
                  </select>
                ) : f.kind === "json" ? (
                  <textarea id={id} name={f.name} rows={3} spellCheck={false} value={String(values[f.name] ?? "")}
                    aria-describedby={described} aria-invalid={Boolean(err)} onChange={(e) => onChange(f.name, e.target.value)} />
                ) : (
                  <input id={id} name={f.name} type="text" autoComplete="off" spellCheck={false}
                    inputMode={f.kind === "int" ? "numeric" : f.kind === "number" ? "decimal" : "text"}
                    value={String(values[f.name] ?? "")} aria-describedby={described} aria-invalid={Boolean(err)}
                    onChange={(e) => onChange(f.name, e.target.value)} />
                )}
              </>
            )}
            {f.hint && <span className="hint" id={`${id}-hint`}>{f.hint}</span>}
            {err && <p className="field-error" id={`${id}-err`} role="alert">{err}</p>}
          </div>
        );
      })}
    </>
  );
}
