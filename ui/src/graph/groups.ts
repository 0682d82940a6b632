// The hierarchy of a graph: groups are modules, nested as the model's module tree nests them.
//
// Where the server sends each node's module path (`node.path`, dot-separated, as import recorded it:
// `distilbert.transformer.layer.0.attention.q_lin`), the groups are the modules on those paths. Where it does not
// (specs written by hand, models imported before paths were recorded), they are read off the node ids, which the
// importer makes from module paths joined by `_` (`layer4_1_conv2`): a prefix is a group when it holds two or more
// nodes, except where the only members are repeated calls of one module (`relu`, `relu_1`, `relu_2`, or the
// importer's `relu_1`, `relu_2`, `relu_3`), and ids at the importer's length limit (64 characters, shortened in the
// middle) are not read for prefixes at all; a two-node group must have an edge between its two (a buffer and a
// layer that merely share a prefix, `position_ids` and `position_embeddings`, are not a module). In both cases a module with a single child module is one group, not
// two, and a node outside every group (a layer an edit inserted, fx's residual sums) joins the innermost group
// around both its inputs and its readers (see `adopt`): it is drawn inside its block, between its neighbours.
import type { GraphNode } from "../types";

export interface Group {
  id: string; // the module path (or the id prefix)
  /** What its header shows: its path below the enclosing group's (`layer.0`, `attention`). */
  label: string;
  parent: string | null; // the enclosing group
  members: string[]; // every node inside, at any depth, in execution order
  depth: number;
  /** The execution index of its first member: where it sits among its siblings. */
  order: number;
}

export interface Grouping {
  groups: Map<string, Group>;
  /** The innermost group of each grouped node. */
  groupOf: Map<string, string>;
  /** What a node is called inside its group (`q_lin`, `conv2`): never a shortened id. */
  local: Map<string, string>;
  /** Each node's module path (dot-separated, the node's own name last): the breadcrumb, and what search reads. */
  path: Map<string, string>;
  /** Where the hierarchy came from: the server's module paths, or the node ids. */
  source: "path" | "ids";
}

/** The importer shortens a module path longer than this (keeping both ends) and may add `_N`: an id this long says
 *  nothing by its prefix. */
const SHORTENED = 60;
const DIGITS = /^\d+$/;
/** How far through other ungrouped nodes an ungrouped node's neighbours are looked for. */
const HOPS = 16;

const inner = (n: GraphNode) => n.kind !== "input" && n.kind !== "output";

export function groupNodes(nodes: GraphNode[]): Grouping {
  const withPath = nodes.filter((n) => inner(n) && typeof n.path === "string" && n.path !== "");
  return withPath.length > 0 ? byPath(nodes) : byIds(nodes);
}

// -- from module paths --------------------------------------------------------------------------------------------
function byPath(nodes: GraphNode[]): Grouping {
  const order = new Map(nodes.map((n, i) => [n.id, i]));
  const ids = nodes.filter(inner);
  const pathOf = new Map<string, string>();
  for (const n of ids) if (n.path) pathOf.set(n.id, n.path);
  // A module is every proper prefix of a path; a node whose own path is such a module (a function recorded at the
  // module that called it) sits inside it.
  const modules = new Set<string>();
  for (const p of pathOf.values()) {
    const segs = p.split(".");
    for (let k = 1; k < segs.length; k++) modules.add(segs.slice(0, k).join("."));
  }
  const home = new Map<string, string>(); // node -> the module path it sits in ("" for none)
  for (const [id, p] of pathOf) home.set(id, modules.has(p) ? p : p.includes(".") ? p.slice(0, p.lastIndexOf(".")) : "");
  const membersOf = new Map<string, string[]>();
  for (const n of ids) {
    const h = home.get(n.id);
    if (!h) continue;
    const segs = h.split(".");
    for (let k = 1; k <= segs.length; k++) {
      const m = segs.slice(0, k).join(".");
      let list = membersOf.get(m);
      if (!list) membersOf.set(m, (list = []));
      list.push(n.id);
    }
  }
  const total = pathOf.size;
  const candidates = [...membersOf].filter(([, members]) => members.length >= 2 && members.length < total);
  candidates.sort((a, b) => a[0].split(".").length - b[0].split(".").length);
  const groups = new Map<string, Group>();
  const groupOf = new Map<string, string>();
  for (const [path, members] of candidates) {
    const parent = groupOf.get(members[0]!) ?? null;
    if (parent !== null && groups.get(parent)!.members.length === members.length) continue; // one child module
    const label = parent === null ? path : relative(path, parent, ".");
    groups.set(path, { id: path, label, parent, members, depth: parent === null ? 0 : groups.get(parent)!.depth + 1, order: order.get(members[0]!) ?? 0 });
    for (const m of members) groupOf.set(m, path);
  }
  const local = new Map<string, string>();
  for (const n of ids) {
    const p = pathOf.get(n.id);
    const g = groupOf.get(n.id);
    if (p === undefined) continue;
    if (modules.has(p)) local.set(n.id, functionName(n)); // recorded at its module: its own name is its kind
    else local.set(n.id, g === undefined ? p : relative(p, g, "."));
  }
  const grouping: Grouping = { groups, groupOf, local, path: pathOf, source: "path" };
  adopt(nodes, grouping, ".");
  return grouping;
}

