// The drawing: SVG, one <g data-node-id> per node, pan and zoom with d3-zoom (one transform on one element, so
// panning a 2,000-node graph touches a single attribute), labels dropped when zoomed far out, arrow keys move
// the selection to the nearest node in that direction. Nodes show their local names (`q_lin`), groups their
// place in the module tree; a collapsed group shows its size, its shapes in and out, and what changed inside.
// Above CULL_ABOVE elements only what is in view (and a margin) is in the DOM. A new layout of the same graph (a
// live edit, a group opened or closed) keeps the view where it was: the element the user was looking at (the
// group toggled, the selection, or the one nearest the centre) stays at the same place on the screen.
import { select } from "d3-selection";
import "d3-transition";
import { type ZoomBehavior, zoom, zoomIdentity, type ZoomTransform } from "d3-zoom";
import {
  memo, type KeyboardEvent, useCallback, useEffect, useImperativeHandle, useLayoutEffect, useMemo, useRef, useState,
} from "react";
import { category, CATEGORY_LABEL, type Category, compact, fmtShape, summary } from "../format";
import type { Box, Placed } from "../graph/layout";
import { GROUP_PAD_TOP } from "../graph/layout";
import { type Display, type DisplayNode, type Folded, groupElementId, type GroupBox, type Mark } from "../graph/model";

export interface Shown {
  display: Display;
  folded: Folded;
  placed: Placed;
  seq: number;
  /** The view is fitted when a layout arrives with a key it has not fitted yet (a new model, a fold of all...). */
  fitKey: string;
  /** What stays put on the screen when this layout replaces the last one (a group's element id), if anything. */
  anchor: string | null;
}

export interface GraphHandle {
  fit(overview?: boolean): void;
  zoomBy(factor: number): void;
  reveal(id: string): void;
}

interface Props {
  shown: Shown | null;
  preview: boolean;
  selected: string | null;
  flash: ReadonlySet<string>;
  onSelect(id: string | null): void;
  onToggleGroup(prefix: string): void;
  handle?: React.Ref<GraphHandle>;
}

const MARK_TEXT: Record<Mark, string> = { added: "+ added", removed: "− removed", changed: "~ changed" };
const CULL_ABOVE = 1500;
/** The zoom below which labels are hard to read: the first view of a big graph starts here, not smaller. */
const LEGIBLE = 0.72;

function roundedPath(pts: { x: number; y: number }[]): string {
  if (pts.length < 2) return "";
  let d = `M${pts[0]!.x},${pts[0]!.y}`;
  for (let i = 1; i < pts.length - 1; i++) {
    const [p, c, n] = [pts[i - 1]!, pts[i]!, pts[i + 1]!];
    const d1 = Math.hypot(c.x - p.x, c.y - p.y);
    const d2 = Math.hypot(n.x - c.x, n.y - c.y);
    const r = Math.min(7, d1 / 2, d2 / 2);
    if (r < 0.5) {
      d += ` L${c.x},${c.y}`;
      continue;
    }
    const a = { x: c.x - ((c.x - p.x) / d1) * r, y: c.y - ((c.y - p.y) / d1) * r };
    const b = { x: c.x + ((n.x - c.x) / d2) * r, y: c.y + ((n.y - c.y) / d2) * r };
    d += ` L${a.x},${a.y} Q${c.x},${c.y} ${b.x},${b.y}`;
  }
  const last = pts[pts.length - 1]!;
  return `${d} L${last.x},${last.y}`;
}

const MINI_W = 190;
const MINI_H = 150;
let colourCache: Record<string, string> | null = null;
/** The kind colours of the stylesheet, for the minimap's canvas. */
function kindColours(): Record<string, string> {
  if (colourCache) return colourCache;
  const css = getComputedStyle(document.documentElement);
  const names = ["input", "output", "dense", "norm", "activation", "pool", "reshape", "regular", "container", "function"];
  colourCache = Object.fromEntries(names.map((n) => [n, css.getPropertyValue(`--c-${n}`).trim() || "#888"]));
  for (const m of ["added", "removed", "changed"]) colourCache[`m-${m}`] = css.getPropertyValue(`--m-${m}`).trim() || "#fff";
  return colourCache;
}

