// The page is built into the Python package (app/morphserve/api/ui_static), served by the server at /ui/.
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const server = process.env.MORPHSERVE_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  base: "/ui/",
  plugins: [react()],
  build: {
    outDir: "../app/morphserve/api/ui_static",
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2022",
  },
  // The layout runs in a module worker (src/graph/layout.worker.ts), bundled as its own file.
  worker: { format: "es" },
  // `npm run dev`: the page with hot reload, talking to a running server.
  server: { proxy: { "/v1": server, "/metrics": server } },
});