/** `a.b.c.d` below `a.b` is `c.d`; a bare index reads with its container's name (`layer.0`, not `0`). */
function relative(path: string, parent: string, sep: string): string {
  const rest = path.startsWith(parent + sep) ? path.slice(parent.length + 1) : path;
  if (DIGITS.test(rest.split(sep)[0]!)) {
    const above = parent.split(sep).at(-1);
    if (above && !DIGITS.test(above)) return `${above}${sep}${rest}`;
  }
  return rest;
}

function functionName(n: GraphNode): string {
  if (n.kind === "function" && n.function) return n.function.replace(/^aten\./, "").replace(/\.default$/, "");
  return n.id;
}

// -- from node ids ------------------------------------------------------------------------------------------------
function byIds(nodes: GraphNode[]): Grouping {
  const order = new Map(nodes.map((n, i) => [n.id, i]));
  const ids = nodes.filter(inner).map((n) => n.id);
  const idSet = new Set(ids);
  const inputsOf = new Map(nodes.map((n) => [n.id, n.inputs]));
  const linked = (a: string, b: string) => !!inputsOf.get(b)?.includes(a) || !!inputsOf.get(a)?.includes(b);
  const candidates = new Map<string, string[]>();
  for (const id of ids) {
    if (id.length >= SHORTENED) continue;
    const parts = id.split("_");
    for (let k = 1; k < parts.length; k++) {
      if (parts[k] === "" || parts[k - 1] === "") continue;
      const prefix = parts.slice(0, k).join("_");
      let list = candidates.get(prefix);
      if (!list) candidates.set(prefix, (list = []));
      list.push(id);
    }
  }
  const accepted: [string, string[]][] = [];
  for (const [prefix, inside] of candidates) {
    const members = idSet.has(prefix) ? [prefix, ...inside] : inside;
    if (members.length < 2 || members.length === ids.length) continue;
    if (repeatedCalls(prefix, inside, idSet)) continue;
    if (members.length === 2 && !linked(members[0]!, members[1]!)) continue;
    members.sort((a, b) => order.get(a)! - order.get(b)!);
    accepted.push([prefix, members]);
  }
  // Shortest prefixes first, so that a prefix holding exactly what its parent holds (a module with one child
  // module) is dropped in favour of the outer name.
  accepted.sort((a, b) => a[0].length - b[0].length);
  const groups = new Map<string, Group>();
  const groupOf = new Map<string, string>();
  for (const [prefix, members] of accepted) {
    const parent = groupOf.get(members[0]!) ?? null;
    if (parent !== null && groups.get(parent)!.members.length === members.length) continue;
    const label = parent === null ? prefix : relative(prefix, parent, "_");
    groups.set(prefix, { id: prefix, label, parent, members, depth: parent === null ? 0 : groups.get(parent)!.depth + 1, order: order.get(members[0]!) ?? 0 });
    for (const m of members) groupOf.set(m, prefix);
  }
  const grouping: Grouping = { groups, groupOf, local: new Map(), path: new Map(), source: "ids" };
  const byId = new Map(nodes.map((n) => [n.id, n]));
  for (const id of ids) {
    const g = groupOf.get(id);
    grouping.local.set(id, g !== undefined && id.startsWith(g + "_") ? relative(id, g, "_") : localOf(byId.get(id)!));
  }
  adopt(nodes, grouping, "_");
  for (const id of ids) grouping.path.set(id, pathFor(id, grouping));
  return grouping;
}

/** fx's `relu`, `relu_1`, `relu_2` (the first call keeps the bare name), or the importer's `relu_1`, `relu_2`, ...
 *  (every call numbered from 1): calls of one module, not a module's children (a Sequential's count from 0). */
function repeatedCalls(prefix: string, inside: string[], idSet: Set<string>): boolean {
  const rests = inside.map((id) => id.slice(prefix.length + 1));
  if (!rests.every((r) => DIGITS.test(r))) return false;
  return idSet.has(prefix) || !rests.includes("0");
}

/** A node whose id does not start with its group's (inserted by an edit, or shortened by the importer). */
function localOf(n: GraphNode): string {
  if (n.id.length >= SHORTENED && n.kind === "function" && n.function) return functionName(n);
  return n.id;
}

