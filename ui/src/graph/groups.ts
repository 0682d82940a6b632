// Groups by module path: the node ids of imported models are module paths joined by `_` (`layer4_1_conv2`), so
// the leading segments name the modules that contain a node (`layer4`, `layer4_1`). A prefix is a group when it
// holds two or more nodes, except where the only members are torch.fx's duplicate names of one node (`relu`,
// `relu_1`, `relu_2`: a node `relu` exists and the rest are digits). A node outside every group joins the block
// it computes for (see `adopt`): a layer inserted into a block (`probe`, or a generated `linear_1`) and fx's
// residual sums (`add_3`) are drawn inside the block they belong to.
import type { GraphNode } from "../types";

export interface Group {
  id: string; // the prefix
  parent: string | null; // the enclosing group
  members: string[]; // every node inside, at any depth
  depth: number;
}

export interface Grouping {
  groups: Map<string, Group>;
  /** The innermost group of each grouped node. */
  groupOf: Map<string, string>;
}

const DIGITS = /^\d+$/;

export function groupNodes(nodes: GraphNode[]): Grouping {
  const ids = nodes.filter((n) => n.kind === "layer" || n.kind === "function").map((n) => n.id);
  const idSet = new Set(ids);
  const candidates = new Map<string, string[]>();
  for (const id of ids) {
    const parts = id.split("_");
    for (let k = 1; k < parts.length; k++) {
      const prefix = parts.slice(0, k).join("_");
      if (!prefix || parts[k] === "") continue;
      let list = candidates.get(prefix);
      if (!list) candidates.set(prefix, (list = []));
      list.push(id);
    }
  }
  const accepted: [string, string[]][] = [];
  for (const [prefix, inside] of candidates) {
    const members = idSet.has(prefix) ? [prefix, ...inside] : inside;
    if (members.length < 2 || members.length === ids.length) continue;
    const duplicatesOnly = idSet.has(prefix) && inside.every((id) => DIGITS.test(id.slice(prefix.length + 1)));
    if (duplicatesOnly) continue;
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
    groups.set(prefix, { id: prefix, parent, members, depth: parent === null ? 0 : groups.get(parent)!.depth + 1 });
    for (const m of members) groupOf.set(m, prefix);
  }
  adopt(nodes, groups, groupOf);
  return { groups, groupOf };
}

function ancestors(g: string | null, groups: Map<string, Group>): string[] {
  const out: string[] = [];
  for (let x = g; x !== null; x = groups.get(x)?.parent ?? null) out.push(x);
  return out;
}

/** An ungrouped node joins the innermost group that holds all of its readers and at least one of its inputs
 *  (the block it computes for: fx's `add_3` reads the block's last layer and the previous block's output, and is
 *  read by the block's final ReLU). A node read by nothing uses its inputs. Repeated, so that a run of inserted
 *  nodes is adopted link by link. */
function adopt(nodes: GraphNode[], groups: Map<string, Group>, groupOf: Map<string, string>): void {
  if (groups.size === 0) return;
  const inner = nodes.filter((n) => n.kind === "layer" || n.kind === "function");
  const isInner = new Set(inner.map((n) => n.id));
  const readers = new Map<string, string[]>(inner.map((n) => [n.id, []]));
  for (const n of inner) for (const i of n.inputs) readers.get(i)?.push(n.id);
  const lca = (ids: string[]): string | null => {
    let common: string[] | null = null;
    for (const m of ids) {
      const mine = ancestors(groupOf.get(m) ?? null, groups);
      common = common === null ? mine : common.filter((g) => mine.includes(g));
    }
    return common?.[0] ?? null;
  };
  for (let pass = 0; pass < 4; pass++) {
    let changed = false;
    for (const n of inner) {
      if (groupOf.has(n.id)) continue;
      const ins = n.inputs.filter((i) => isInner.has(i));
      const outs = readers.get(n.id) ?? [];
      const basis = outs.length ? outs : ins;
      if (basis.length === 0 || !basis.every((m) => groupOf.has(m))) continue;
      const home = lca(basis);
      if (home === null || !ins.some((i) => ancestors(groupOf.get(i) ?? null, groups).includes(home))) continue;
      groupOf.set(n.id, home);
      for (const g of ancestors(home, groups)) groups.get(g)!.members.push(n.id);
      changed = true;
    }
    if (!changed) break;
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
