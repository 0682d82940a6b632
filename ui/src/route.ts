// Deep links: /ui/ (the models), /ui/models/{name}?version=N&diff=M&node=ID. Back and forward work.
import { useCallback, useEffect, useRef, useState } from "react";

export interface Route {
  model: string | null;
  version: number | null; // null: follow the live version
  diff: number | null; // diff from this version to the shown one
  node: string | null;
}

const MODEL_PATH = /^\/ui\/models\/([^/]+)\/?$/;

function positive(v: string | null): number | null {
  if (v === null || !/^\d+$/.test(v)) return null;
  const n = Number(v);
  return n >= 1 ? n : null;
}

export function parseRoute(loc: Location = window.location): Route {
  const m = MODEL_PATH.exec(loc.pathname);
  const q = new URLSearchParams(loc.search);
  return {
    model: m ? decodeURIComponent(m[1]!) : null,
    version: positive(q.get("version")),
    diff: positive(q.get("diff")),
    node: q.get("node"),
  };
}

export function href(r: Route): string {
  if (r.model === null) return "/ui/";
  const q = new URLSearchParams();
  if (r.version !== null) q.set("version", String(r.version));
  if (r.diff !== null) q.set("diff", String(r.diff));
  if (r.node !== null) q.set("node", r.node);
  const qs = q.toString();
  return `/ui/models/${encodeURIComponent(r.model)}${qs ? `?${qs}` : ""}`;
}

type Go = (next: Partial<Route>, opts?: { replace?: boolean; reset?: boolean }) => void;

export function useRoute(): [Route, Go] {
  const [route, setRoute] = useState(parseRoute);
  const ref = useRef(route);
  ref.current = route;
  useEffect(() => {
    const onPop = () => setRoute(parseRoute());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const go = useCallback<Go>((next, opts = {}) => {
    const prev = ref.current;
    const base: Route = opts.reset ? { model: prev.model, version: null, diff: null, node: null } : prev;
    const r = { ...base, ...next };
    const url = href(r);
    if (url !== window.location.pathname + window.location.search) {
      if (opts.replace) window.history.replaceState(null, "", url);
      else window.history.pushState(null, "", url);
    }
    ref.current = r;
    setRoute(r);
  }, []);
  return [route, go];
}
