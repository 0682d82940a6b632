// Layered layout with ELK (elkjs), in a web worker so that a 1,000-node graph never freezes the page: inputs
// first, outputs last, groups as nested boxes (ELK lays out across the hierarchy), spec order kept so that an
// edit moves little. Coordinates come back absolute (json.shapeCoords / edgeCoords = ROOT).
import ELK, { type ElkExtendedEdge, type ElkNode } from "elkjs/lib/elk-api.js";
import elkWorkerUrl from "elkjs/lib/elk-worker.min.js?url";
import type { DisplayEdge, DisplayNode, Folded } from "./model";
import { groupElementId } from "./model";

export type Direction = "DOWN" | "RIGHT";

export const NODE_W = 212;
export const NODE_H = 58;
export const IO_W = 168;
export const IO_H = 44;
export const GROUP_PAD_TOP = 30;

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Placed {
  nodes: Map<string, Box>; // visible nodes and collapsed group boxes (by element id)
  containers: Map<string, Box>; // expanded groups (by prefix)
  edges: { edge: DisplayEdge; points: { x: number; y: number }[] }[];
  width: number;
  height: number;
  ms: number;
}

let elk: InstanceType<typeof ELK> | null = null;
const engine = () => (elk ??= new ELK({ workerUrl: elkWorkerUrl }));

/** Start ELK's worker (it compiles 1.6 MB of JavaScript) while the page fetches its first graph. */
export function warmUp(): void {
  void engine().layout({ id: "warm", children: [{ id: "a", width: 1, height: 1 }], edges: [] }).catch(() => undefined);
}

const size = (n: DisplayNode) => (n.node.kind === "input" || n.node.kind === "output" ? [IO_W, IO_H] : [NODE_W, NODE_H]);

/** The ELK input for a folded display (pure: the layout worker gets exactly this). */
export function elkGraph(f: Folded, direction: Direction): ElkNode {
  const count = f.nodes.length + f.groupBoxes.length;
  const big = count > 300;
  const elements = new Map<string, ElkNode>(); // containers by group prefix
  const root: ElkNode = {
    id: "root",
    layoutOptions: {
      "elk.algorithm": "layered",
      "elk.direction": direction,
      "elk.edgeRouting": "ORTHOGONAL",
      "elk.layered.considerModelOrder.strategy": "NODES_AND_EDGES",
      "elk.layered.nodePlacement.strategy": "BRANDES_KOEPF",
      "elk.layered.thoroughness": count > 150 ? "1" : count > 60 ? "3" : "7",
      "elk.spacing.nodeNode": "22",
      "elk.layered.spacing.nodeNodeBetweenLayers": "34",
      "elk.layered.spacing.edgeNodeBetweenLayers": "14",
      "elk.spacing.edgeNode": "14",
      "elk.padding": "[top=24,left=24,bottom=24,right=24]",
      "elk.json.shapeCoords": "ROOT",
      "elk.json.edgeCoords": "ROOT",
      // Layout across the group boxes' borders (edges from inside one block into the next), when there are any.
      ...(f.containers.length > 0 ? { "elk.hierarchyHandling": "INCLUDE_CHILDREN" } : {}),
      // Big graphs: the cheaper layering and placement (measured: about half the time on a 1,000-layer chain;
      // docs/BENCHMARKS.md), and a long flat graph wrapped into columns rather than one 90,000 px line.
      ...(big ? { "elk.layered.layering.strategy": "LONGEST_PATH", "elk.layered.nodePlacement.strategy": "SIMPLE" } : {}),
      ...(big && f.containers.length === 0
        ? { "elk.layered.wrapping.strategy": "SINGLE_EDGE", "elk.aspectRatio": "1.6" }
        : {}),
    },
    children: [],
    edges: [],
  };
  // Containers are made when their first member comes, so that every parent lists its children in the
  // spec's order (ELK keeps that order: considerModelOrder), which keeps a chain of blocks in one column.
  const parentOfContainer = new Map(f.containers.map((c) => [c.id, c.parent]));
  const container = (id: string | null | undefined): ElkNode => {
    if (id === null || id === undefined) return root;
    let el = elements.get(id);
    if (!el) {
      el = { id: `c:${id}`, layoutOptions: { "elk.padding": `[top=${GROUP_PAD_TOP},left=12,bottom=12,right=12]` }, children: [] };
      elements.set(id, el);
      container(parentOfContainer.get(id)).children!.push(el);
    }
    return el;
  };
  const boxes = new Map(f.groupBoxes.map((b) => [b.members[0], b]));
  const placedBoxes = new Set<string>();
  for (const n of f.display) {
    const box = boxes.get(n);
    if (box) {
      const id = groupElementId(box.id);
      if (!placedBoxes.has(id)) {
        placedBoxes.add(id);
        container(f.parentOf.get(id)).children!.push({ id, width: NODE_W, height: NODE_H });
      }
      continue;
    }
    const node = f.byId.get(n);
    if (!node) continue;
    const [w, h] = size(node);
    container(f.parentOf.get(n)).children!.push({ id: n, width: w, height: h });
  }
  root.edges = f.edges.map((e): ElkExtendedEdge => ({ id: e.id, sources: [e.source], targets: [e.target] }));
  return root;
}

export async function layout(f: Folded, direction: Direction): Promise<Placed> {
  const started = performance.now();
  const out = await engine().layout(elkGraph(f, direction));
  const placed: Placed = { nodes: new Map(), containers: new Map(), edges: [], width: out.width ?? 0,
    height: out.height ?? 0, ms: 0 };
  const walk = (el: ElkNode) => {
    for (const child of el.children ?? []) {
      const box = { x: child.x ?? 0, y: child.y ?? 0, w: child.width ?? 0, h: child.height ?? 0 };
      if (child.id.startsWith("c:")) placed.containers.set(child.id.slice(2), box);
      else placed.nodes.set(child.id, box);
      walk(child);
    }
  };
  walk(out);
  const byId = new Map(f.edges.map((e) => [e.id, e]));
  const collect = (el: ElkNode) => {
    for (const e of (el.edges ?? []) as ElkExtendedEdge[]) {
      const edge = byId.get(e.id);
      const s = e.sections?.[0];
      if (!edge || !s) continue;
      placed.edges.push({ edge, points: [s.startPoint, ...(s.bendPoints ?? []), s.endPoint] });
    }
    for (const child of el.children ?? []) collect(child);
  };
  collect(out);
  placed.ms = performance.now() - started;
  return placed;
}