/** The end of a long name gives way (the full name is in the title and the side panel); never the middle. */
const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const shapes = (list: number[][]) =>
  list.length === 0 ? "—" : list.length <= 2 ? list.map(fmtShape).join(" ") : `${fmtShape(list[0]!)} +${list.length - 1}`;

/** The box of a group, expanded or collapsed, or of a node. */
function boxOf(p: Placed, id: string): Box | undefined {
  return p.nodes.get(id) ?? (id.startsWith("group:") ? p.containers.get(id.slice(6)) : undefined);
}

interface NodeProps {
  n: DisplayNode;
  local: string;
  path: string;
  box: Box;
  selected: boolean;
  flash: boolean;
  onSelect(id: string): void;
}

const NodeBox = memo(function NodeBox({ n, local, path, box, selected, flash, onSelect }: NodeProps) {
  const node = n.node;
  const cat = category(node);
  const io = node.kind === "input" || node.kind === "output";
  const shape = `${fmtShape(node.shape)} ${node.datatype}`;
  const where = path && path !== local ? ` (${path})` : "";
  const label = `${local}${where}, id ${node.id}: ${summary(node)}, output ${shape}${node.params ? `, ${node.params} parameters` : ""}${n.mark ? `, ${n.mark}` : ""}`;
  const params = node.params > 0 ? compact(node.params) : "";
  const cls = ["node", `cat-${cat}`, io ? "io" : "", n.mark ? `mark-${n.mark}` : "", selected ? "selected" : "", flash ? "flash" : ""];
  return (
    <g
      className={cls.filter(Boolean).join(" ")}
      data-node-id={node.id}
      data-kind={node.kind}
      data-diff={n.mark}
      style={{ transform: `translate(${box.x}px, ${box.y}px)` }}
      tabIndex={selected ? 0 : -1}
      role="button"
      aria-label={label}
      aria-pressed={selected}
      onClick={(e) => {
        e.stopPropagation();
        onSelect(node.id);
      }}
    >
      <title>{label}</title>
      {selected && <rect className="ring" x={-5} y={-5} width={box.w + 10} height={box.h + 10} rx={io ? box.h / 2 + 5 : 13} />}
      <rect className="body" width={box.w} height={box.h} rx={io ? box.h / 2 : 9} />
      {io ? (
        <>
          <text className="t-id" x={box.w / 2} y={19} textAnchor="middle">{clip(node.id, 21)}</text>
          <text className="t-shape" x={box.w / 2} y={34} textAnchor="middle">{shape}</text>
        </>
      ) : (
        <>
          <rect className="stripe" x={0} y={0} width={5} height={box.h} rx={2} />
          <text className="t-id" x={14} y={19}>{clip(local, Math.floor((box.w - 24 - params.length * 7) / 7.6))}</text>
          {params && <text className="t-params" x={box.w - 10} y={19} textAnchor="end">{params}</text>}
          <text className="t-type" x={14} y={36}>{clip(summary(node), 30)}</text>
          <text className="t-shape" x={14} y={51}>{shape}</text>
        </>
      )}
      {n.mark && (
        <g className="badge" transform={`translate(${box.w - 78}, ${-9})`}>
          <rect width={74} height={17} rx={8.5} />
          <text x={37} y={12.5} textAnchor="middle">{n.mark === "changed" && n.changes?.length ? `~ ${n.changes[0]}` : MARK_TEXT[n.mark]}</text>
        </g>
      )}
    </g>
  );
});

