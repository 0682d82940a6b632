// The page's side of the layout: what is visible goes to the layout worker (graph/engine.ts, in a web worker so that
// a 10,000-node model never freezes the page), and comes back as boxes and edge paths in one coordinate space.
import type { LayoutInput, LayoutOutput } from "./engine";
import { HEAD } from "./engine";
import type { LayoutReply, LayoutRequest } from "./layout.worker";
import type { DisplayEdge, DisplayNode, Folded } from "./model";
import { groupElementId } from "./model";
import type { Grouping } from "./groups";

export const NODE_W = 212;
export const NODE_H = 58;
export const IO_W = 168;
export const IO_H = 44;
export const BOX_H = 86; // a collapsed group: its name, its size, its shapes in and out
export const GROUP_PAD_TOP = HEAD;

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Placed {
  nodes: Map<string, Box>; // visible nodes and collapsed group boxes (by element id)
  containers: Map<string, Box>; // expanded groups (by group id)
  edges: { edge: DisplayEdge; points: { x: number; y: number }[]; back: boolean }[];
  width: number;
  height: number;
  /** From posting to the worker to having the answer, timed on the page (performance.now). */
  ms: number;
  /** The engine's own time in the worker. */
  workerMs: number;
  /** Groups laid out afresh (the rest came from the worker's cache). */
  relaid: number;
}

let worker: Worker | null = null;
let nextSeq = 0;
const waiting = new Map<number, { resolve(o: LayoutOutput): void; reject(e: Error): void }>();

function engine(): Worker {
  if (worker) return worker;
  worker = new Worker(new URL("./layout.worker.ts", import.meta.url), { type: "module", name: "layout" });
  worker.onmessage = (e: MessageEvent<LayoutReply>) => {
    const w = waiting.get(e.data.seq);
    if (!w) return;
    waiting.delete(e.data.seq);
    if ("error" in e.data) w.reject(new Error(`layout failed: ${e.data.error}`));
    else w.resolve(e.data.output);
  };
  worker.onerror = (e) => {
    for (const w of waiting.values()) w.reject(new Error(`layout worker: ${e.message}`));
    waiting.clear();
  };
  return worker;
}

/** Start the worker while the page fetches its first graph. */
export function warmUp(): void {
  engine();
}

const size = (n: DisplayNode): [number, number] =>
  n.node.kind === "input" || n.node.kind === "output" ? [IO_W, IO_H] : [NODE_W, NODE_H];

/** The header's room: the group's name and its count. */
export function headerWidth(label: string, members: number): number {
  return Math.ceil(30 + label.length * 7.4 + 24 + `${members} nodes · 999.9k`.length * 6.4);
}

/** The engine's name for an expanded group: ids of nodes and of groups share one space there, and a group may be
 *  named like a node (a layer `s1b1` beside its block's `s1b1_conv1`). */
const CONTAINER = "c:";
const containerKey = (id: string | null | undefined) => (id === null || id === undefined ? null : CONTAINER + id);

/** The worker's input for a folded display (pure). */
export function layoutInput(f: Folded, grouping: Grouping): LayoutInput {
  const items: LayoutInput["items"] = [];
  for (const n of f.nodes) {
    const [w, h] = size(n);
    items.push({ id: n.id, w, h, parent: containerKey(f.parentOf.get(n.id)), order: f.order.get(n.id) ?? 0 });
  }
  for (const b of f.groupBoxes) {
    const id = groupElementId(b.id);
    items.push({ id, w: NODE_W, h: BOX_H, parent: containerKey(f.parentOf.get(id)), order: f.order.get(id) ?? 0 });
  }
  const containers = f.containers.map((c) => {
    const g = grouping.groups.get(c.id);
    return { id: CONTAINER + c.id, parent: containerKey(c.parent), minW: headerWidth(g?.label ?? c.id, g?.members.length ?? 0) };
  });
  return { items, containers, edges: f.edges.map((e) => ({ id: e.id, s: e.source, t: e.target })) };
}

export async function layout(f: Folded, grouping: Grouping): Promise<Placed> {
  const started = performance.now();
  const input = layoutInput(f, grouping);
  const seq = nextSeq++;
  const out = await new Promise<LayoutOutput>((resolve, reject) => {
    waiting.set(seq, { resolve, reject });
    engine().postMessage({ seq, input } satisfies LayoutRequest);
  });
  const placed: Placed = { nodes: new Map(), containers: new Map(), edges: [], width: out.width, height: out.height,
    ms: 0, workerMs: out.ms, relaid: out.relaid };
  for (const [id, [x, y, w, h]] of Object.entries(out.items)) placed.nodes.set(id, { x, y, w, h });
  for (const [id, [x, y, w, h]] of Object.entries(out.containers)) placed.containers.set(id.slice(CONTAINER.length), { x, y, w, h });
  const byId = new Map(f.edges.map((e) => [e.id, e]));
  for (const e of out.edges) {
    const edge = byId.get(e.id);
    if (!edge) continue;
    const points: { x: number; y: number }[] = [];
    for (let i = 0; i + 1 < e.points.length; i += 2) points.push({ x: e.points[i]!, y: e.points[i + 1]! });
    placed.edges.push({ edge, points, back: e.back });
  }
  placed.ms = performance.now() - started;
  return placed;
}
