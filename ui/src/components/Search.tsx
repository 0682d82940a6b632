// Search by name or module path (`q_lin`, `layer.3.attention`, `conv2`): the matches as a list box under the field,
// arrow keys and Enter to pick one; the page then opens the groups around it and brings it into view.
import { useId, useMemo, useState } from "react";
import type { Display } from "../graph/model";

interface Hit {
  id: string; // a node id, or `group:` + a group's id
  name: string;
  where: string;
  score: number;
}

const LIMIT = 12;

export function search(d: Display, query: string): Hit[] {
  const q = query.trim().toLowerCase();
  if (!q) return [];
  const { grouping } = d;
  const hits: Hit[] = [];
  const consider = (id: string, name: string, path: string, where: string) => {
    const n = name.toLowerCase();
    const p = path.toLowerCase();
    const score = n === q ? 0 : n.startsWith(q) ? 1 : n.includes(q) ? 2 : p.includes(q) ? 3 : id.toLowerCase().includes(q) ? 4 : -1;
    if (score >= 0) hits.push({ id, name, where, score });
  };
  for (const n of d.nodes) {
    if (n.mark === "removed") continue;
    const path = grouping.path.get(n.id) ?? n.id;
    const name = grouping.local.get(n.id) ?? n.id;
    consider(n.id, name, path, path === name ? n.id : path);
  }
  for (const g of grouping.groups.values()) {
    const labels: string[] = [];
    for (let x: string | null = g.id; x !== null; x = grouping.groups.get(x)?.parent ?? null) {
      labels.unshift(grouping.groups.get(x)!.label);
    }
    const path = labels.join(".");
    consider(`group:${g.id}`, g.label, path, `group ${path}`);
  }
  hits.sort((a, b) => a.score - b.score || a.where.length - b.where.length);
  return hits.slice(0, LIMIT);
}

export function Search({ display, onPick }: { display: Display; onPick(id: string): void }) {
  const [query, setQuery] = useState("");
  const [open, setOpen] = useState(false);
  const [active, setActive] = useState(0);
  const list = useId();
  const hits = useMemo(() => search(display, query), [display, query]);
  const pick = (h: Hit | undefined) => {
    if (!h) return;
    onPick(h.id);
    setOpen(false);
  };
  const expanded = open && hits.length > 0;
  return (
    <div className="search">
      <label htmlFor={`${list}-q`} className="sr-only">search nodes by name or module path</label>
      <input
        id={`${list}-q`}
        type="search"
        role="combobox"
        aria-expanded={expanded}
        aria-controls={list}
        aria-autocomplete="list"
        aria-activedescendant={expanded ? `${list}-${active}` : undefined}
        autoComplete="off"
        spellCheck={false}
        placeholder="search"
        value={query}
        onChange={(e) => {
          setQuery(e.target.value);
          setActive(0);
          setOpen(true);
        }}
        onFocus={() => setOpen(true)}
        onBlur={() => window.setTimeout(() => setOpen(false), 150)}
        onKeyDown={(e) => {
          if (e.key === "ArrowDown") {
            e.preventDefault();
            setActive((a) => Math.min(hits.length - 1, a + 1));
          } else if (e.key === "ArrowUp") {
            e.preventDefault();
            setActive((a) => Math.max(0, a - 1));
          } else if (e.key === "Enter") {
            e.preventDefault();
            pick(hits[active]);
          } else if (e.key === "Escape") {
            setOpen(false);
          }
        }}
      />
      <ul id={list} role="listbox" className="search-hits" aria-label="matches" hidden={!expanded}>
        {hits.map((h, i) => (
          <li key={h.id} id={`${list}-${i}`} role="option" aria-selected={i === active} data-hit={h.id}
            onMouseDown={(e) => e.preventDefault()} onClick={() => pick(h)}>
            <strong>{h.name}</strong> <span className="muted small">{h.where}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}
