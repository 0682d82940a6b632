// The layout: layered, top to bottom, in execution order, group by group. Pure (no DOM): the layout worker runs it.
//
// Each expanded group is laid out on its own, from its children's sizes and the edges between them (an edge from
// deeper inside a child is lifted to the child), so that expanding a group or a live edit lays out only the groups
// whose contents changed (their layouts are cached by what they were computed from) and their ancestors. Inside a
// group:
// - ranks: a child sits one row below the lowest of its inputs; children are visited in execution order and an
//   edge against that order (a module called again after a later one) does not constrain (it is drawn around the
//   side), so the ranks always exist; a child that reads nothing inside the group sits just above its first reader;
// - edges that enter the group come in through ports on its top border, edges that leave go out through ports on
//   its bottom border; an edge that spans rows gets a slot in each row it crosses (shared by the edges of one
//   source), so that no edge runs through a box;
// - within a row, children keep execution order, left to right; horizontal positions are pulled toward the
//   neighbours above and below, a few sweeps each way, under the row's order and spacing (isotonic regression by
//   pool-adjacent-violators, linear in the row's length).
// Edges are orthogonal: down through their slots, across in the gaps between rows.

export interface LayoutItem {
  id: string;
  w: number;
  h: number;
  parent: string | null; // the expanded group it is drawn in (null: the top level)
  order: number; // execution order
}

export interface LayoutContainer {
  id: string;
  parent: string | null;
  /** The width its header needs. */
  minW: number;
}

export interface LayoutEdge {
  id: string;
  s: string;
  t: string;
}

/** Items and containers share one space of ids. */
export interface LayoutInput {
  items: LayoutItem[];
  containers: LayoutContainer[];
  edges: LayoutEdge[];
}

export type Rect = [number, number, number, number]; // x, y, w, h

export interface LayoutOutput {
  items: Record<string, Rect>;
  containers: Record<string, Rect>;
  edges: { id: string; points: number[]; back: boolean }[];
  width: number;
  height: number;
  /** How many groups were laid out (the others came from the cache). */
  relaid: number;
  ms: number;
}

export const HEAD = 30; // a group's header
const ROOT = "\u0000root";
const GAP_Y = 36; // between rows
const GAP_X = 26; // between boxes in a row
const GAP_SLOT = 12; // between an edge slot and a neighbour
const PORT_GAP = 14; // between a group's ports and its first or last row
const PAD_X = 14;
const PAD_BOTTOM = 12;
const ROOT_PAD = 24;
const DUMMY_WEIGHT = 0.3; // a slot yields to a box where their preferred places clash

interface Slot {
  kind: "child" | "in" | "out" | "dummy";
  key: string; // child id, or the source element of a port
  w: number;
  h: number;
  rank: number;
  order: number;
  x: number; // centre
  ups: number[];
  downs: number[];
}

interface Chain {
  start: number; // the rank of its first slot
  xs: number[];
}

interface Placement {
  w: number;
  h: number;
  pos: Map<string, [number, number]>; // child -> top-left
  rank: Map<string, number>;
  rowTop: number[];
  rowBottom: number[];
  inX: Map<string, number>;
  outX: Map<string, number>;
  chains: Map<string, Chain>; // by source: child id, or `in:` + the element outside
  back: Set<string>; // lifted edges drawn around the side
  right: number; // where edges around the side run
}

interface Lifted {
  internal: Set<string>; // `a\u0001b`
  ins: Map<string, Set<string>>; // element outside -> children it feeds
  outs: Map<string, Set<string>>; // element inside -> children it leaves from
}

const SEP = "\u0001";

/** Lays out graphs; keeps each group's layout for the next call (a live edit, a group opened or closed). */
export class LayoutEngine {
  private cache = new Map<string, { sig: string; placement: Placement }>();

