// The JSON shapes of the server's public API that the page reads (docs/API.md).

export type Kind = "input" | "layer" | "function" | "parameter" | "output";

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
  /** The node's module path, dot-separated, its own name last (`distilbert.transformer.layer.0.attention.q_lin`),
   *  where import recorded one. */
  path?: string | null;
  parameter?: { shape: number[]; datatype?: string } | null;
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
  /** The newest version, staged ones included. */
  latest?: number;
  /** The id of the rollout running on this model, if one is. */
  rollout?: string | null;
}

export interface VersionInfo {
  version: number;
  parent: number | null;
  created_at: number;
  ops: Op[];
  resident: boolean;
  pinned: boolean;
  /** Committed without becoming current (`stage: true`): it serves only requests that name it. */
  staged?: boolean;
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

/** `PUT /v1/models/{m}/rollout`'s body. */
export interface RolloutSpec {
  candidate: number;
  shadow?: number;
  canary?: number;
  sticky_header?: string | null;
  gates?: Record<string, number | string | null> | null;
  eval_dataset?: string | null;
}

export interface RoleStats {
  requests: number;
  errors: number;
  error_rate: number | null;
  p50_ms: number | null;
  p99_ms: number | null;
}

export interface OutputComparison {
  rows: number;
  agreement: number | null;
  rule: string;
  max_abs: { p50: number | null; p99: number | null };
  relative_l2: { p50: number | null; p99: number | null };
  flips: { classes: number; changed: { from: number; to: number; count: number }[] } | null;
}

export interface GateState {
  bound: number;
  value: number | null;
  ok: boolean | null;
  rule?: string;
}

/** `GET /v1/models/{m}/rollout`: the running rollout with its live evidence, or the last one that ended. */
export interface Rollout {
  id: string;
  candidate: number;
  baseline: number;
  state: "evaluating" | "running" | "promoted" | "aborted";
  spec: RolloutSpec;
  started_at: number;
  ended_at: number | null;
  reason: string | null;
  evidence: {
    requests: number;
    roles: { current: RoleStats; candidate: RoleStats };
    shadow: { runs: number; dropped: number };
    /** The compute time of shadowed requests on both sides: comparable where end-to-end latencies are not (a
     *  shadow run waits for idle time by design). */
    shadow_compute?: Record<"current" | "candidate", { p50_ms: number | null; p99_ms: number | null }>;
    outputs: OutputComparison[];
    evaluation: Record<string, unknown> | null;
  } | null;
  gates: Record<string, GateState> | null;
  promoted_as: number | null;
}

/** An `eval` dataset's score of one version: `accuracy` (labels) or `mse` (targets). */
export interface JobScore {
  version?: number;
  step?: number;
  dataset: string;
  rows: number;
  accuracy?: number;
  mse?: number;
}

/** `GET /v1/models/{m}/jobs/{id}`: a fit job's record (docs/API.md "Fit jobs and feedback"). */
export interface Job {
  id: string;
  model: string;
  spec: Record<string, unknown> & { dataset: string; loss?: string; optimizer?: string; lr?: number; eval?: string | null };
  state: "running" | "succeeded" | "failed" | "cancelled";
  base_version: number;
  /** The staged version the job committed (`succeeded` only). */
  version: number | null;
  train: string[];
  steps: number;
  step: number;
  loss: number | null;
  /** Every `loss_curve_stride`-th step's loss (and the last). */
  loss_curve: number[];
  loss_curve_stride: number;
  eval_before: JobScore | null;
  eval_after: JobScore | null;
  eval_curve: JobScore[];
  seed: number;
  started_at: number;
  ended_at: number | null;
  seconds: number;
  error: string | null;
  replica: string | null;
}

/** A `job` event of the model's stream: the job's progress, without its curve. */
export interface JobEvent {
  model: string;
  job: string;
  event: "started" | "progress" | "succeeded" | "failed" | "cancelled";
  state: Job["state"];
  step: number;
  steps: number;
  loss: number | null;
  version: number | null;
}
