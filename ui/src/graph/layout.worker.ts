// The layout worker: the page posts what is visible, the worker answers with where it goes. Its engine keeps each
// group's layout between calls, so a live edit or a group opened lays out only what changed.
import { LayoutEngine, type LayoutInput, type LayoutOutput } from "./engine";

export type LayoutRequest = { seq: number; input: LayoutInput };
export type LayoutReply = { seq: number; output: LayoutOutput } | { seq: number; error: string };

const engine = new LayoutEngine();

self.onmessage = (e: MessageEvent<LayoutRequest>) => {
  const { seq, input } = e.data;
  let reply: LayoutReply;
  try {
    reply = { seq, output: engine.layout(input) };
  } catch (err) {
    reply = { seq, error: err instanceof Error ? `${err.message}\n${err.stack ?? ""}` : String(err) };
  }
  (self as unknown as Worker).postMessage(reply);
};