  layout(input: LayoutInput): LayoutOutput {
    const started = performance.now();
    const parent = new Map<string, string>(); // element or container -> its container (ROOT at the top)
    const size = new Map<string, [number, number]>();
    const order = new Map<string, number>();
    const kids = new Map<string, string[]>([[ROOT, []]]);
    const minW = new Map<string, number>();
    for (const c of input.containers) {
      kids.set(c.id, []);
      minW.set(c.id, c.minW);
    }
    for (const c of input.containers) {
      parent.set(c.id, c.parent ?? ROOT);
      order.set(c.id, Infinity);
    }
    for (const it of input.items) {
      const p = it.parent ?? ROOT;
      parent.set(it.id, p);
      size.set(it.id, [it.w, it.h]);
      order.set(it.id, it.order);
      kids.get(p)?.push(it.id);
      // a container's place is its first element's
      for (let c = p; c !== ROOT; c = parent.get(c) ?? ROOT) {
        if ((order.get(c) ?? Infinity) <= it.order) break;
        order.set(c, it.order);
      }
    }
    for (const c of input.containers) kids.get(c.parent ?? ROOT)?.push(c.id);
    for (const list of kids.values()) list.sort((a, b) => order.get(a)! - order.get(b)!);

    const chainOf = (id: string): string[] => {
      const out: string[] = [];
      for (let c = parent.get(id); c !== undefined; c = c === ROOT ? undefined : parent.get(c)) out.push(c);
      return out.reverse(); // ROOT first
    };
    const chains = new Map<string, string[]>();
    const chainFor = (id: string) => {
      let c = chains.get(id);
      if (!c) chains.set(id, (c = chainOf(id)));
      return c;
    };

    // Lift every edge into the groups it crosses.
    const lifted = new Map<string, Lifted>();
    const liftedOf = (c: string) => {
      let l = lifted.get(c);
      if (!l) lifted.set(c, (l = { internal: new Set(), ins: new Map(), outs: new Map() }));
      return l;
    };
    const add = (m: Map<string, Set<string>>, k: string, v: string) => {
      let s = m.get(k);
      if (!s) m.set(k, (s = new Set()));
      s.add(v);
    };
    const valid = input.edges.filter((e) => parent.has(e.s) && parent.has(e.t) && e.s !== e.t);
    for (const e of valid) {
      const sa = chainFor(e.s);
      const ta = chainFor(e.t);
      let k = 0;
      while (k < sa.length && k < ta.length && sa[k] === ta[k]) k++;
      const childS = k < sa.length ? sa[k]! : e.s;
      const childT = k < ta.length ? ta[k]! : e.t;
      liftedOf(sa[k - 1]!).internal.add(childS + SEP + childT);
      for (let i = k; i < sa.length; i++) add(liftedOf(sa[i]!).outs, e.s, i + 1 < sa.length ? sa[i + 1]! : e.s);
      for (let i = k; i < ta.length; i++) add(liftedOf(ta[i]!).ins, e.s, i + 1 < ta.length ? ta[i + 1]! : e.t);
    }

    // Lay out the groups, innermost first (a group's size is its parent's input).
    const depthOf = (c: string) => (c === ROOT ? 0 : chainFor(c).length);
    const all = [ROOT, ...input.containers.map((c) => c.id)].sort((a, b) => depthOf(b) - depthOf(a));
    const placements = new Map<string, Placement>();
    let relaid = 0;
    const next = new Map<string, { sig: string; placement: Placement }>();
    for (const c of all) {
      const children = kids.get(c) ?? [];
      const l = lifted.get(c) ?? { internal: new Set<string>(), ins: new Map(), outs: new Map() };
      const sig = signature(c, children, size, order, l, minW.get(c) ?? 0);
      const hit = this.cache.get(c);
      let placement: Placement;
      if (hit && hit.sig === sig) placement = hit.placement;
      else {
        placement = place(c === ROOT, children, size, order, l, minW.get(c) ?? 0);
        relaid++;
      }
      next.set(c, { sig, placement });
      placements.set(c, placement);
      if (c !== ROOT) size.set(c, [placement.w, placement.h]);
    }
    this.cache = next;

    // Absolute positions, outermost first.
    const abs = new Map<string, [number, number]>([[ROOT, [0, 0]]]);
    const out: LayoutOutput = { items: {}, containers: {}, edges: [], width: 0, height: 0, relaid, ms: 0 };
    for (const c of [...all].reverse()) {
      const [ox, oy] = abs.get(c)!;
      const p = placements.get(c)!;
      for (const child of kids.get(c) ?? []) {
        const [x, y] = p.pos.get(child)!;
        const [w, h] = size.get(child)!;
        abs.set(child, [ox + x, oy + y]);
        if (placements.has(child)) out.containers[child] = [ox + x, oy + y, w, h];
        else out.items[child] = [ox + x, oy + y, w, h];
      }
    }
    const root = placements.get(ROOT)!;
    out.width = root.w;
    out.height = root.h;

    // Edges: through the slots of every group they cross.
    for (const e of valid) out.edges.push(route(e, chainFor, placements, abs, size, order));
    out.ms = performance.now() - started;
    return out;
  }
}