/** A collapsed group: click or Enter opens it. */
const GroupBoxView = memo(function GroupBoxView({ b, label, path, box, selected, onToggle }: {
  b: GroupBox; label: string; path: string; box: Box; selected: boolean; onToggle(id: string): void;
}) {
  const changed = b.marks > 0 || b.recent > 0;
  const badge = b.marks > 0 ? `${b.marks} changed` : "changed";
  return (
    <g
      className={`node group-box${selected ? " selected" : ""}${changed ? " has-marks" : ""}`}
      data-group-id={b.id}
      data-collapsed="true"
      data-changed={changed ? "true" : undefined}
      style={{ transform: `translate(${box.x}px, ${box.y}px)` }}
      tabIndex={selected ? 0 : -1}
      role="button"
      aria-label={`group ${path}, ${b.members.length} nodes, ${b.params} parameters, in ${shapes(b.ins)}, out ${shapes(b.outs)}${changed ? `, ${badge}` : ""}, collapsed; click or Enter expands`}
      onClick={(e) => {
        e.stopPropagation();
        onToggle(b.id);
      }}
    >
      <title>{path}</title>
      <rect className="body shadow" x={5} y={5} width={box.w} height={box.h} rx={9} />
      <rect className="body" width={box.w} height={box.h} rx={9} />
      <text className="t-id" x={14} y={21}>▸ {clip(label, 24)}</text>
      <text className="t-type" x={14} y={40}>{b.members.length} nodes{b.params ? ` · ${compact(b.params)} params` : ""}</text>
      <text className="t-shape" x={14} y={58}>in {clip(shapes(b.ins), 25)}</text>
      <text className="t-shape" x={14} y={73}>out {clip(shapes(b.outs), 24)}</text>
      {changed && (
        <g className="badge" transform={`translate(${box.w - 78}, ${-9})`}>
          <rect width={74} height={17} rx={8.5} />
          <text x={37} y={12.5} textAnchor="middle">{badge}</text>
        </g>
      )}
    </g>
  );
});

