// The server's public REST API, as the page uses it: same routes as any client (docs/API.md), same origin.
import type {
  EditResponse, Graph, GraphDiff, Job, JsonSchema, ModelInfo, NodeHistory, NodeWeights, Op, Rollout, RolloutSpec,
  VersionList,
} from "./types";

/** A refusal from the server: its `error` words and the structured fields (`op`, `node`, `field`, ...). */
export class ApiError extends Error {
  readonly status: number;
  readonly fields: Record<string, unknown>;

  constructor(status: number, message: string, fields: Record<string, unknown> = {}) {
    super(message);
    this.status = status;
    this.fields = fields;
  }
}

const TOKEN_KEY = "morphserve.token";

/** The admin token lives in sessionStorage only: typed once per browser session, gone when it ends. */
/** The message of a failed call; a refused token (401/403) is also reported to `onAuthError`, which flags the
 * token field. */
export function failure(e: unknown, onAuthError: (msg: string) => void): string {
  const msg = e instanceof ApiError ? e.message : String(e);
  if (e instanceof ApiError && (e.status === 401 || e.status === 403)) onAuthError(msg);
  return msg;
}

export const token = {
  get: (): string => sessionStorage.getItem(TOKEN_KEY) ?? "",
  set: (value: string): void => {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

const enc = encodeURIComponent;

async function request<T>(method: string, path: string, body?: unknown, cache: RequestCache = "default"): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const t = token.get();
  if (t && method !== "GET") headers.Authorization = `Bearer ${t}`;
  let resp: Response;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache });
  } catch {
    throw new ApiError(0, "the server cannot be reached");
  }
  const text = await resp.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: a proxy's page */
  }
  if (!resp.ok) {
    const doc = (data && typeof data === "object" ? data : {}) as Record<string, unknown>;
    const { error, ...fields } = doc;
    throw new ApiError(resp.status, typeof error === "string" ? error : `${resp.status} ${resp.statusText}`, fields);
  }
  return data as T;
}

export const api = {
  models: () => request<{ models: ModelInfo[] }>("GET", "/v1/models").then((r) => r.models),
  model: (m: string) => request<ModelInfo>("GET", `/v1/models/${enc(m)}`),
  /** One version's graph. A version never changes, so the browser keeps it and revalidates with its ETag (the
   *  server answers 304): `fresh` skips the browser's copy (a model deleted and created again under its name). */
  graph: (m: string, version: number, fresh = false) =>
    request<Graph>("GET", `/v1/models/${enc(m)}/graph?version=${version}`, undefined, fresh ? "reload" : "default"),
  versions: (m: string) => request<VersionList>("GET", `/v1/models/${enc(m)}/versions`),
  diff: (m: string, from: number, to: number) =>
    request<GraphDiff>("GET", `/v1/models/${enc(m)}/diff?from=${from}&to=${to}`),
  catalogue: () => request<JsonSchema>("GET", "/v1/catalogue"),
  weights: (m: string, node: string, version: number) =>
    request<NodeWeights>("GET", `/v1/models/${enc(m)}/nodes/${enc(node)}/weights?version=${version}`),
  nodeVersions: (m: string, node: string) =>
    request<NodeHistory>("GET", `/v1/models/${enc(m)}/nodes/${enc(node)}/versions`),
  edit: (m: string, ops: Op[], opts: { dryRun: boolean; ifVersion?: number; allowOutputChange?: boolean }) =>
    request<EditResponse>("POST", `/v1/models/${enc(m)}/edits`, {
      ops, dry_run: opts.dryRun, if_version: opts.ifVersion, allow_output_change: opts.allowOutputChange ?? false,
    }),
  rollback: (m: string, to: number, ifVersion?: number) =>
    request<EditResponse>("POST", `/v1/models/${enc(m)}/rollback`, { version: to, if_version: ifVersion }),
  pin: (m: string, v: number, pinned: boolean) =>
    request<unknown>(pinned ? "POST" : "DELETE", `/v1/models/${enc(m)}/versions/${v}/pin`),
  rollout: (m: string) => request<Rollout>("GET", `/v1/models/${enc(m)}/rollout`),
  startRollout: (m: string, spec: RolloutSpec) => request<Rollout>("PUT", `/v1/models/${enc(m)}/rollout`, spec),
  promote: (m: string) => request<Rollout>("POST", `/v1/models/${enc(m)}/rollout/promote`),
  abort: (m: string) => request<Rollout>("POST", `/v1/models/${enc(m)}/rollout/abort`),
  /** A model's fit jobs; read afresh each time (a running job's record changes every step). */
  jobs: (m: string) =>
    request<{ model: string; jobs: Job[] }>("GET", `/v1/models/${enc(m)}/jobs`, undefined, "no-store").then((r) => r.jobs),
  job: (m: string, id: string) => request<Job>("GET", `/v1/models/${enc(m)}/jobs/${enc(id)}`, undefined, "no-store"),
  cancelJob: (m: string, id: string) => request<Job>("DELETE", `/v1/models/${enc(m)}/jobs/${enc(id)}`),
  metrics: async (): Promise<string> => {
    const resp = await fetch("/metrics");
    if (!resp.ok) throw new ApiError(resp.status, "metrics unavailable");
    return resp.text();
  },
};

export const eventsUrl = (m: string, since: number) => `/v1/models/${enc(m)}/events?since=${since}`;
export const serverEventsUrl = "/v1/events";