/** What a group's layout is computed from: its children (in order) and their sizes, the edges between them and
 *  through its ports. Orders enter by their rank among the group's own (an edit elsewhere that renumbers every
 *  later node changes no group it did not touch). */
function signature(
  c: string, children: string[], size: Map<string, [number, number]>, order: Map<string, number>, l: Lifted, minW: number,
): string {
  const values = new Set<number>();
  for (const k of children) values.add(order.get(k) ?? 0);
  for (const src of l.ins.keys()) values.add(order.get(src) ?? 0);
  for (const src of l.outs.keys()) values.add(order.get(src) ?? 0);
  const sorted = [...values].sort((a, b) => a - b);
  const rankOf = new Map(sorted.map((v, i) => [v, i]));
  const rel = (id: string) => rankOf.get(order.get(id) ?? 0);
  const parts: string[] = [c, String(minW)];
  for (const k of children) {
    const [w, h] = size.get(k)!;
    parts.push(`${k}:${w}:${h}:${rel(k)}`);
  }
  parts.push("|", ...[...l.internal].sort());
  for (const [src, set] of [...l.ins].sort((a, b) => (a[0] < b[0] ? -1 : 1))) parts.push(`<${src}:${rel(src)}:${[...set].sort().join(",")}`);
  for (const [src, set] of [...l.outs].sort((a, b) => (a[0] < b[0] ? -1 : 1))) parts.push(`>${src}:${rel(src)}:${[...set].sort().join(",")}`);
  return parts.join("\n");
}

