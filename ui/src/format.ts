// How things read on the page: layer summaries, shapes, counts, times, op descriptions, and colours by kind.
import type { GraphNode, Op } from "./types";

export type Category =
  | "input" | "output" | "dense" | "norm" | "activation" | "pool" | "reshape" | "regular" | "container" | "function";

const CATEGORY_OF: Record<string, Category> = {
  Linear: "dense", Conv1d: "dense", Conv2d: "dense", Embedding: "dense",
  BatchNorm1d: "norm", BatchNorm2d: "norm", LayerNorm: "norm", GroupNorm: "norm",
  ReLU: "activation", LeakyReLU: "activation", GELU: "activation", SiLU: "activation", Tanh: "activation",
  Sigmoid: "activation", Softmax: "activation",
  MaxPool2d: "pool", AvgPool2d: "pool", AdaptiveAvgPool2d: "pool",
  Flatten: "reshape",
  Dropout: "regular", Identity: "regular",
  Sequential: "container", Residual: "container",
};

export function category(n: GraphNode): Category {
  if (n.kind === "input" || n.kind === "output") return n.kind;
  if (n.kind === "function") return n.function === "flatten" ? "reshape" : "function";
  if (n.kind === "parameter") return "regular";
  return CATEGORY_OF[n.layer?.type ?? ""] ?? "dense";
}

export const CATEGORY_LABEL: Record<Category, string> = {
  input: "input", output: "output", dense: "weights (linear, conv, embedding)", norm: "normalisation",
  activation: "activation", pool: "pooling", reshape: "reshape", regular: "dropout / identity",
  container: "sequential / residual", function: "function",
};

/** `Linear 64→128`, `Conv2d 3→16 k3 s2`, `BatchNorm2d 16`, `add`: the type and the arguments that matter. */
export function summary(n: GraphNode): string {
  if (n.kind === "input") return "input";
  if (n.kind === "output") return "output";
  if (n.kind === "parameter") return "parameter";
  if (n.kind === "function") {
    const args = Object.entries(n.args ?? {}).map(([k, v]) => `${k}=${fmtValue(v)}`).join(" ");
    return args ? `${n.function} ${args}` : String(n.function);
  }
  const l = n.layer ?? { type: "?" };
  const a = l as Record<string, unknown>;
  switch (l.type) {
    case "Linear": return `Linear ${a.in_features}→${a.out_features}`;
    case "Conv1d":
    case "Conv2d": {
      const extra = [`k${fmtValue(a.kernel_size)}`];
      if (a.stride !== 1 && a.stride !== undefined) extra.push(`s${fmtValue(a.stride)}`);
      if (a.groups !== 1 && a.groups !== undefined) extra.push(`g${a.groups}`);
      return `${l.type} ${a.in_channels}→${a.out_channels} ${extra.join(" ")}`;
    }
    case "BatchNorm1d":
    case "BatchNorm2d": return `${l.type} ${a.num_features}`;
    case "LayerNorm": return `LayerNorm ${fmtValue(a.normalized_shape)}`;
    case "GroupNorm": return `GroupNorm ${a.num_groups}×${a.num_channels}`;
    case "Embedding": return `Embedding ${a.num_embeddings}×${a.embedding_dim}`;
    case "Dropout": return `Dropout p=${a.p}`;
    case "MaxPool2d":
    case "AvgPool2d": return `${l.type} k${fmtValue(a.kernel_size)}`;
    case "AdaptiveAvgPool2d": return `AdaptiveAvgPool2d ${fmtValue(a.output_size)}`;
    case "Sequential": return `Sequential ×${(a.layers as unknown[] | undefined)?.length ?? 0}`;
    case "Residual": return `Residual ×${(a.body as unknown[] | undefined)?.length ?? 0}`;
    default: return l.type;
  }
}

export function fmtValue(v: unknown): string {
  if (Array.isArray(v)) {
    if (v.some((x) => typeof x === "object" && x !== null)) return `[${v.map(fmtValue).join(", ")}]`;
    return v.every((x) => x === v[0]) && v.length > 0 ? String(v[0]) : v.join("×");
  }
  if (typeof v === "object" && v !== null) return JSON.stringify(v);
  return String(v);
}

/** `[?, 128]`: -1 (the batch and other variable dimensions) reads as `?`. */
export const fmtShape = (shape: number[]): string => `[${shape.map((d) => (d === -1 ? "?" : d)).join(", ")}]`;

/** 1234 → `1.2k`, 2345678 → `2.3M`. */
export function compact(n: number): string {
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  if (n < 1e9) return `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)}M`;
  return `${(n / 1e9).toFixed(1)}B`;
}

export const grouped = (n: number): string => n.toLocaleString("en-US");

/** A statistic: 4 significant digits, exponent form outside [1e-3, 1e5). */
export function stat(x: number | null): string {
  if (x === null) return "—";
  if (x === 0) return "0";
  const a = Math.abs(x);
  return a >= 1e5 || a < 1e-3 ? x.toExponential(2) : x.toPrecision(4);
}

export function ago(seconds: number, now = Date.now() / 1000): string {
  const d = Math.max(0, now - seconds);
  if (d < 5) return "just now";
  if (d < 60) return `${Math.floor(d)} s ago`;
  if (d < 3600) return `${Math.floor(d / 60)} min ago`;
  if (d < 86400) return `${Math.floor(d / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

export const clock = (seconds: number): string => new Date(seconds * 1000).toLocaleTimeString();

/** One line per op, as the CLI's `versions` says it. */
export function describeOp(op: Op): string {
  const layer = (op.layer ?? {}) as { type?: string };
  switch (op.op) {
    case "insert": {
      const where = op.after ? `after ${op.after}` : `before ${op.before}`;
      return `insert ${layer.type ?? "?"}${op.name ? ` ${op.name}` : ""} ${where}${op.init === "identity" ? " (identity)" : ""}`;
    }
    case "remove": return `remove ${op.node}`;
    case "replace": return `replace ${op.node} with ${layer.type ?? "?"}`;
    case "set_weights": return `set weights of ${op.node}`;
    case "rollback": return `rollback to v${op.to ?? op.version}`;
    case "fit": return `fit ${Array.isArray(op.train) ? op.train.join(", ") : "?"} on ${op.dataset} (${op.steps} steps)`;
    default: return op.op;
  }
}

export function describeOps(ops: Op[]): string {
  if (ops.length === 0) return "created";
  return ops.map(describeOp).join("; ");
}