export function GraphView({ shown, preview, selected, flash, onSelect, onToggleGroup, handle }: Props) {
  const svgRef = useRef<SVGSVGElement>(null);
  const viewRef = useRef<SVGGElement>(null);
  const zoomRef = useRef<ZoomBehavior<SVGSVGElement, unknown> | null>(null);
  const [far, setFar] = useState(0);
  const fitted = useRef<string | null>(null);
  const transformRef = useRef<ZoomTransform>(zoomIdentity);
  const miniRef = useRef<HTMLCanvasElement>(null);
  const drawRef = useRef<() => void>(() => undefined);
  const [viewport, setViewport] = useState<{ x0: number; y0: number; x1: number; y1: number } | null>(null);
  const viewportTimer = useRef(0);

  const placed = shown?.placed ?? null;
  const count = placed ? placed.nodes.size : 0;
  const cull = count > CULL_ABOVE;
  const cullRef = useRef(cull);
  cullRef.current = cull;

  /** The part of the graph in view (graph coordinates), for culling. */
  const measureViewport = useCallback(() => {
    const svg = svgRef.current;
    if (!svg) return;
    const t = transformRef.current;
    const { width, height } = svg.getBoundingClientRect();
    const [x0, y0] = t.invert([0, 0]);
    const [x1, y1] = t.invert([width, height]);
    const mx = (x1 - x0) * 0.5;
    const my = (y1 - y0) * 0.5;
    setViewport({ x0: x0 - mx, y0: y0 - my, x1: x1 + mx, y1: y1 + my });
  }, []);

  useEffect(() => {
    const svg = svgRef.current!;
    const z = zoom<SVGSVGElement, unknown>()
      .scaleExtent([0.002, 4])
      .filter((e: Event) => !(e.type === "dblclick") && (!(e as MouseEvent).button || e.type === "wheel"))
      .on("zoom", (e: { transform: ZoomTransform }) => {
        viewRef.current?.setAttribute("transform", e.transform.toString());
        transformRef.current = e.transform;
        drawRef.current();
        setFar(e.transform.k < 0.18 ? 2 : e.transform.k < 0.45 ? 1 : 0);
        if (cullRef.current && !viewportTimer.current) {
          viewportTimer.current = window.setTimeout(() => {
            viewportTimer.current = 0;
            measureViewport();
          }, 60);
        }
      });
    select(svg).call(z);
    zoomRef.current = z;
    return () => {
      select(svg).on(".zoom", null);
      window.clearTimeout(viewportTimer.current);
    };
  }, [measureViewport]);

  /** Everything in view when it is legible so; otherwise a legible zoom from the inputs (top). */
  const fit = useCallback((overview = false) => {
    const svg = svgRef.current;
    if (!svg || !placed || !zoomRef.current) return;
    const { width, height } = svg.getBoundingClientRect();
    if (width === 0 || height === 0) return;
    const all = Math.min(1.1, (width - 32) / Math.max(1, placed.width), (height - 32) / Math.max(1, placed.height));
    let t: ZoomTransform;
    if (overview || all >= LEGIBLE) {
      t = zoomIdentity.translate((width - placed.width * all) / 2, Math.max(16, (height - placed.height * all) / 2)).scale(all);
    } else {
      const k = Math.min(1, Math.max(LEGIBLE, (width - 32) / placed.width));
      // Start at the first node (the input): centred across the flow when the graph is wider than the view.
      let first: Box | undefined;
      for (const b of placed.nodes.values()) if (!first || b.y < first.y) first = b;
      const across = placed.width * k <= width - 32;
      const cx = first ? first.x + first.w / 2 : placed.width / 2;
      t = zoomIdentity.translate(across ? (width - placed.width * k) / 2 : width / 2 - cx * k, 16).scale(k);
    }
    select(svg).call(zoomRef.current.transform, t);
  }, [placed]);

  const reveal = useCallback(
    (id: string) => {
      const svg = svgRef.current;
      const box = placed ? boxOf(placed, id) : undefined;
      if (!svg || !box || !zoomRef.current) return;
      const t = transformRef.current;
      const { width, height } = svg.getBoundingClientRect();
      const [x0, y0] = t.apply([box.x, box.y]);
      const [x1, y1] = t.apply([box.x + box.w, box.y + box.h]);
      if (x0 >= 8 && y0 >= 8 && x1 <= width - 8 && y1 <= height - 8) return;
      const k = Math.max(t.k, 0.6);
      const next = zoomIdentity.translate(width / 2 - (box.x + box.w / 2) * k, height / 2 - (box.y + box.h / 2) * k).scale(k);
      if (cullRef.current) select(svg).call(zoomRef.current.transform, next);
      else select(svg).transition().duration(250).call(zoomRef.current.transform, next);
    },
    [placed],
  );

  // The minimap: every node as a dot of its kind's colour, and the viewport; click or drag it to move there.
  const mini = useMemo(() => {
    if (!shown) return null;
    const p = shown.placed;
    const scale = Math.min(MINI_W / Math.max(1, p.width), MINI_H / Math.max(1, p.height));
    return { scale, w: Math.max(24, p.width * scale), h: Math.max(24, p.height * scale) };
  }, [shown]);
  drawRef.current = () => {
    const canvas = miniRef.current;
    const svg = svgRef.current;
    if (!canvas || !svg || !shown || !mini) return;
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(mini.w * dpr)) {
      canvas.width = Math.round(mini.w * dpr);
      canvas.height = Math.round(mini.h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, mini.w, mini.h);
    const colours = kindColours();
    for (const c of shown.folded.containers) {
      const b = shown.placed.containers.get(c.id);
      if (!b) continue;
      ctx.strokeStyle = "#2c3948";
      ctx.strokeRect(b.x * mini.scale, b.y * mini.scale, b.w * mini.scale, b.h * mini.scale);
    }
    for (const n of shown.folded.nodes) {
      const b = shown.placed.nodes.get(n.id);
      if (!b) continue;
      ctx.fillStyle = n.mark ? colours[`m-${n.mark}`]! : colours[category(n.node)] ?? "#888";
      ctx.fillRect(b.x * mini.scale, b.y * mini.scale, Math.max(1.5, b.w * mini.scale), Math.max(1.5, b.h * mini.scale));
    }
    for (const g of shown.folded.groupBoxes) {
      const b = shown.placed.nodes.get(groupElementId(g.id));
      if (!b) continue;
      ctx.fillStyle = g.marks || g.recent ? colours["m-changed"]! : "#5b6b7d";
      ctx.fillRect(b.x * mini.scale, b.y * mini.scale, Math.max(1.5, b.w * mini.scale), Math.max(1.5, b.h * mini.scale));
    }
    const t = transformRef.current;
    const { width, height } = svg.getBoundingClientRect();
    const [x0, y0] = t.invert([0, 0]);
    const [x1, y1] = t.invert([width, height]);
    // Only when part of the graph is out of view: otherwise it would just cover some of it.
    const all = x0 <= 0 && y0 <= 0 && x1 >= shown.placed.width && y1 >= shown.placed.height;
    canvas.style.visibility = all ? "hidden" : "visible";
    ctx.strokeStyle = "#e6edf3";
    ctx.lineWidth = 1.2;
    ctx.strokeRect(x0 * mini.scale, y0 * mini.scale, (x1 - x0) * mini.scale, (y1 - y0) * mini.scale);
  };
  useEffect(() => drawRef.current(), [shown, mini]);
  const moveTo = (e: React.PointerEvent<HTMLCanvasElement>) => {
    const svg = svgRef.current;
    if (!svg || !mini || !zoomRef.current || (e.type === "pointermove" && e.buttons !== 1)) return;
    const r = e.currentTarget.getBoundingClientRect();
    const gx = (e.clientX - r.left) / mini.scale;
    const gy = (e.clientY - r.top) / mini.scale;
    const k = transformRef.current.k;
    const { width, height } = svg.getBoundingClientRect();
    select(svg).call(zoomRef.current.transform, zoomIdentity.translate(width / 2 - gx * k, height / 2 - gy * k).scale(k));
  };

  useImperativeHandle(handle, () => ({
    fit,
    reveal,
    zoomBy: (f: number) => {
      if (svgRef.current && zoomRef.current) select(svgRef.current).transition().duration(200).call(zoomRef.current.scaleBy, f);
    },
  }), [fit, reveal]);

  // A new layout: fitted when it is a new view; otherwise the view stays on what the user was looking at.
  const selectedRef = useRef(selected);
  selectedRef.current = selected;
  const previous = useRef<Shown | null>(null);
  useLayoutEffect(() => {
    if (!shown) return;
    const before = previous.current;
    previous.current = shown;
    const svg = svgRef.current;
    if (fitted.current !== shown.fitKey) {
      fitted.current = shown.fitKey;
      fit();
      // A deep link to a node (?node=) opens with that node in view.
      if (selectedRef.current && shown.placed.nodes.has(selectedRef.current)) reveal(selectedRef.current);
    } else if (before && before !== shown && svg && zoomRef.current) {
      const t = transformRef.current;
      const { width, height } = svg.getBoundingClientRect();
      let anchor: string | null = null;
      const usable = (id: string | null) => id !== null && !!boxOf(before.placed, id) && !!boxOf(shown.placed, id);
      if (usable(shown.anchor)) anchor = shown.anchor;
      else if (usable(selectedRef.current)) anchor = selectedRef.current;
      else {
        const [cx, cy] = t.invert([width / 2, height / 2]);
        let best = Infinity;
        for (const [id, b] of before.placed.nodes) {
          if (!shown.placed.nodes.has(id)) continue;
          const d = Math.hypot(b.x + b.w / 2 - cx, b.y + b.h / 2 - cy);
          if (d < best) {
            best = d;
            anchor = id;
          }
        }
      }
      if (anchor !== null) {
        const a = boxOf(before.placed, anchor)!;
        const b = boxOf(shown.placed, anchor)!;
        const dx = b.x - a.x;
        const dy = b.y - a.y;
        if (dx !== 0 || dy !== 0) {
          select(svg).call(zoomRef.current.transform, zoomIdentity.translate(t.x - dx * t.k, t.y - dy * t.k).scale(t.k));
        }
      }
    }
    if (cullRef.current) measureViewport();
    // When this drawing was in the DOM, in ms since the page's navigation began (performance.now()).
    svg?.setAttribute("data-drawn-at", performance.now().toFixed(0));
  }, [shown, fit, reveal, measureViewport]);

  const inView = useCallback(
    // (before the first view is known, nothing: the layout effect fits the view and measures it before the paint)
    (b: Box) => !cull || (!!viewport && b.x + b.w >= viewport.x0 && b.x <= viewport.x1 && b.y + b.h >= viewport.y0 && b.y <= viewport.y1),
    [cull, viewport],
  );

  const elements = useMemo(() => {
    if (!shown) return [];
    const out: { id: string; box: Box }[] = [];
    for (const [id, box] of shown.placed.nodes) out.push({ id, box });
    return out;
  }, [shown]);

  const edgeBounds = useMemo(() => {
    if (!shown || !cull) return null;
    return shown.placed.edges.map(({ points }) => {
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const p of points) {
        x0 = Math.min(x0, p.x);
        y0 = Math.min(y0, p.y);
        x1 = Math.max(x1, p.x);
        y1 = Math.max(y1, p.y);
      }
      return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
    });
  }, [shown, cull]);

  const onKeyDown = (e: KeyboardEvent<SVGSVGElement>) => {
    if (!shown) return;
    const dirs: Record<string, [number, number]> = { ArrowDown: [0, 1], ArrowUp: [0, -1], ArrowLeft: [-1, 0], ArrowRight: [1, 0] };
    if (e.key in dirs) {
      e.preventDefault();
      const [dx, dy] = dirs[e.key]!;
      const from = selected ? shown.placed.nodes.get(selected) : undefined;
      let best: string | null = null;
      if (!from) {
        let top: Box | undefined;
        for (const { id, box } of elements) {
          if (!top || box.y < top.y || (box.y === top.y && box.x < top.x)) {
            top = box;
            best = id;
          }
        }
      } else {
        const cx = from.x + from.w / 2;
        const cy = from.y + from.h / 2;
        let bestScore = Infinity;
        for (const { id, box } of elements) {
          if (id === selected) continue;
          const vx = box.x + box.w / 2 - cx;
          const vy = box.y + box.h / 2 - cy;
          const along = vx * dx + vy * dy;
          if (along <= 1) continue;
          const across = Math.abs(vx * dy - vy * dx);
          const score = along + 2.5 * across;
          if (score < bestScore) {
            bestScore = score;
            best = id;
          }
        }
      }
      if (best) {
        onSelect(best);
        reveal(best);
      }
    } else if (e.key === "Enter" || e.key === " ") {
      if (selected?.startsWith("group:")) {
        e.preventDefault();
        onToggleGroup(selected.slice(6));
      }
    } else if (e.key === "Escape") {
      onSelect(null);
    } else if (e.key === "+" || e.key === "=") {
      if (svgRef.current && zoomRef.current) select(svgRef.current).call(zoomRef.current.scaleBy, 1.25);
    } else if (e.key === "-") {
      if (svgRef.current && zoomRef.current) select(svgRef.current).call(zoomRef.current.scaleBy, 0.8);
    } else if (e.key === "0") {
      fit(true);
    }
  };

  // Keep keyboard focus on the selected element (roving tabindex).
  useEffect(() => {
    if (!selected || !svgRef.current?.contains(document.activeElement)) return;
    const sel = selected.startsWith("group:") ? `[data-group-id="${CSS.escape(selected.slice(6))}"]` : `[data-node-id="${CSS.escape(selected)}"]`;
    svgRef.current.querySelector<SVGGElement>(sel)?.focus({ preventScroll: true });
  }, [selected, shown, viewport]); // (a culled element is in the DOM once the view has moved to it)

  const display = shown?.display;
  const grouping = display?.grouping;
  const allById = useMemo(() => new Map(shown?.display.nodes.map((n) => [n.id, n]) ?? []), [shown]);
  const paramsOf = (members: string[]) => members.reduce((a, m) => a + (allById.get(m)?.mark === "removed" ? 0 : allById.get(m)?.node.params ?? 0), 0);
  const categories = useMemo(() => {
    const seen = new Set<Category>();
    for (const n of shown?.folded.nodes ?? []) seen.add(category(n.node));
    return [...seen];
  }, [shown]);
  const small = count < 400;
  const breadcrumb = (groupId: string) => {
    const labels: string[] = [];
    for (let g: string | null = groupId; g !== null; g = grouping?.groups.get(g)?.parent ?? null) {
      labels.unshift(grouping?.groups.get(g)?.label ?? g);
    }
    return labels.join(" › ");
  };

  return (
    <div className="graph-wrap">
      <svg
        ref={svgRef}
        className={`graph${far ? ` far far-${far}` : ""}${small ? " animate" : ""}`}
        data-model={display?.model}
        data-version={display?.version}
        data-preview={preview ? "true" : undefined}
        data-diff-from={display?.diff?.from_version}
        data-layout-ms={shown ? shown.placed.ms.toFixed(1) : undefined}
        data-layout-worker-ms={shown ? shown.placed.workerMs.toFixed(1) : undefined}
        data-layout-relaid={shown?.placed.relaid}
        data-layout-seq={shown?.seq}
        data-nodes={shown?.folded.nodes.length}
        data-elements={count}
        data-culled={cull ? "true" : undefined}
        data-hierarchy={grouping?.source}
        role="application"
        aria-roledescription="model graph"
        aria-label={display ? `${display.model} version ${display.version}: arrow keys move between nodes, Enter opens a group, Escape clears` : "model graph"}
        tabIndex={selected ? -1 : 0}
        onKeyDown={onKeyDown}
        onClick={() => onSelect(null)}
      >
        <defs>
          {["plain", "added", "removed"].map((k) => (
            <marker key={k} id={`arrow-${k}`} viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
              <path d="M0,0 L10,5 L0,10 z" className={`arrow arrow-${k}`} />
            </marker>
          ))}
        </defs>
        <g ref={viewRef}>
          <g className="containers">
            {shown?.folded.containers.map((c) => {
              const box = shown.placed.containers.get(c.id);
              const g = grouping?.groups.get(c.id);
              if (!box || !g || !inView(box)) return null;
              const params = paramsOf(g.members);
              const crumb = breadcrumb(c.id);
              return (
                <g key={c.id} className={`container depth-${Math.min(g.depth, 3)}`} data-group-id={c.id} data-collapsed="false" transform={`translate(${box.x},${box.y})`}>
                  <rect width={box.w} height={box.h} rx={12} />
                  <g
                    className="container-head"
                    role="button"
                    tabIndex={-1}
                    aria-label={`collapse group ${crumb}`}
                    onClick={(e) => {
                      e.stopPropagation();
                      onToggleGroup(c.id);
                    }}
                  >
                    <title>{crumb}</title>
                    <rect width={box.w} height={GROUP_PAD_TOP - 4} rx={12} className="head-hit" />
                    <text x={12} y={19} className="g-title">▾ {g.label}</text>
                    <text x={box.w - 12} y={19} textAnchor="end" className="g-meta">{g.members.length} nodes{params ? ` · ${compact(params)}` : ""}</text>
                  </g>
                </g>
              );
            })}
          </g>
          <g className="edges" key={shown?.seq}>
            {shown?.placed.edges.map(({ edge, points, back }, i) => (
              edgeBounds && !inView(edgeBounds[i]!) ? null : (
                <path
                  key={edge.id}
                  d={roundedPath(points)}
                  className={`edge${edge.mark ? ` edge-${edge.mark}` : ""}${back ? " edge-back" : ""}`}
                  data-edge={edge.id}
                  markerEnd={`url(#arrow-${edge.mark ?? "plain"})`}
                />
              )
            ))}
          </g>
          <g className="nodes">
            {shown?.folded.groupBoxes.map((b) => {
              const id = groupElementId(b.id);
              const box = shown.placed.nodes.get(id);
              if (!box || !inView(box)) return null;
              return (
                <GroupBoxView key={id} b={b} label={grouping?.groups.get(b.id)?.label ?? b.id} path={breadcrumb(b.id)} box={box}
                  selected={selected === id} onToggle={onToggleGroup} />
              );
            })}
            {shown?.folded.nodes.map((n) => {
              const box = shown.placed.nodes.get(n.id);
              return box && inView(box) ? (
                <NodeBox key={n.id} n={n} local={grouping?.local.get(n.id) ?? n.id} path={grouping?.path.get(n.id) ?? ""} box={box}
                  selected={selected === n.id} flash={flash.has(n.id)} onSelect={onSelect} />
              ) : null;
            })}
          </g>
        </g>
      </svg>
      {mini && (
        <canvas ref={miniRef} className="minimap" style={{ width: mini.w, height: mini.h }} aria-hidden="true"
          onPointerDown={moveTo} onPointerMove={moveTo} />
      )}
      <footer className="graph-foot">
        <ul className="legend" aria-label="colours by kind">
          {categories.map((c) => (
            <li key={c}>
              <span className={`chip cat-${c}`} aria-hidden="true" />
              {CATEGORY_LABEL[c]}
            </li>
          ))}
        </ul>
        <span className="muted small help">drag to pan · wheel to zoom · arrow keys move between nodes · 0 fits</span>
      </footer>
    </div>
  );
}