function place(
  isRoot: boolean, children: string[], size: Map<string, [number, number]>, order: Map<string, number>, l: Lifted,
  minW: number,
): Placement {
  // -- ranks --
  const index = new Map(children.map((c, i) => [c, i]));
  const preds = children.map(() => [] as number[]);
  const succs = children.map(() => [] as number[]);
  const fromPort = new Set<number>();
  const back = new Set<string>();
  for (const key of l.internal) {
    const [a, b] = key.split(SEP) as [string, string];
    const ia = index.get(a);
    const ib = index.get(b);
    if (ia === undefined || ib === undefined) continue;
    if (ia < ib) {
      preds[ib]!.push(ia);
      succs[ia]!.push(ib);
    } else back.add(key);
  }
  for (const set of l.ins.values()) for (const t of set) if (index.has(t)) fromPort.add(index.get(t)!);
  const rank = children.map(() => 1);
  for (let i = 0; i < children.length; i++) {
    let r = 1;
    for (const p of preds[i]!) r = Math.max(r, rank[p]! + 1);
    rank[i] = r;
  }
  for (let i = children.length - 1; i >= 0; i--) {
    if (preds[i]!.length > 0 || fromPort.has(i) || succs[i]!.length === 0) continue;
    let r = Infinity;
    for (const s of succs[i]!) r = Math.min(r, rank[s]! - 1);
    rank[i] = Math.max(1, r);
  }
  let maxRank = 1;
  for (const r of rank) maxRank = Math.max(maxRank, r);
  const outRank = maxRank + 1;

  // -- slots: children, ports and the edges' slots in each row --
  const slots: Slot[] = [];
  const slotOf = new Map<string, number>();
  const mk = (s: Omit<Slot, "x" | "ups" | "downs">): number => {
    slots.push({ ...s, x: 0, ups: [], downs: [] });
    return slots.length - 1;
  };
  children.forEach((c, i) => {
    const [w, h] = size.get(c)!;
    slotOf.set(c, mk({ kind: "child", key: c, w, h, rank: rank[i]!, order: order.get(c) ?? i }));
  });
  for (const src of l.ins.keys()) slotOf.set(`in:${src}`, mk({ kind: "in", key: src, w: 0, h: 0, rank: 0, order: order.get(src) ?? 0 }));
  for (const src of l.outs.keys()) slotOf.set(`out:${src}`, mk({ kind: "out", key: src, w: 0, h: 0, rank: outRank, order: order.get(src) ?? 0 }));
  // forward edges by source slot: u -> targets
  const targets = new Map<string, number[]>();
  const push = (u: string, v: number) => {
    let list = targets.get(u);
    if (!list) targets.set(u, (list = []));
    list.push(v);
  };
  for (const key of l.internal) {
    if (back.has(key)) continue;
    const [a, b] = key.split(SEP) as [string, string];
    if (slotOf.has(a) && slotOf.has(b)) push(a, slotOf.get(b)!);
  }
  for (const [src, set] of l.ins) for (const t of set) if (slotOf.has(t)) push(`in:${src}`, slotOf.get(t)!);
  for (const [src, set] of l.outs) for (const from of set) if (slotOf.has(from)) push(from, slotOf.get(`out:${src}`)!);
  const chainSlots = new Map<string, { start: number; ids: number[] }>();
  const linked = new Set<string>();
  const link = (a: number, b: number) => {
    const k = `${a},${b}`;
    if (linked.has(k)) return;
    linked.add(k);
    slots[a]!.downs.push(b);
    slots[b]!.ups.push(a);
  };
  for (const [u, vs] of targets) {
    const su = slotOf.get(u)!;
    const ru = slots[su]!.rank;
    let far = 0;
    for (const v of vs) far = Math.max(far, slots[v]!.rank);
    const ids: number[] = [];
    for (let r = ru + 1; r < far; r++) {
      ids.push(mk({ kind: "dummy", key: u, w: 0, h: 0, rank: r, order: slots[su]!.order }));
    }
    chainSlots.set(u, { start: ru + 1, ids });
    let prev = su;
    for (const d of ids) {
      link(prev, d);
      prev = d;
    }
    for (const v of vs) {
      const rv = slots[v]!.rank;
      link(rv - 1 === ru ? su : ids[rv - 2 - ru]!, v);
    }
  }

  // -- rows, in execution order --
  const rows: number[][] = Array.from({ length: outRank + 1 }, () => []);
  slots.forEach((s, i) => rows[s.rank]!.push(i));
  const kindRank = { in: 0, dummy: 0, child: 1, out: 1 } as const;
  for (const row of rows) {
    row.sort((a, b) => slots[a]!.order - slots[b]!.order || kindRank[slots[a]!.kind] - kindRank[slots[b]!.kind] || a - b);
  }
  const sep = (a: Slot, b: Slot) => {
    const real = (s: Slot) => s.kind === "child";
    const gap = real(a) && real(b) ? GAP_X : real(a) || real(b) ? GAP_SLOT : 10;
    return a.w / 2 + gap + b.w / 2;
  };
  for (const row of rows) {
    let x = 0;
    row.forEach((s, i) => {
      if (i > 0) x += sep(slots[row[i - 1]!]!, slots[s]!);
      slots[s]!.x = x;
    });
    for (const s of row) slots[s]!.x -= x / 2;
  }
  const weightOf = (s: Slot) => (s.kind === "dummy" ? DUMMY_WEIGHT : 1);
  const sweep = (r: number, side: "ups" | "downs") => {
    const row = rows[r]!;
    const desired = row.map((i) => {
      const s = slots[i]!;
      const nbrs = s[side];
      if (nbrs.length === 0) return s.x;
      let sum = 0;
      let wsum = 0;
      for (const n of nbrs) {
        const w = s.kind === "dummy" ? 1 : weightOf(slots[n]!);
        sum += slots[n]!.x * w;
        wsum += w;
      }
      return sum / wsum;
    });
    const xs = isotonic(row.map((i) => slots[i]!), desired, sep, weightOf);
    row.forEach((i, k) => (slots[i]!.x = xs[k]!));
  };
  for (let pass = 0; pass < 3; pass++) {
    for (let r = 1; r < rows.length; r++) sweep(r, "ups");
    for (let r = rows.length - 2; r >= 0; r--) sweep(r, "downs");
  }
  for (let r = 1; r < rows.length; r++) sweep(r, "ups");

  // -- coordinates --
  let left = Infinity;
  let right = -Infinity;
  for (const s of slots) {
    left = Math.min(left, s.x - s.w / 2);
    right = Math.max(right, s.x + s.w / 2);
  }
  if (!Number.isFinite(left)) {
    left = 0;
    right = 0;
  }
  const padX = isRoot ? ROOT_PAD : PAD_X;
  const sideRoom = back.size > 0 ? 18 : 0;
  let width = right - left + 2 * padX + sideRoom;
  let shift = padX - left;
  if (width < minW) {
    shift += (minW - width) / 2;
    width = minW;
  }
  const rowTop = new Array<number>(rows.length).fill(0);
  const rowBottom = new Array<number>(rows.length).fill(0);
  const hasIn = l.ins.size > 0;
  const hasOut = l.outs.size > 0;
  rowTop[0] = 0;
  rowBottom[0] = isRoot ? ROOT_PAD : HEAD;
  let y = rowBottom[0] + (hasIn ? PORT_GAP : isRoot ? 0 : 6);
  for (let r = 1; r <= maxRank; r++) {
    let h = 0;
    for (const s of rows[r]!) h = Math.max(h, slots[s]!.h);
    rowTop[r] = y;
    rowBottom[r] = y + h;
    y += h + GAP_Y;
  }
  const rowsBottom = maxRank >= 1 ? rowBottom[maxRank]! : rowBottom[0]!;
  const height = rowsBottom + (hasOut ? PORT_GAP : 0) + (isRoot ? ROOT_PAD : PAD_BOTTOM);
  rowTop[outRank] = height - (isRoot ? ROOT_PAD : PAD_BOTTOM);
  rowBottom[outRank] = height;
  const pos = new Map<string, [number, number]>();
  const rankOut = new Map<string, number>();
  const inX = new Map<string, number>();
  const outX = new Map<string, number>();
  for (const s of slots) {
    const x = s.x + shift;
    if (s.kind === "child") {
      const top = rowTop[s.rank]! + (rowBottom[s.rank]! - rowTop[s.rank]! - s.h) / 2;
      pos.set(s.key, [x - s.w / 2, top]);
      rankOut.set(s.key, s.rank);
    } else if (s.kind === "in") inX.set(s.key, x);
    else if (s.kind === "out") outX.set(s.key, x);
  }
  const chains = new Map<string, Chain>();
  for (const [u, c] of chainSlots) chains.set(u, { start: c.start, xs: c.ids.map((i) => slots[i]!.x + shift) });
  return { w: width, h: height, pos, rank: rankOut, rowTop, rowBottom, inX, outX, chains, back, right: width - 8 };
}

