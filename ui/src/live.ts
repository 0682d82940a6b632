// Server-sent events: the page follows `GET /v1/models/{m}/events` and `GET /v1/events`. EventSource reconnects
// by itself (the server asks for 1 s) and sends Last-Event-ID, so the server replays what was missed.
import { useEffect, useRef, useState } from "react";

export type LiveState = "connecting" | "live" | "reconnecting" | "closed";

export function useEventSource(url: string | null, handlers: Record<string, (data: unknown) => void>): LiveState {
  const [state, setState] = useState<LiveState>("connecting");
  const ref = useRef(handlers);
  ref.current = handlers;
  useEffect(() => {
    if (url === null) return;
    setState("connecting");
    const source = new EventSource(url);
    source.onopen = () => setState("live");
    source.onerror = () => setState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    const kinds = ["version", "reset", "model_created", "model_deleted", "promoted", "rollout", "job"];
    const listeners = kinds.map((kind) => {
      const listener = (e: MessageEvent<string>) => {
        let data: unknown = null;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        ref.current[kind]?.(data);
      };
      source.addEventListener(kind, listener);
      return [kind, listener] as const;
    });
    return () => {
      for (const [kind, listener] of listeners) source.removeEventListener(kind, listener);
      source.close();
    };
  }, [url]);
  return state;
}