function pathFor(id: string, grouping: Grouping): string {
  const labels: string[] = [];
  for (let g = grouping.groupOf.get(id) ?? null; g !== null; g = grouping.groups.get(g)?.parent ?? null) {
    labels.unshift(grouping.groups.get(g)!.label);
  }
  return [...labels, grouping.local.get(id) ?? id].join(".");
}

// -- nodes outside every group ------------------------------------------------------------------------------------
function ancestors(g: string | null, groups: Map<string, Group>): string[] {
  const out: string[] = [];
  for (let x = g; x !== null; x = groups.get(x)?.parent ?? null) out.push(x);
  return out;
}

/** An ungrouped node with groups on both sides joins the innermost group that holds all of its readers when one of
 *  its inputs is in there
 *  too (the block it computes for: fx's `add_3` reads the block's last layer and the previous block's output, and
 *  is read by the block's final ReLU); otherwise the innermost group around its inputs and readers together (a
 *  layer inserted between two blocks sits in their stage, between them). Its inputs and readers are looked for
 *  through other ungrouped nodes (a run of inserted layers), a few hops at most. */
function adopt(nodes: GraphNode[], grouping: Grouping, sep: string): void {
  const { groups, groupOf, local } = grouping;
  const innerNodes = nodes.filter(inner);
  if (groups.size > 0) {
    const byId = new Map(innerNodes.map((n) => [n.id, n]));
    const readers = new Map<string, string[]>(innerNodes.map((n) => [n.id, []]));
    for (const n of innerNodes) for (const i of n.inputs) readers.get(i)?.push(n.id);
    /** The grouped nodes nearest to `id` along `next`, through ungrouped ones (at most HOPS away). */
    const nearest = (id: string, next: (x: string) => string[]): string[] => {
      const found = new Set<string>();
      let frontier = next(id).filter((x) => byId.has(x));
      const seen = new Set<string>([id]);
      for (let hop = 0; hop < HOPS && frontier.length > 0; hop++) {
        const after: string[] = [];
        for (const x of frontier) {
          if (seen.has(x)) continue;
          seen.add(x);
          if (groupOf.has(x)) found.add(x);
          else after.push(...next(x).filter((y) => byId.has(y)));
        }
        frontier = after;
      }
      return [...found];
    };
    const lca = (ids: string[]): string | null => {
      let common: string[] | null = null;
      for (const m of ids) {
        const mine = ancestors(groupOf.get(m) ?? null, groups);
        common = common === null ? mine : common.filter((g) => mine.includes(g));
      }
      return common?.[0] ?? null;
    };
    const order = new Map(nodes.map((n, i) => [n.id, i]));
    const homes: [string, string][] = [];
    for (const n of innerNodes) {
      if (groupOf.has(n.id)) continue;
      const ins = nearest(n.id, (x) => byId.get(x)?.inputs ?? []);
      const outs = nearest(n.id, (x) => readers.get(x) ?? []);
      // Between groups on both sides, or it stays where it is (a head after the last block, a node reading only
      // the model's inputs).
      if (ins.length === 0 || outs.length === 0) continue;
      let home = lca(outs);
      if (home === null || !ins.some((i) => ancestors(groupOf.get(i) ?? null, groups).includes(home!))) {
        home = lca([...ins, ...outs]);
      }
      if (home !== null) homes.push([n.id, home]);
    }
    for (const [id, home] of homes) {
      groupOf.set(id, home);
      const idx = order.get(id)!;
      for (const g of ancestors(home, groups)) {
        const members = groups.get(g)!.members;
        let at = members.length; // keep members in execution order
        while (at > 0 && order.get(members[at - 1]!)! > idx) at--;
        members.splice(at, 0, id);
      }
    }
  }
  for (const n of innerNodes) {
    if (!local.has(n.id)) local.set(n.id, n.id);
    if (sep === "." && !grouping.path.has(n.id)) {
      const g = groupOf.get(n.id);
      grouping.path.set(n.id, g === undefined ? n.id : `${g}.${n.id}`);
    }
  }
}

/** The outermost collapsed group that hides `id`, if any. */
export function hiddenBy(id: string, grouping: Grouping, collapsed: ReadonlySet<string>): string | null {
  let found: string | null = null;
  for (let g = grouping.groupOf.get(id) ?? null; g !== null; g = grouping.groups.get(g)?.parent ?? null) {
    if (collapsed.has(g)) found = g;
  }
  return found;
}

/** The groups around a node, outermost first (for the breadcrumb, and to open them all when search finds it). */
export function groupChain(id: string, grouping: Grouping): Group[] {
  const out: Group[] = [];
  for (let g = grouping.groupOf.get(id) ?? null; g !== null; g = grouping.groups.get(g)?.parent ?? null) {
    out.unshift(grouping.groups.get(g)!);
  }
  return out;
}
