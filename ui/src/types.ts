// The JSON shapes of the server's public API that the page reads (docs/API.md).

export type Kind = "input" | "layer" | "function" | "output";

export interface TensorSpec {
  name: string;
  datatype: string;
  shape: number[];
}

export interface GraphNode {
  id: string;
  kind: Kind;
  layer?: Record<string, unknown> & { type: string };
  function?: string | null;
  args?: Record<string, unknown> | null;
  inputs: string[];
  shape: number[];
  datatype: string;
  params: number;
}

export interface Graph {
  model: string;
  version: number;
  parent: number | null;
  created_at: number;
  ops: Op[];
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  nodes: GraphNode[];
  edges: { source: string; target: string }[];
  totals: { nodes: number; params: number };
}

export type Op = Record<string, unknown> & { op: string };

export interface ModelInfo {
  name: string;
  version: number;
  versions: number;
  resident_versions: number[];
  device: string;
  queue_depth: number;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  params: number;
}

export interface VersionInfo {
  version: number;
  parent: number | null;
  created_at: number;
  ops: Op[];
  resident: boolean;
  pinned: boolean;
}

export interface VersionList {
  model: string;
  current: number;
  versions: VersionInfo[];
}

export type Change = "layer" | "function" | "inputs" | "weights" | "shape";

export interface GraphDiff {
  model: string;
  from_version: number;
  to_version: number;
  added: string[];
  removed: string[];
  changed: { id: string; changes: Change[] }[];
  outputs_changed: boolean;
}

export interface EditResponse {
  model: string;
  version: number;
  previous_version: number;
  dry_run: boolean;
  diff: GraphDiff;
  timings_ms: Record<string, number>;
  graph: Graph | null;
}

export interface TensorStats {
  name: string;
  kind: "parameter" | "buffer";
  shape: number[];
  dtype: string;
  numel: number;
  mean: number | null;
  std: number | null;
  min: number | null;
  max: number | null;
  nonfinite: number;
}

export interface NodeWeights {
  model: string;
  version: number;
  node: string;
  tensors: TensorStats[];
}

export interface NodeVersion {
  version: number;
  parent: number | null;
  created_at: number;
  change: "added" | "changed" | "removed";
  what: Change[];
  ops: Op[];
}

export interface NodeHistory {
  model: string;
  node: string;
  versions: NodeVersion[];
}

/** A JSON schema fragment, as `GET /v1/catalogue` returns it (pydantic's output). */
export interface JsonSchema {
  type?: string;
  title?: string;
  description?: string;
  const?: unknown;
  default?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minItems?: number;
  maxItems?: number;
  items?: JsonSchema;
  prefixItems?: JsonSchema[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  discriminator?: { propertyName: string; mapping: Record<string, string> };
}
