// What the drawing shows: the graph of one version, or the union of two for a diff (removed nodes come back,
// marked), with the collapsed groups folded into single boxes. Pure functions; the layout runs on the result.
import type { Change, Graph, GraphDiff, GraphNode } from "../types";
import { type Grouping, groupNodes, hiddenBy } from "./groups";

export type Mark = "added" | "removed" | "changed";

export interface DisplayNode {
  id: string;
  node: GraphNode;
  mark?: Mark;
  changes?: Change[];
}

export interface DisplayEdge {
  id: string;
  source: string;
  target: string;
  mark?: "added" | "removed";
}

export interface Display {
  model: string;
  version: number;
  nodes: DisplayNode[];
  edges: DisplayEdge[];
  grouping: Grouping;
  diff: GraphDiff | null;
}

const edgeKey = (s: string, t: string) => `${s}\u2192${t}`;

/** One version as it is, or (with `before` and `diff`) the version with what changed since `before` marked. */
export function display(graph: Graph, before?: Graph | null, diff?: GraphDiff | null): Display {
  const nodes: DisplayNode[] = [];
  const edges: DisplayEdge[] = [];
  if (!before || !diff) {
    for (const n of graph.nodes) nodes.push({ id: n.id, node: n });
    for (const e of graph.edges) edges.push({ id: edgeKey(e.source, e.target), source: e.source, target: e.target });
    return { model: graph.model, version: graph.version, nodes, edges, grouping: groupNodes(graph.nodes), diff: null };
  }
  const added = new Set(diff.added);
  const removed = new Set(diff.removed);
  const changed = new Map(diff.changed.map((c) => [c.id, c.changes]));
  // Keep the drawing's order close to the spec's: a removed node goes right after the node it read from.
  const removedAfter = new Map<string, GraphNode[]>();
  for (const n of before.nodes) {
    if (!removed.has(n.id)) continue;
    const anchor = n.inputs.find((i) => !removed.has(i)) ?? "";
    removedAfter.set(anchor, [...(removedAfter.get(anchor) ?? []), n]);
  }
  const pushRemoved = (anchor: string) => {
    for (const n of removedAfter.get(anchor) ?? []) nodes.push({ id: n.id, node: n, mark: "removed" });
  };
  pushRemoved("");
  for (const n of graph.nodes) {
    const mark: Mark | undefined = added.has(n.id) ? "added" : changed.has(n.id) ? "changed" : undefined;
    nodes.push({ id: n.id, node: n, mark, changes: changed.get(n.id) });
    pushRemoved(n.id);
  }
  const beforeEdges = new Set(before.edges.map((e) => edgeKey(e.source, e.target)));
  const afterEdges = new Set(graph.edges.map((e) => edgeKey(e.source, e.target)));
  const present = new Set(nodes.map((n) => n.id));
  for (const e of graph.edges) {
    const id = edgeKey(e.source, e.target);
    edges.push({ id, source: e.source, target: e.target, mark: beforeEdges.has(id) ? undefined : "added" });
  }
  for (const e of before.edges) {
    const id = edgeKey(e.source, e.target);
    if (!afterEdges.has(id) && present.has(e.source) && present.has(e.target)) {
      edges.push({ id, source: e.source, target: e.target, mark: "removed" });
    }
  }
  const all = nodes.map((n) => n.node);
  return { model: graph.model, version: graph.version, nodes, edges, grouping: groupNodes(all), diff };
}

export interface GroupBox {
  id: string; // the group
  members: string[];
  /** Members marked in the diff shown (added, removed, changed). */
  marks: number;
  /** Members that the last live edit added or changed. */
  recent: number;
  params: number;
  /** The shapes that flow in from outside the group, and out of it (distinct, in execution order). */
  ins: number[][];
  outs: number[][];
}

export interface Folded {
  /** Visible leaf nodes (groups that are collapsed appear as `groupBoxes`). */
  nodes: DisplayNode[];
  byId: Map<string, DisplayNode>;
  groupBoxes: GroupBox[];
  /** Expanded groups that have something visible inside, outermost first. */
  containers: { id: string; parent: string | null }[];
  edges: DisplayEdge[];
  parentOf: Map<string, string>; // visible element id -> expanded container
  /** Each visible element's place in execution order (its first member's, for a collapsed group). */
  order: Map<string, number>;
}