/** Centres as close to `desired` as the row's order and spacing allow (least squares, weighted): pool adjacent
 *  violators on the centres less their minimum offsets. */
function isotonic(row: Slot[], desired: number[], sep: (a: Slot, b: Slot) => number, weight: (s: Slot) => number): number[] {
  const n = row.length;
  const offset = new Array<number>(n).fill(0);
  for (let i = 1; i < n; i++) offset[i] = offset[i - 1]! + sep(row[i - 1]!, row[i]!);
  const value: number[] = [];
  const wsum: number[] = [];
  const count: number[] = [];
  for (let i = 0; i < n; i++) {
    let v = desired[i]! - offset[i]!;
    let w = weight(row[i]!);
    let c = 1;
    while (value.length > 0 && value[value.length - 1]! > v) {
      const pv = value.pop()!;
      const pw = wsum.pop()!;
      const pc = count.pop()!;
      v = (pv * pw + v * w) / (pw + w);
      w += pw;
      c += pc;
    }
    value.push(v);
    wsum.push(w);
    count.push(c);
  }
  const out: number[] = [];
  let i = 0;
  value.forEach((v, b) => {
    for (let k = 0; k < count[b]!; k++, i++) out.push(v + offset[i]!);
  });
  return out;
}

interface Waypoint {
  x: number;
  top: number; // where the edge enters this place
  bottom: number; // where it leaves
  around?: number; // when the next waypoint is above: the x of the way round
}