export const groupElementId = (prefix: string) => `group:${prefix}`;

/** Fold collapsed groups into boxes: their nodes disappear and their edges attach to the box. */
export function fold(d: Display, collapsed: ReadonlySet<string>, recent: ReadonlySet<string> = new Set()): Folded {
  const { grouping } = d;
  const visibleId = new Map<string, string>();
  const nodes: DisplayNode[] = [];
  const boxes = new Map<string, GroupBox>();
  const order = new Map<string, number>();
  const byDisplay = new Map<string, DisplayNode>();
  d.nodes.forEach((n, i) => {
    byDisplay.set(n.id, n);
    const hider = hiddenBy(n.id, grouping, collapsed);
    if (hider === null) {
      visibleId.set(n.id, n.id);
      nodes.push(n);
      order.set(n.id, i);
    } else {
      let box = boxes.get(hider);
      if (!box) {
        box = { id: hider, members: [], marks: 0, recent: 0, params: 0, ins: [], outs: [] };
        boxes.set(hider, box);
        order.set(groupElementId(hider), i);
      }
      box.members.push(n.id);
      if (n.mark) box.marks++;
      if (recent.has(n.id)) box.recent++;
      if (n.mark !== "removed") box.params += n.node.params;
      visibleId.set(n.id, groupElementId(hider));
    }
  });
  const parentOf = new Map<string, string>();
  const used = new Set<string>();
  const containerOf = (groupId: string | null): string | null => {
    // the nearest enclosing group that is expanded (collapsed ones are boxes, not containers)
    for (let g = groupId; g !== null; g = grouping.groups.get(g)?.parent ?? null) {
      if (!collapsed.has(g)) return g;
    }
    return null;
  };
  for (const n of nodes) {
    const c = containerOf(grouping.groupOf.get(n.id) ?? null);
    if (c !== null) parentOf.set(n.id, c);
  }
  for (const box of boxes.values()) {
    const c = containerOf(grouping.groups.get(box.id)?.parent ?? null);
    if (c !== null) parentOf.set(groupElementId(box.id), c);
  }
  for (const c of parentOf.values()) {
    for (let g: string | null = c; g !== null && !used.has(g); g = containerOf(grouping.groups.get(g)?.parent ?? null)) {
      used.add(g);
    }
  }
  const containers = [...used]
    .map((id) => ({ id, parent: containerOf(grouping.groups.get(id)?.parent ?? null) }))
    .sort((a, b) => (grouping.groups.get(a.id)?.depth ?? 0) - (grouping.groups.get(b.id)?.depth ?? 0));
  const seen = new Set<string>();
  const edges: DisplayEdge[] = [];
  const shapeSeen = new Map<string, Set<string>>();
  const addShape = (box: GroupBox, side: "ins" | "outs", src: string) => {
    const key = `${side}:${box.id}`;
    let set = shapeSeen.get(key);
    if (!set) shapeSeen.set(key, (set = new Set()));
    const shape = byDisplay.get(src)?.node.shape ?? [];
    const text = shape.join(",");
    if (set.has(text)) return;
    set.add(text);
    box[side].push(shape);
  };
  for (const e of d.edges) {
    const s = visibleId.get(e.source);
    const t = visibleId.get(e.target);
    if (s === undefined || t === undefined || s === t) continue;
    if (t.startsWith("group:") && e.mark !== "removed") addShape(boxes.get(t.slice(6))!, "ins", e.source);
    if (s.startsWith("group:") && e.mark !== "removed") addShape(boxes.get(s.slice(6))!, "outs", e.source);
    const id = edgeKey(s, t);
    if (seen.has(id)) continue;
    seen.add(id);
    edges.push({ ...e, id, source: s, target: t });
  }
  return { nodes, byId: new Map(nodes.map((n) => [n.id, n])), groupBoxes: [...boxes.values()], containers, edges,
    parentOf, order };
}