function route(
  e: LayoutEdge, chainFor: (id: string) => string[], placements: Map<string, Placement>,
  abs: Map<string, [number, number]>, size: Map<string, [number, number]>, order: Map<string, number>,
): { id: string; points: number[]; back: boolean } {
  const sa = chainFor(e.s);
  const ta = chainFor(e.t);
  let k = 0;
  while (k < sa.length && k < ta.length && sa[k] === ta[k]) k++;
  const wps: Waypoint[] = [];
  const absOf = (id: string) => abs.get(id) ?? [0, 0];
  const centre = (id: string) => absOf(id)[0] + (size.get(id)?.[0] ?? 0) / 2;
  const slotsOf = (c: string, from: string, untilRank: number) => {
    const p = placements.get(c)!;
    const ch = p.chains.get(from);
    if (!ch) return;
    const [ox, oy] = absOf(c);
    for (let r = ch.start; r < untilRank; r++) {
      const x = ch.xs[r - ch.start];
      if (x === undefined) break;
      wps.push({ x: ox + x, top: oy + p.rowTop[r]!, bottom: oy + p.rowBottom[r]! });
    }
  };
  // Out of the source's groups, innermost first.
  let cur = e.s;
  let curX = centre(e.s);
  let curTop = absOf(e.s)[1] + (size.get(e.s)?.[1] ?? 0);
  for (let i = sa.length - 1; i >= k; i--) {
    const c = sa[i]!;
    const p = placements.get(c)!;
    const [ox, oy] = absOf(c);
    const r = p.rank.get(cur) ?? 1;
    wps.push({ x: curX, top: curTop, bottom: oy + p.rowBottom[r]! });
    const outRank = p.rowTop.length - 1;
    slotsOf(c, cur, outRank);
    // The port on the bottom border and the group's place in its parent are one waypoint (the next one).
    const px = ox + (p.outX.get(e.s) ?? p.w / 2);
    cur = c;
    curX = px;
    curTop = oy + p.rowTop[outRank]!;
  }
  // Across the group that holds both ends.
  const lca = sa[k - 1]!;
  const lp = placements.get(lca)!;
  const [lx, ly] = absOf(lca);
  const tc = k < ta.length ? ta[k]! : e.t;
  const rs = lp.rank.get(cur) ?? 1;
  const rt = lp.rank.get(tc) ?? 1;
  const isBack = lp.back.has(cur + SEP + tc) || rt <= rs;
  wps.push({ x: curX, top: curTop, bottom: ly + lp.rowBottom[rs]!, around: isBack ? lx + lp.right : undefined });
  if (!isBack) slotsOf(lca, cur, rt);
  // Into the target's groups, outermost first.
  let into = lca;
  for (let i = k; i < ta.length; i++) {
    const d = ta[i]!;
    const pp = placements.get(into)!;
    const py = absOf(into)[1];
    const p = placements.get(d)!;
    const [dx, dy] = absOf(d);
    const x = dx + (p.inX.get(e.s) ?? p.w / 2);
    const r = pp.rank.get(d) ?? 1;
    wps.push({ x, top: py + pp.rowTop[r]!, bottom: dy + p.rowBottom[0]! });
    const child = i + 1 < ta.length ? ta[i + 1]! : e.t;
    slotsOf(d, `in:${e.s}`, p.rank.get(child) ?? 1);
    into = d;
  }
  const tp = placements.get(into)!;
  const [, ty] = absOf(into);
  const trank = tp.rank.get(e.t) ?? 1;
  wps.push({ x: centre(e.t), top: ty + tp.rowTop[trank]!, bottom: absOf(e.t)[1] });
  return { id: e.id, points: polyline(wps, (order.get(e.s) ?? 0) % 5), back: isBack };
}

/** Orthogonal: down through each waypoint, across in the gap before the next (offset a little by source, so that
 *  edges of different sources crossing one gap stay apart); up and around the side when the next is above. */
function polyline(wps: Waypoint[], lane: number): number[] {
  const pts: number[] = [];
  const put = (x: number, y: number) => {
    const n = pts.length;
    if (n >= 2 && Math.abs(pts[n - 2]! - x) < 0.01 && Math.abs(pts[n - 1]! - y) < 0.01) return;
    if (n >= 4) {
      const [ax, ay, bx, by] = [pts[n - 4]!, pts[n - 3]!, pts[n - 2]!, pts[n - 1]!];
      if ((Math.abs(ax - bx) < 0.01 && Math.abs(bx - x) < 0.01) || (Math.abs(ay - by) < 0.01 && Math.abs(by - y) < 0.01)) {
        pts[n - 2] = x;
        pts[n - 1] = y;
        return;
      }
    }
    pts.push(x, y);
  };
  const first = wps[0]!;
  put(first.x, first.top);
  for (let i = 0; i < wps.length; i++) {
    const w = wps[i]!;
    put(w.x, w.bottom);
    const n = wps[i + 1];
    if (!n) break;
    if (n.top >= w.bottom - 0.5) {
      if (Math.abs(n.x - w.x) > 0.5) {
        const gap = n.top - w.bottom;
        const y = w.bottom + gap / 2 + Math.max(-gap / 4, Math.min(gap / 4, (lane - 2) * 3));
        put(w.x, y);
        put(n.x, y);
      }
      put(n.x, n.top);
    } else {
      const side = w.around ?? Math.max(w.x, n.x) + 40;
      put(w.x, w.bottom + 9);
      put(side, w.bottom + 9);
      put(side, n.top - 9);
      put(n.x, n.top - 9);
      put(n.x, n.top);
    }
  }
  return pts;
}
